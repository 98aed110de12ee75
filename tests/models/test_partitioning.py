"""Tests for jaxscale.models.partitioning: specs from logical axes, and sharded == unsharded."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec as P

import jaxscale.models as models
from jaxscale.models import partitioning


def test_spec_for_picks_largest_divisible_annotated_dim():
  spec = partitioning.spec_for((64, 256), ("embed", "mlp"), 4, min_size=1)
  assert spec == P(None, "fsdp")
  # 6 is not divisible by 4: the other dimension is used.
  assert partitioning.spec_for((64, 6), ("embed", "mlp"), 4, min_size=1) == P("fsdp", None)
  # Token positions are never split, even when they are the only large divisible dim.
  assert partitioning.spec_for((1, 64, 6), (None, "tokens", "embed"), 4, min_size=1) == P()


def test_spec_for_replicates_small_unannotated_or_indivisible():
  assert partitioning.spec_for((64, 256), ("embed", "mlp"), 4, min_size=10**6) == P()
  assert partitioning.spec_for((64, 256), None, 4, min_size=1) == P()
  assert partitioning.spec_for((3, 5), ("embed", "mlp"), 4, min_size=1) == P()
  assert partitioning.spec_for((64, 256), ("embed", "mlp"), 1, min_size=1) == P()


def test_every_param_is_annotated_with_known_logical_axes():
  for name in (models.ladder("vit_tiny")[0], models.ladder("resnet_tiny")[0]):
    model = nnx.eval_shape(lambda: models.create(name, 10, 16, nnx.Rngs(0)))
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
      axes = partitioning.logical_axes(var)
      assert axes is not None, f"{name}: {path} has no logical axes"
      assert len(axes) == len(var.get_value().shape), f"{name}: {path}"
      assert set(axes) <= set(partitioning.LOGICAL_AXES) | {None}, f"{name}: {path} {axes}"


def test_param_shardings_on_one_device_mesh_matches_state_structure():
  mesh = jax.make_mesh((1, 1), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  model = models.create("vit_tiny_xs", 10, 16, nnx.Rngs(0))
  state = nnx.state(model, nnx.Param)
  shardings = partitioning.param_shardings(state, mesh, min_size=1)
  placed = jax.device_put(state, shardings)
  assert jax.tree.structure(placed) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(placed), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


SCRIPT = textwrap.dedent("""
  import jax, jax.numpy as jnp, numpy as np
  from flax import nnx
  import jaxscale.models as models
  from jaxscale.models import partitioning
  assert jax.device_count() == 8, jax.device_count()
  auto = (jax.sharding.AxisType.Auto,) * 2
  mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=auto)
  x = jax.random.uniform(jax.random.key(1), (8, 16, 16, 3), minval=-1, maxval=1)
  # The batch on "data" only (the default) for one family, on both axes for the other.
  for name, axes in (("vit_tiny_xs", "data"), ("resnet_tiny_xs", ("data", "fsdp"))):
    model = models.create(name, 12, 16, nnx.Rngs(0))
    model.head.kernel[...] = jax.random.normal(jax.random.key(2), model.head.kernel.shape)
    want = np.asarray(model(x))
    graphdef, state = nnx.split(model, nnx.Param)
    shardings = partitioning.param_shardings(state, mesh, min_size=256)
    specs = [s.spec for s in jax.tree.leaves(shardings)]
    n_split = sum("fsdp" in tuple(s) for s in specs)
    assert n_split >= 3, (name, n_split)
    sharded = jax.device_put(state, shardings)
    assert any(len(a.sharding.device_set) == 8 and not a.sharding.is_fully_replicated
               for a in jax.tree.leaves(sharded))
    fwd = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    xs = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axes)))
    got = fwd(sharded, xs)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
    print(name, "split", n_split, "of", len(specs), "max diff", float(np.abs(np.asarray(got) - want).max()))
  print("OK")
""")


def test_sharded_logits_match_unsharded_on_8_devices():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stdout + out.stderr
  assert out.stdout.strip().endswith("OK"), out.stdout
