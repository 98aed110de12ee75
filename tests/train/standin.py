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


SETTINGS = ("adamw", 0.9, 1e-2, 1.0)


def train(data: int, fsdp: int, steps: int = 6, batch: int = 16, teacher: bool = False):
  """Trains the stand-in on a (data, fsdp) mesh of the first data*fsdp devices.

  Returns (losses [steps], final params as {path: numpy}, the kernel's sharding spec).
  """
  from types import SimpleNamespace
  from jaxscale.train import sharding, steps as steps_lib
  mesh = sharding.make_mesh(SimpleNamespace(data=data, fsdp=fsdp), devices=jax.devices()[:data * fsdp])
  graphdef, params = nnx.split(StandIn(5, nnx.Rngs(0)), nnx.Param)
  rng = jax.random.key(1)
  abstract = jax.eval_shape(lambda p: steps_lib.create_state(p, SETTINGS, rng), params)
  state_sh = steps_lib.state_shardings(abstract, SETTINGS, mesh)
  state = jax.jit(lambda p: steps_lib.create_state(p, SETTINGS, rng), out_shardings=state_sh)(params)
  t_graph = t_params = t_sh = None
  if teacher:
    t_graph, t_params = nnx.split(StandIn(5, nnx.Rngs(7)), nnx.Param)
    t_sh = sharding.param_shardings(t_params, mesh)
    t_params = jax.device_put(t_params, t_sh)
  step = steps_lib.make_train_step(graphdef, SETTINGS, state_sharding=state_sh, mesh=mesh,
                                   teacher_graphdef=t_graph, teacher_sharding=t_sh, alpha=0.5,
                                   temperature=2.0)
  losses = []
  for b in make_batches(steps, batch):
    state, m = step(state, sharding.shard_batch(b, mesh), t_params, np.float32(3e-3))
    losses.append(float(m["loss"]))
  flat = {"/".join(map(str, k)): np.asarray(v) for k, v in nnx.to_flat_state(state.params)}
  return np.asarray(losses), flat, str(state.params["kernel"].get_value().sharding.spec)


if __name__ == "__main__":
  # python standin.py OUT.json 1x1 8x1 2x4 ...: loss curves, final kernels and kernel shardings.
  import json
  result = {}
  for mesh in sys.argv[2:]:
    data, fsdp = map(int, mesh.split("x"))
    losses, flat, spec = train(data, fsdp, teacher=True)
    result[mesh] = {"losses": losses.tolist(), "kernel": flat["kernel"].tolist(), "spec": spec,
                    "devices": jax.device_count()}
  with open(sys.argv[1], "w") as f:
    json.dump(result, f)
