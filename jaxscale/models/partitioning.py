"""Logical axis annotations on parameters and their mapping to a ("data", "fsdp") mesh.

Model code never names a device layout. Every parameter carries a tuple of *logical* axis names
(one per dimension, `None` for a dimension that is never split), for example a ViT MLP kernel
``("embed", "mlp")`` or a conv kernel ``(None, None, "conv_in", "conv_out")``. At training time
:func:`param_shardings` turns those names into `NamedSharding`s for a concrete mesh, FSDP style:

* a parameter with at least `min_size` elements is split over the `fsdp` mesh axis along its
  largest dimension whose logical name is in `rules` and whose size the `fsdp` axis divides;
* every other parameter (small ones, or ones with no divisible dimension) is replicated.

So any model shards on any `fsdp` size. The trainer splits the batch over `data`.
The same function also works on an optimizer state: optax moments inherit the annotations.
Meshes use Auto axis types (the `jax.sharding.Mesh` default): XLA's partitioner inserts the
all-gathers of the sharded weights.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

# Logical names used by the models in this package. A dimension annotated with one of these may be
# split over the fsdp axis; `None` marks a dimension that is never split (kernel height/width, ...).
LOGICAL_AXES = ("embed", "mlp", "heads", "classes", "tokens", "patch", "conv_in", "conv_out")

# Logical names whose dimensions FSDP may split. Token positions stay whole so a position
# embedding can be interpolated without gathering; every weight dimension may be split.
DEFAULT_RULES = ("embed", "mlp", "heads", "classes", "patch", "conv_in", "conv_out")

# Parameters smaller than this (elements) are replicated: gathering them costs more than storing them.
DEFAULT_MIN_SIZE = 2**14

Initializer = Callable[..., jax.Array]


def annotate(init: Initializer, axes: Sequence[str | None]) -> Initializer:
  """Wraps an initializer so the created `nnx.Param` carries logical axis names `axes`.

  The names are stored as the parameter's ``out_sharding`` metadata (as `nnx.with_partitioning`
  does) with eager sharding off, so a model is created unsharded on any device and placed later
  with :func:`param_shardings`.
  """
  return nnx.with_partitioning(init, tuple(axes), eager_sharding=False)


def make_param(init: Initializer, key: jax.Array, shape: Sequence[int],
               axes: Sequence[str | None]) -> nnx.Param:
  """A float32 `nnx.Param` of `shape` drawn from `init`, annotated with logical `axes`."""
  if len(axes) != len(shape):
    raise ValueError(f"{len(axes)} logical axes for a parameter of shape {tuple(shape)}")
  return nnx.Param(annotate(init, axes)(key, tuple(shape), jnp.float32))


def logical_axes(variable: Any) -> tuple[str | None, ...] | None:
  """The logical axis names of an `nnx.Variable` (or None when it carries none)."""
  if not isinstance(variable, nnx.Variable):
    return None
  names = variable.get_metadata().get("out_sharding")
  return tuple(names) if names else None


def spec_for(shape: Sequence[int], axes: Sequence[str | None] | None, fsdp_size: int, *,
             fsdp_axis: str = "fsdp", rules: Iterable[str] = DEFAULT_RULES,
             min_size: int = DEFAULT_MIN_SIZE) -> P:
  """The `PartitionSpec` of one parameter: `fsdp_axis` on its largest splittable dimension, or none.

  Args:
    shape: the parameter's shape.
    axes: its logical axis names (one per dimension) or None for an unannotated array.
    fsdp_size: the number of devices along `fsdp_axis`.
    fsdp_axis: the mesh axis name to split over.
    rules: logical names whose dimensions may be split.
    min_size: parameters with fewer elements are replicated.
  """
  size = 1
  for d in shape:
    size *= int(d)
  if fsdp_size <= 1 or axes is None or size < min_size or len(axes) != len(shape):
    return P()
  allowed = set(rules)
  best = None
  for i, (dim, name) in enumerate(zip(shape, axes)):
    if name in allowed and dim % fsdp_size == 0 and (best is None or dim > shape[best]):
      best = i
  if best is None:
    return P()
  spec: list[str | None] = [None] * len(shape)
  spec[best] = fsdp_axis
  return P(*spec)


def param_shardings(state: nnx.State, mesh: Mesh, fsdp_axis: str = "fsdp", *,
                    rules: Iterable[str] = DEFAULT_RULES,
                    min_size: int = DEFAULT_MIN_SIZE) -> nnx.State:
  """`NamedSharding`s for every leaf of `state` (params or optimizer state) on `mesh`.

  Returns a pytree with the structure of `state` whose variables hold a `NamedSharding` instead of
  an array, ready for `jax.device_put(state, shardings)` or as `out_shardings` of a jitted init.
  Works on abstract states (from `nnx.eval_shape`) as well as concrete ones.
  """
  fsdp_size = mesh.shape[fsdp_axis] if fsdp_axis in mesh.axis_names else 1
  rules = tuple(rules)

  def one(leaf: Any) -> Any:
    if isinstance(leaf, nnx.Variable):
      value = leaf.get_value()
      spec = spec_for(jnp.shape(value), logical_axes(leaf), fsdp_size, fsdp_axis=fsdp_axis,
                      rules=rules, min_size=min_size)
      return leaf.replace(NamedSharding(mesh, spec))
    return NamedSharding(mesh, P())

  return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
