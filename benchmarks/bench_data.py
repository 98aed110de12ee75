"""Throughput of the train input pipeline, beside the rate the default model's train step consumes.

Prints a table of images/s at global batch 256 on the embedded default ``jaxscale_glyphs/16px_30k``
(built first if needed) with num_workers 0 and 2. Usage::

  python benchmarks/bench_data.py [--data-dir DIR] [--batches 40]

Goal: the pipeline is never the bottleneck (at least 3x the train step's images/s).
"""

from __future__ import annotations

import argparse
import time

DATASET = "jaxscale_glyphs/16px_30k"
BATCH = 256
IMAGE_SIZE = 16


def pipeline_rate(data_dir: str, num_workers: int, batches: int, warmup: int = 3) -> float:
  """Images/s of `train_iterator` (after `warmup` batches, which include worker start-up)."""
  from jaxscale.data import pipeline, sources, subsets
  src = sources.open_source(DATASET, "train", data_dir)
  labels = sources.load_labels(DATASET, "train", data_dir)
  indices = subsets.nested_subset(labels, len(labels), seed=0)
  it = pipeline.train_iterator(src, indices, global_batch_size=BATCH, image_size=IMAGE_SIZE, seed=0,
                               crop_padding=2, process_index=0, process_count=1,
                               num_workers=num_workers, prefetch=2)
  for _ in range(warmup):
    next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  rate = batches * BATCH / (time.perf_counter() - t0)
  it.close()
  return rate


# ----------------------------------------------------------------------------- train step
# Kept separate: the training engine (jaxscale.train) is developed on its own; "n/a" without it.

def train_step_rate(steps: int = 20) -> str:
  """Images/s of the default model's jitted train step (synthetic batches), or "n/a" without jaxscale.train."""
  try:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx
    from jaxscale import config as config_lib
    from jaxscale import models
    from jaxscale.train import sharding as sharding_lib
    from jaxscale.train import steps as steps_lib
  except ImportError:
    return "n/a"
  cfg = config_lib.base_config()
  mesh = sharding_lib.make_mesh(cfg.mesh)
  model = models.create(cfg.model.name, 52, IMAGE_SIZE, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  settings = steps_lib.optimizer_settings(cfg.pretrain.optim)
  state = steps_lib.create_state(params, settings, jax.random.key(0))
  state_sh = steps_lib.state_shardings(state, settings, mesh)
  state = jax.device_put(state, state_sh)
  step = steps_lib.make_train_step(graphdef, settings, state_sharding=state_sh, mesh=mesh)
  batch = sharding_lib.shard_batch({"image": np.zeros((BATCH, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32),
                                    "label": np.zeros((BATCH,), np.int32)}, mesh)
  lr = jnp.float32(1e-3)
  state, _ = step(state, batch, None, lr)  # compile
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, _ = step(state, batch, None, lr)
  jax.block_until_ready(state)
  return f"{steps * BATCH / (time.perf_counter() - t0):,.0f}"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data-dir", default="", help="tfds data dir (default: tfds default)")
  parser.add_argument("--batches", type=int, default=40, help="timed batches per setting")
  args = parser.parse_args()
  from jaxscale.data import builders
  t0 = time.perf_counter()
  built = builders.is_built(DATASET, args.data_dir)
  builders.ensure_built(DATASET, args.data_dir)
  if not built:
    print(f"built {DATASET} in {time.perf_counter() - t0:.1f}s")
  print(f"{DATASET}, global batch {BATCH}, {IMAGE_SIZE}x{IMAGE_SIZE}")
  print(f"{'what':<32} {'images/s':>12}")
  for workers in (0, 2):
    print(f"{f'train pipeline, num_workers={workers}':<32} {pipeline_rate(args.data_dir, workers, args.batches):>12,.0f}")
  try:
    step_rate = train_step_rate()
  except Exception as e:  # the train API changed: report it, keep the pipeline table
    step_rate = f"n/a ({type(e).__name__})"
  print(f"{'train step (' + _default_model() + ')':<32} {step_rate:>12}")


def _default_model() -> str:
  from jaxscale import config as config_lib
  return config_lib.base_config().model.name


if __name__ == "__main__":
  main()
