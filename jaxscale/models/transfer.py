"""Transfer: split a model into backbone and head, and move a backbone into a fresh model.

Fine-tuning starts from a pretrained model (or its restored parameter state), keeps every
backbone parameter bit-identical, and replaces the head by a fresh one for the downstream class
count: zeros (:func:`zero_head`), as big_vision and BiT start a transfer head and as every model
here initialises its own head, so no random choice is involved. A ViT given a new resolution gets
its position embeddings resized bilinearly on the patch grid (big_vision's `resample_posemb`). `jaxscale.models.with_new_head`
creates the fresh model from the registry and calls `transplant`; this module knows no registry.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from jaxscale.errors import JaxscaleError
from jaxscale.models import vit

HEAD = "head"


def zero_head(params: dict) -> dict:
  """A fresh head for a model whose parameters (a nested dict of arrays or shapes) are `params`:
  zeros of the head's shapes and dtypes, as host arrays."""
  return jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype), params[HEAD])


def _params(model_or_state: nnx.Module | nnx.State) -> nnx.State:
  if isinstance(model_or_state, nnx.State):
    return nnx.filter_state(model_or_state, nnx.Param)
  return nnx.state(model_or_state, nnx.Param)


def backbone_state(model_or_state: nnx.Module | nnx.State) -> nnx.State:
  """The parameters of everything but `head` (an `nnx.State`, arrays shared, not copied)."""
  flat = [(path, v) for path, v in nnx.to_flat_state(_params(model_or_state))
          if path[0] != HEAD]
  return nnx.from_flat_state(flat)


def transplant(model: nnx.Module | nnx.State, new: nnx.Module, name: str) -> nnx.Module:
  """`new` with every backbone parameter replaced by `model`'s (its head is left as initialised).

  Args:
    model: the pretrained model, or its parameter `nnx.State` (e.g. restored from a checkpoint).
    new: a freshly created model of the same architecture (any class count; for a ViT any
      resolution: the position embeddings are resized to it, every other parameter is reused).
    name: the registered name of `new`, for error messages.

  Returns:
    `new`, updated in place; its backbone parameters are the same arrays as `model`'s.
  """
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
