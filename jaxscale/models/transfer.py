"""Transfer: split a model into backbone and head, and re-attach a fresh head.

Fine-tuning starts from a pretrained model (or its restored parameter state), keeps every
backbone parameter bit-identical, and replaces the head by a freshly initialised one for the
downstream class count. A ViT given a new resolution gets its position embeddings resized
bilinearly on the patch grid (big_vision's `resample_posemb`).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import nnx

from jaxscale.errors import JaxscaleError
from jaxscale.models import create, check, vit

HEAD = "head"


def _params(model_or_state: nnx.Module | nnx.State) -> nnx.State:
  if isinstance(model_or_state, nnx.State):
    return nnx.filter_state(model_or_state, nnx.Param)
  return nnx.state(model_or_state, nnx.Param)


def backbone_state(model_or_state: nnx.Module | nnx.State) -> nnx.State:
  """The parameters of everything but `head` (an `nnx.State`, arrays shared, not copied)."""
  flat = [(path, v) for path, v in nnx.to_flat_state(_params(model_or_state))
          if path[0] != HEAD]
  return nnx.from_flat_state(flat)


def with_new_head(model: nnx.Module | nnx.State, name: str, num_classes: int, image_size: int,
                  rngs: nnx.Rngs, dtype: Any = None) -> nnx.Module:
  """A model `name` for `num_classes` at `image_size` px with `model`'s backbone and a new head.

  Args:
    model: the pretrained model of architecture `name`, or its parameter `nnx.State`
      (e.g. restored from a checkpoint).
    name: its registered name; the backbone architecture must match.
    num_classes: classes of the new head (>= 2).
    image_size: input resolution of the new model; for a ViT a new resolution resizes the
      position embeddings, every other parameter is reused as is.
    rngs: randomness for the new head's initialisation.
    dtype: compute dtype; None keeps the source model's (float32 for a state).

  Returns:
    A new module; its backbone parameters are the same arrays as `model`'s (bit-identical).
  """
  check(name, num_classes, image_size)
  if dtype is None:
    dtype = getattr(model, "dtype", jnp.float32)
  new = create(name, num_classes, image_size, rngs, dtype=dtype)
  source = dict(nnx.to_flat_state(backbone_state(model)))
  target = nnx.to_flat_state(nnx.state(new, nnx.Param))
  updated = []
  for path, var in target:
    if path[0] == HEAD:
      continue
    if path not in source:
      raise JaxscaleError(f"the pretrained parameters have no '{'/'.join(map(str, path))}'; "
                          f"they do not come from model '{name}'")
    value = source[path].get_value()
    want = var.get_value().shape
    if path == ("pos_embed",) and value.shape != want:
      grid = int(round((want[1]) ** 0.5))
      value = vit.interpolate_pos_embed(value, grid)
    if value.shape != want:
      raise JaxscaleError(f"pretrained parameter '{'/'.join(map(str, path))}' has shape "
                          f"{tuple(value.shape)}, model '{name}' needs {tuple(want)}; "
                          "use the model name the checkpoint was trained with")
    updated.append((path, var.replace(value)))
  nnx.update(new, nnx.from_flat_state(updated))
  return new
