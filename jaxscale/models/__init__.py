"""Model registry: named ViT and ResNet rungs grouped into size ladders.

A model name is ``<family>_<ladder>_<size>``: family ``vit`` or ``resnet``; ladder ``tiny``
(16 px / 32 px inputs, trained on a CPU in seconds) or ``paper`` (224 px, 2.5M to 38M parameters,
the range of the paper); size ``xxs`` < ``xs`` < ``s`` < ``m`` < ``l`` < ``xl``. ``ladder("vit_tiny")``
lists the rungs of one ladder from smallest to largest.

Every model maps float32 images [B, S, S, 3] in [-1, 1] to float32 logits [B, num_classes], has
`features(x) -> [B, D]` and a linear `head`, and holds float32 parameters annotated with logical
axis names (see `jaxscale.models.partitioning`). `dtype` is the compute dtype.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Union

import jax
import jax.numpy as jnp
from flax import nnx

from jaxscale.errors import JaxscaleError
from jaxscale.models import resnet, transfer, vit
from jaxscale.models.resnet import ResNet, ResNetConfig
from jaxscale.models.vit import ViT, ViTConfig

__all__ = ["Spec", "create", "names", "ladder", "ladders", "spec", "param_count",
           "flops_per_image", "with_new_head", "backbone_state", "ViT", "ResNet"]


@dataclasses.dataclass(frozen=True)
class Spec:
  """A registered rung: its family ("vit" | "resnet"), architecture and default resolution (px)."""
  family: str
  config: Union[ViTConfig, ResNetConfig]
  image_size: int


def _vit(width: int, depth: int, heads: int, patch: int, image_size: int) -> Spec:
  return Spec("vit", ViTConfig(width=width, depth=depth, num_heads=heads, mlp_dim=4 * width,
                               patch_size=patch), image_size)


def _resnet(width: int, blocks: tuple[int, ...], bottleneck: bool, stem: str,
            image_size: int) -> Spec:
  return Spec("resnet", ResNetConfig(width=width, blocks=blocks, bottleneck=bottleneck, stem=stem),
              image_size)


_LADDERS: dict[str, dict[str, Spec]] = {
    # 16 px inputs, 4 px patches (16 tokens), GAP head, depth 2; only the width varies (16 to 96),
    # ~10K to ~240K parameters. Small enough that the default study trains each rung to past its
    # loss plateau at every Dp on 2 CPU cores, and error falls with width at every Dp there.
    "vit_tiny": {
        "xxs": _vit(16, 2, 2, 4, 16),
        "xs": _vit(24, 2, 2, 4, 16),
        "s": _vit(32, 2, 2, 4, 16),
        "m": _vit(48, 2, 3, 4, 16),
        "l": _vit(96, 2, 6, 4, 16),
    },
    # 224 px, 16 px patches, depth 12, head dim 64: ~2.6M to ~38M parameters.
    "vit_paper": {
        "xs": _vit(128, 12, 2, 16, 224),
        "s": _vit(192, 12, 3, 16, 224),
        "m": _vit(256, 12, 4, 16, 224),
        "l": _vit(384, 12, 6, 16, 224),
        "xl": _vit(512, 12, 8, 16, 224),
    },
    # 16 px inputs, 3x3 stride-1 stem, three stages (16, 8, 4 px) of basic units; ~46K to ~1.1M.
    "resnet_tiny": {
        "xs": _resnet(12, (1, 1, 1), False, "small", 16),
        "s": _resnet(20, (1, 1, 1), False, "small", 16),
        "m": _resnet(24, (1, 2, 2), False, "small", 16),
        "l": _resnet(40, (1, 2, 2), False, "small", 16),
    },
    # 224 px BiT ResNet-v2 bottleneck networks with the ImageNet stem, all of depth 26
    # (2 units per stage, as BiT's R26); only the width varies, like vit_paper. ~2.7M to ~37M.
    "resnet_paper": {
        "xs": _resnet(24, (2, 2, 2, 2), True, "imagenet", 224),
        "s": _resnet(36, (2, 2, 2, 2), True, "imagenet", 224),
        "m": _resnet(48, (2, 2, 2, 2), True, "imagenet", 224),
        "l": _resnet(76, (2, 2, 2, 2), True, "imagenet", 224),
        "xl": _resnet(100, (2, 2, 2, 2), True, "imagenet", 224),
    },
}

_REGISTRY: dict[str, Spec] = {f"{lad}_{size}": s for lad, rungs in _LADDERS.items()
                              for size, s in rungs.items()}


def names() -> list[str]:
  """All registered model names, ladder by ladder, smallest rung first."""
  return list(_REGISTRY)


def ladders() -> list[str]:
  """The ladder names: "vit_tiny", "vit_paper", "resnet_tiny", "resnet_paper"."""
  return list(_LADDERS)


def ladder(name: str) -> list[str]:
  """The model names of ladder `name`, smallest first (e.g. ``ladder("vit_tiny")``)."""
  if name not in _LADDERS:
    raise JaxscaleError(f"unknown model ladder '{name}'; valid ladders: {', '.join(_LADDERS)}")
  return [f"{name}_{size}" for size in _LADDERS[name]]


def spec(name: str) -> Spec:
  """The registered `Spec` of model `name`; raises JaxscaleError listing valid names if unknown."""
  if name not in _REGISTRY:
    raise JaxscaleError(f"unknown model '{name}'; valid models: {', '.join(_REGISTRY)}")
  return _REGISTRY[name]


def _check_classes(num_classes: int) -> None:
  if not isinstance(num_classes, int) or num_classes < 2:
    raise JaxscaleError(f"a classifier needs at least 2 classes, got num_classes={num_classes!r}; "
                        "check the dataset's label count")


def check(name: str, num_classes: int, image_size: int) -> Spec:
  """Validates a (model, classes, resolution) triple; returns its `Spec` or raises JaxscaleError."""
  s = spec(name)
  _check_classes(num_classes)
  if s.family == "vit":
    vit.check_image_size(s.config, image_size, name)
  else:
    resnet.check_image_size(s.config, image_size, name)
  return s


def create(name: str, num_classes: int, image_size: int, rngs: nnx.Rngs,
           dtype: Any = jnp.float32) -> nnx.Module:
  """Builds model `name` for `num_classes` classes and `image_size` px inputs.

  Args:
    name: a registered model (see `names()`).
    num_classes: number of output logits (>= 2).
    image_size: input side in pixels (a multiple of the patch size for ViT).
    rngs: initialisation randomness (`nnx.Rngs(seed)`).
    dtype: compute dtype, e.g. jnp.float32 or "bfloat16"; parameters are float32 regardless.
  """
  s = check(name, num_classes, image_size)
  dtype = jnp.dtype(dtype)
  cls = ViT if s.family == "vit" else ResNet
  return cls(s.config, num_classes, image_size, dtype=dtype, rngs=rngs, name=name)


def param_count(name: str, num_classes: int, image_size: int) -> int:
  """Exact number of parameters, computed from shapes only (`nnx.eval_shape`, nothing allocated)."""
  check(name, num_classes, image_size)
  return _param_count(name, num_classes, image_size)


@functools.lru_cache(maxsize=None)
def _param_count(name: str, num_classes: int, image_size: int) -> int:
  abstract = nnx.eval_shape(lambda: create(name, num_classes, image_size, nnx.Rngs(0)))
  return count_params(abstract)


def count_params(model_or_state: Any) -> int:
  """Number of `nnx.Param` elements of a model or state (works on abstract ones too)."""
  if isinstance(model_or_state, nnx.State):
    state = nnx.filter_state(model_or_state, nnx.Param)
  else:
    state = nnx.state(model_or_state, nnx.Param)
  total = 0
  for leaf in jax.tree.leaves(state):
    n = 1
    for d in jnp.shape(leaf):
      n *= int(d)
    total += n
  return total


def flops_per_image(name: str, num_classes: int, image_size: int) -> float:
  """Analytic forward FLOPs for one image (2 x multiply-adds of convs/matmuls; see the family's
  `flops`). Training costs about 3x this per image (forward + backward)."""
  s = check(name, num_classes, image_size)
  fn = vit.flops if s.family == "vit" else resnet.flops
  return fn(s.config, num_classes, image_size)


def with_new_head(model: nnx.Module | nnx.State, name: str, num_classes: int, image_size: int,
                  rngs: nnx.Rngs, dtype: Any = None) -> nnx.Module:
  """A model `name` for `num_classes` at `image_size` px with `model`'s backbone and a new head.

  `model` is the pretrained model of architecture `name` or its parameter `nnx.State`; `dtype`
  None keeps its compute dtype (float32 for a state). The backbone parameters of the result are
  the same arrays as `model`'s (bit-identical); see `transfer.transplant`.
  """
  check(name, num_classes, image_size)
  if dtype is None:
    dtype = getattr(model, "dtype", jnp.float32)
  return transfer.transplant(model, create(name, num_classes, image_size, rngs, dtype=dtype), name)


backbone_state = transfer.backbone_state
