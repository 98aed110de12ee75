"""Train-step throughput: images/s and achieved FLOP/s per model rung, against the machine's peak.

The peak is measured in the same run as the FLOP/s of a large matmul (float32 on CPU; bfloat16 on a
GPU), so the ratio says how much of the practical peak a train step reaches. On a GPU the
``vit_paper`` ladder is also run in bfloat16 at 224 px and the ratio is reported as MFU.

  python benchmarks/bench_train.py [--ladders vit_tiny resnet_tiny] [--batch 128] [--steps 20]
                                   [--runs 1] [--cpu-devices 1]

``--runs R`` trains R runs as one group; ``--cpu-devices N`` splits a CPU into N devices and the
group's runs are spread over them as a study spreads them (``config.mesh.runs = 0``). Compare e.g.
``--runs 4 --cpu-devices 1`` with ``--runs 4 --cpu-devices 2`` (two processes: the device count is
fixed when JAX starts).

FLOPs per train step = 3 x forward FLOPs per image (``jaxscale.models.flops_per_image``) x batch.
Steps run as the study's engine runs them: K = 10 scanned steps per call, images gathered on the device.
"""

from __future__ import annotations

import argparse
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxscale import models
from jaxscale.train import sharding, steps as steps_lib

SETTINGS = ("adamw", 0.9, 1e-4, 1.0, True)


def matmul_peak(n: int, dtype, repeats: int = 5) -> float:
  """FLOP/s of an n x n @ n x n matmul (best of `repeats`)."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  f = jax.jit(lambda x, y: x @ y)
  f(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2.0 * n ** 3 / best


def bench_model(name: str, num_classes: int, image_size: int, batch: int, steps: int, dtype,
                runs: int = 1, k: int = 10) -> dict:
  """Images/s and FLOP/s of the engine's train program for `name`: `runs` vmapped runs, K steps a call.

  The images are uint8 on the device and gathered and augmented inside the step, as in a study."""
  mesh = sharding.make_mesh(types.SimpleNamespace(runs=0, data=-1, fsdp=1), num_runs=runs)
  graphdef, one = nnx.split(models.create(name, num_classes, image_size, rngs=nnx.Rngs(0), dtype=dtype), nnx.Param)
  params = jax.tree_util.tree_map(lambda x: np.stack([np.asarray(x)] * runs), one.to_pure_dict())
  param_sh = sharding.with_runs_axis(sharding.param_shardings(one, mesh).to_pure_dict())
  abstract = jax.eval_shape(lambda p: steps_lib.create_state(p, SETTINGS), params)
  sh = steps_lib.state_shardings(abstract, SETTINGS, param_sh, mesh)
  state = steps_lib.make_init(SETTINGS, sh)(jax.device_put(params, param_sh))
  repl = sharding.replicated(mesh)
  spec = steps_lib.StepSpec(graphdef=graphdef, settings=SETTINGS, batch_size=batch, on_device=True)
  chunk = steps_lib.make_train_chunk(spec, mesh, sh, None)
  rs = np.random.default_rng(0)
  n = 4 * batch
  data = {"images": jax.device_put(rs.integers(0, 256, (n, image_size, image_size, 3)).astype(np.uint8), repl),
          "labels": jax.device_put(rs.integers(0, num_classes, n).astype(np.int32), repl),
          "index": rs.integers(0, n, (k, runs, batch)).astype(np.int32)}
  consts = {"alpha": np.zeros(runs, np.float32), "key": np.zeros((runs, 2), np.uint32),
            "uniform": np.zeros(runs, np.bool_)}
  lr, valid = np.full((k, runs), 1e-4, np.float32), np.ones(k, bool)
  t = time.perf_counter()
  state, m = chunk(state, consts, None, data, lr, valid)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t
  calls = max(1, steps // k)
  t = time.perf_counter()
  for _ in range(calls):
    state, m = chunk(state, consts, None, data, lr, valid)
  jax.block_until_ready(m)
  dt = (time.perf_counter() - t) / (calls * k)
  flops = 3.0 * models.flops_per_image(name, num_classes, image_size) * batch * runs
  return {"model": name, "params": models.param_count(name, num_classes, image_size),
          "img_s": batch * runs / dt, "flop_s": flops / dt, "step_ms": dt * 1e3, "compile_s": compile_s}


def table(rows: list[dict], peak: float, ratio_name: str) -> None:
  print(f"{'model':<16} {'params':>10} {'step ms':>9} {'img/s':>10} {'GFLOP/s':>9} {ratio_name:>8} {'compile s':>9}")
  for r in rows:
    print(f"{r['model']:<16} {r['params']:>10,} {r['step_ms']:>9.2f} {r['img_s']:>10.0f} "
          f"{r['flop_s'] / 1e9:>9.2f} {r['flop_s'] / peak:>8.1%} {r['compile_s']:>9.2f}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--ladders", nargs="+", default=["vit_tiny", "resnet_tiny"])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--matmul", type=int, default=2048, help="side of the peak-FLOP/s matmul")
  parser.add_argument("--runs", type=int, default=1, help="runs trained as one group")
  parser.add_argument("--cpu-devices", type=int, default=1, help="devices a CPU is split into (0 = one per core)")
  parser.add_argument("--k", type=int, default=10, help="scanned steps per call")
  args = parser.parse_args()
  sharding.use_cpu_devices(args.cpu_devices)   # before JAX starts

  backend = jax.default_backend()
  print(f"jax {jax.__version__}, backend {backend}, {jax.device_count()} x {jax.devices()[0].device_kind}")
  peak32 = matmul_peak(args.matmul, jnp.float32)
  print(f"practical peak: {args.matmul}^3 float32 matmul = {peak32 / 1e9:.1f} GFLOP/s\n")
  rows = [bench_model(name, 52, 16, args.batch, args.steps, jnp.float32, runs=args.runs, k=args.k)
          for lad in args.ladders for name in models.ladder(lad)]
  print(f"train step, float32, 16 px, 52 classes, batch {args.batch} per run, {args.runs} run(s) on "
        f"{jax.device_count()} device(s), K = {args.k}; img/s over all runs; ratio = achieved / matmul peak")
  table(rows, peak32, "of peak")

  print()
  if backend != "gpu":
    print("vit_paper ladder, bfloat16, 224 px: MFU not measured (no GPU in this session)")
    return
  peak16 = matmul_peak(8192, jnp.bfloat16)
  print(f"practical peak: 8192^3 bfloat16 matmul = {peak16 / 1e12:.1f} TFLOP/s")
  rows = [bench_model(name, 1000, 224, 256, args.steps, jnp.bfloat16) for name in models.ladder("vit_paper")]
  print("train step, bfloat16 compute, 224 px, 1000 classes, batch 256; MFU = achieved / bf16 matmul peak")
  table(rows, peak16, "MFU")


if __name__ == "__main__":
  main()
