"""A small stand-in classifier (nnx) with logical axis annotations, for step-level tests.

Also runnable as a script: ``python standin.py OUT.npz DATA FSDP`` trains a few steps on a
``(DATA, FSDP)`` mesh and saves the loss curve and final parameters (used by multi-device tests).
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxscale.models import partitioning


class StandIn(nnx.Module):
  """x [B, 4, 4, 3] -> logits [B, K]: flatten, dense 48->512 (fsdp-shardable), gelu, head."""

  def __init__(self, num_classes: int, rngs: nnx.Rngs, hidden: int = 512):
    init = nnx.initializers.lecun_normal()
    self.kernel = partitioning.make_param(init, rngs.params(), (48, hidden), ("embed", "mlp"))
    self.bias = nnx.Param(jnp.zeros((hidden,)))
    self.head = nnx.Linear(hidden, num_classes, rngs=rngs)

  def features(self, x):
    return jax.nn.gelu(x.reshape(x.shape[0], -1) @ self.kernel[...] + self.bias[...])

  def __call__(self, x):
    return self.head(self.features(x))


def make_batches(n: int, batch: int, num_classes: int = 5, seed: int = 0):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(num_classes, 4, 4, 3)).astype(np.float32)
  out = []
  for _ in range(n):
    y = rng.integers(0, num_classes, size=batch).astype(np.int32)
    x = centers[y] + 0.5 * rng.normal(size=(batch, 4, 4, 3)).astype(np.float32)
    out.append({"image": x, "label": y})
  return out


SETTINGS = ("adamw", 0.9, 1e-2, 1.0, True)


def make_images(n: int, batch: int, runs: int, num_classes: int = 5, seed: int = 0):
  """n steps of uint8 images [n, R, B, 4, 4, 3] and labels [n, R, B] (class-dependent means)."""
  rng = np.random.default_rng(seed)
  centers = rng.uniform(60, 200, size=(num_classes, 4, 4, 3))
  y = rng.integers(0, num_classes, size=(n, runs, batch)).astype(np.int32)
  x = np.clip(centers[y] + 25 * rng.normal(size=(n, runs, batch, 4, 4, 3)), 0, 255).astype(np.uint8)
  return x, y


def group(mesh_shape=(1, 1, 1), runs: int = 2, teacher: bool = False, settings=SETTINGS, batch: int = 16,
          alpha: float = 0.5):
  """A group of `runs` stand-ins (different inits) on a (runs, data, fsdp) mesh of the first devices.

  Returns (mesh, graphdef, state, state shardings, chunk, consts, teacher params or None).
  """
  from types import SimpleNamespace
  from jaxscale.train import sharding, steps as steps_lib
  r, d, f = mesh_shape
  mesh = sharding.make_mesh(SimpleNamespace(runs=r, data=d, fsdp=f), devices=jax.devices()[:r * d * f])
  models_ = [nnx.split(StandIn(5, nnx.Rngs(i)), nnx.Param) for i in range(runs)]
  graphdef = models_[0][0]
  params = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *[m[1].to_pure_dict() for m in models_])
  param_sh = sharding.with_runs_axis(sharding.param_shardings(models_[0][1], mesh).to_pure_dict())
  abstract = jax.eval_shape(lambda p: steps_lib.create_state(p, settings), params)
  state_sh = steps_lib.state_shardings(abstract, settings, param_sh, mesh)
  state = steps_lib.make_init(settings, state_sh)(jax.device_put(params, param_sh))
  t_graph = t_params = t_sh = None
  if teacher:
    t_graph, t_state = nnx.split(StandIn(5, nnx.Rngs(7)), nnx.Param)
    t_sh = sharding.param_shardings(t_state, mesh).to_pure_dict()
    t_params = jax.device_put(t_state.to_pure_dict(), t_sh)
  spec = steps_lib.StepSpec(graphdef=graphdef, settings=settings, batch_size=batch, teacher_graphdef=t_graph,
                            temperature=2.0, on_device=False)
  chunk = steps_lib.make_train_chunk(spec, mesh, state_sh, t_sh)
  consts = {"alpha": np.full(runs, alpha if teacher else 0.0, np.float32),
            "key": np.stack([np.asarray(jax.random.key_data(jax.random.key(i))) for i in range(runs)]),
            "uniform": np.zeros(runs, np.bool_)}
  return mesh, graphdef, state, state_sh, chunk, consts, t_params


def train(mesh_shape, dispatches: int = 3, k: int = 2, runs: int = 2, teacher: bool = True):
  """Trains a stand-in group; returns (losses [steps, R], final kernel [R, 48, 512], kernel spec)."""
  _, _, state, _, chunk, consts, t_params = group(mesh_shape, runs, teacher)
  images, labels = make_images(dispatches * k, 16, runs)
  losses = []
  for d in range(dispatches):
    sl = slice(d * k, (d + 1) * k)
    state, loss = chunk(state, consts, t_params, {"images": images[sl], "labels": labels[sl]},
                        np.full((k, runs), 3e-3, np.float32), np.ones((k, runs), bool))
    losses.append(np.asarray(loss))
  kernel = state.params["kernel"]
  return np.concatenate(losses), np.asarray(kernel), str(kernel.sharding.spec)


if __name__ == "__main__":
  # python standin.py OUT.json 1x1x1 2x4x1 1x2x4 ...: loss curves, final kernels and kernel shardings.
  import json
  result = {}
  for mesh in sys.argv[2:]:
    losses, kernel, spec = train(tuple(map(int, mesh.split("x"))))
    result[mesh] = {"losses": losses.tolist(), "kernel": kernel.tolist(), "spec": spec,
                    "devices": jax.device_count()}
  with open(sys.argv[1], "w") as f:
    json.dump(result, f)


def run_params(run_dir):
  """A finished run's parameters as {path: numpy}."""
  from jaxscale.train import checkpoint as ckpt_lib, loop
  meta = ckpt_lib.open_finished(run_dir, "run")
  _, state = loop._abstract_params(meta["model"], meta["num_classes"], meta["image_size"], np.float32)
  flat = {}

  def walk(tree, prefix):
    for k, v in tree.items():
      walk(v, f"{prefix}{k}/") if isinstance(v, dict) else flat.setdefault(f"{prefix}{k}", np.asarray(v))
  walk(ckpt_lib.load_params(run_dir, state.to_pure_dict()), "")
  return flat


def run_group_script(tmp_path, config, runs, group_dir, *extra, env=None):
  """Trains `runs` as one pretraining group in a child process (tests/train/group_script.py), which
  can be killed part-way; returns (the CompletedProcess, its results or None)."""
  import json
  import os
  import subprocess
  script = os.path.join(os.path.dirname(__file__), "group_script.py")
  cfg, spec, out = tmp_path / "c.json", tmp_path / "spec.json", tmp_path / "out.json"
  cfg.write_text(json.dumps(config.to_dict()))
  spec.write_text(json.dumps({"stage": "pretrain", "group_dir": str(group_dir),
                              "runs": [dict(name=r.name, seed=r.seed, size=r.size, out_dir=r.out_dir,
                                            meta=list(r.meta)) for r in runs]}))
  proc = subprocess.run([sys.executable, script, str(cfg), str(spec), str(out), *map(str, extra)],
                        env=dict(os.environ, **(env or {})), capture_output=True, text=True, timeout=600)
  return proc, (json.loads(out.read_text()) if out.exists() else None)
