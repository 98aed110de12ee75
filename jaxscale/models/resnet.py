"""BiT-style pre-activation ResNet (ResNet v2) in Flax NNX, as in big_vision's `bit.py`.

Every convolution is weight-standardised (`StdConv`) and every normalisation is GroupNorm, so the
network has no batch statistics (Kolesnikov et al. 2020, "Big Transfer"). Two stems:

* "imagenet": 7x7 stride-2 convolution + 3x3 stride-2 max-pool (for 224 px inputs);
* "small": one 3x3 stride-1 convolution, no pooling (for 16 px and 32 px inputs).

Two residual units: the BiT bottleneck (1x1 -> 3x3 -> 1x1, output 4x the middle width) and a
basic unit (3x3 -> 3x3), both pre-activation (GroupNorm + ReLU before each convolution, the
projection shortcut taken from the first pre-activation). The head is GroupNorm + ReLU, global
average pooling and a zero-initialised linear layer.

Shapes: images float32 [B, H, W, 3] -> logits float32 [B, num_classes]; NHWC throughout.
"""

from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp
from flax import nnx

from jaxscale.errors import JaxscaleError
from jaxscale.models import initializers as init
from jaxscale.models.partitioning import annotate, make_param

Dtype = jnp.dtype


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
  """Architecture of one ResNet rung.

  Attributes:
    width: stem output channels; stage i has middle width `width * 2**i`.
    blocks: residual units per stage (its length is the number of stages).
    bottleneck: BiT bottleneck units (output 4x middle width) or basic units (output = middle).
    stem: "imagenet" (7x7/2 conv + 3x3/2 max-pool) or "small" (3x3/1 conv).
  """
  width: int
  blocks: tuple[int, ...]
  bottleneck: bool = True
  stem: str = "imagenet"

  def stage_widths(self) -> list[tuple[int, int]]:
    """(middle, output) channels of each stage."""
    out = []
    for i in range(len(self.blocks)):
      mid = self.width * 2**i
      out.append((mid, 4 * mid if self.bottleneck else mid))
    return out


def num_groups(channels: int) -> int:
  """GroupNorm groups: 32 as in BiT when 64 <= channels (and 32 divides them), else the largest
  divisor of `channels` that keeps at least 2 channels per group."""
  g = max(1, min(32, channels // 2))
  while channels % g:
    g -= 1
  return g


def standardize(w: jax.Array, eps: float = 1e-8) -> jax.Array:
  """Weight standardisation of an HWIO kernel: zero mean, unit variance per output channel."""
  w = w - jnp.mean(w, axis=(0, 1, 2), keepdims=True)
  return w * jax.lax.rsqrt(jnp.mean(jnp.square(w), axis=(0, 1, 2), keepdims=True) + eps)


class StdConv(nnx.Module):
  """Bias-free weight-standardised convolution, symmetric padding k//2. [B,H,W,Cin] -> [B,H',W',Cout]."""

  def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, *, dtype: Dtype,
               rngs: nnx.Rngs):
    self.stride = stride
    self.pad = kernel // 2
    self.dtype = dtype
    self.kernel = make_param(init.he_normal, rngs.params(),
                             (kernel, kernel, cin, cout), (None, None, "conv_in", "conv_out"))

  def __call__(self, x: jax.Array) -> jax.Array:
    w = standardize(self.kernel[...]).astype(self.dtype)
    return jax.lax.conv_general_dilated(
        x.astype(self.dtype), w, (self.stride, self.stride), [(self.pad, self.pad)] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


class GroupNorm(nnx.GroupNorm):
  """`nnx.GroupNorm` over NHWC maps with the same math and parameters (`scale`, `bias` [C]), faster.

  Statistics are per-channel sums over H, W (a reduction XLA's CPU backend vectorises along
  the contiguous channel axis) combined per group on the tiny [B, C] arrays, instead of a
  reduction over a [B, H, W, G, C/G] view with a 2-8 element minor axis. As in nnx: float32
  statistics, Var = E[x^2] - E[x]^2 clipped at 0, y = (x - mean) * rsqrt(var + eps) * scale + bias,
  here applied as one fused x * a + c with a, c of shape [B, 1, 1, C].
  """

  def __call__(self, x: jax.Array, *, mask=None) -> jax.Array:
    """[B, H, W, C] -> [B, H, W, C] in the compute dtype."""
    if mask is not None or x.ndim != 4:
      return super().__call__(x, mask=mask)
    b, h, w, c = x.shape
    g = self.num_groups
    xf = x.astype(jnp.float32)
    n = h * w * (c // g)
    mean = xf.sum(axis=(1, 2)).reshape(b, g, c // g).sum(-1) / n              # [B, G]
    mean2 = jnp.square(xf).sum(axis=(1, 2)).reshape(b, g, c // g).sum(-1) / n
    inv = jax.lax.rsqrt(jnp.maximum(0.0, mean2 - jnp.square(mean)) + self.epsilon)
    mean, inv = jnp.repeat(mean, c // g, axis=1), jnp.repeat(inv, c // g, axis=1)  # [B, C]
    a = inv * self.scale[...].astype(jnp.float32)
    shift = self.bias[...].astype(jnp.float32) - mean * a
    y = xf * a[:, None, None, :] + shift[:, None, None, :]
    return y.astype(self.dtype if self.dtype is not None else x.dtype)


def _gn(channels: int, dtype: Dtype, rngs: nnx.Rngs) -> GroupNorm:
  meta = {"out_sharding": ("conv_out",), "eager_sharding": False}
  return GroupNorm(channels, num_groups=num_groups(channels), epsilon=1e-5, dtype=dtype,
                   rngs=rngs, scale_metadata=meta, bias_metadata=meta)


class Bottleneck(nnx.Module):
  """BiT pre-activation bottleneck unit: cin -> (mid, mid) -> 4*mid, stride on the 3x3 conv."""

  def __init__(self, cin: int, mid: int, stride: int, *, dtype: Dtype, rngs: nnx.Rngs):
    cout = 4 * mid
    self.gn1 = _gn(cin, dtype, rngs)
    self.proj = (StdConv(cin, cout, 1, stride, dtype=dtype, rngs=rngs)
                 if cin != cout or stride != 1 else None)
    self.conv1 = StdConv(cin, mid, 1, dtype=dtype, rngs=rngs)
    self.gn2 = _gn(mid, dtype, rngs)
    self.conv2 = StdConv(mid, mid, 3, stride, dtype=dtype, rngs=rngs)
    self.gn3 = _gn(mid, dtype, rngs)
    self.conv3 = StdConv(mid, cout, 1, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.nn.relu(self.gn1(x))
    residual = self.proj(y) if self.proj is not None else x
    y = self.conv1(y)
    y = self.conv2(jax.nn.relu(self.gn2(y)))
    y = self.conv3(jax.nn.relu(self.gn3(y)))
    return y + residual


class Basic(nnx.Module):
  """Pre-activation basic unit: cin -> mid -> mid with two 3x3 convs, stride on the first."""

  def __init__(self, cin: int, mid: int, stride: int, *, dtype: Dtype, rngs: nnx.Rngs):
    self.gn1 = _gn(cin, dtype, rngs)
    self.proj = (StdConv(cin, mid, 1, stride, dtype=dtype, rngs=rngs)
                 if cin != mid or stride != 1 else None)
    self.conv1 = StdConv(cin, mid, 3, stride, dtype=dtype, rngs=rngs)
    self.gn2 = _gn(mid, dtype, rngs)
    self.conv2 = StdConv(mid, mid, 3, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.nn.relu(self.gn1(x))
    residual = self.proj(y) if self.proj is not None else x
    y = self.conv1(y)
    y = self.conv2(jax.nn.relu(self.gn2(y)))
    return y + residual


def _max_pool(x: jax.Array) -> jax.Array:
  """3x3 stride-2 max-pool with padding 1. [B, H, W, C] -> [B, ceil(H/2), ceil(W/2), C]."""
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                               [(0, 0), (1, 1), (1, 1), (0, 0)])


class ResNet(nnx.Module):
  """A pre-activation ResNet classifier for `image_size` x `image_size` RGB images.

  `features(x)` gives the pooled backbone output [B, C_out] (compute dtype) and `__call__(x)` the
  float32 logits [B, num_classes] of `head` (zero-initialised, as in BiT).
  """

  def __init__(self, cfg: ResNetConfig, num_classes: int, image_size: int, *,
               dtype: Dtype = jnp.float32, rngs: nnx.Rngs, name: str = "resnet"):
    if cfg.stem not in ("imagenet", "small"):
      raise ValueError(f"unknown ResNet stem {cfg.stem!r}")
    check_image_size(cfg, image_size, name)
    self.cfg = cfg
    self.image_size = image_size
    self.dtype = dtype
    self.stem = StdConv(3, cfg.width, 7 if cfg.stem == "imagenet" else 3,
                        2 if cfg.stem == "imagenet" else 1, dtype=dtype, rngs=rngs)
    unit = Bottleneck if cfg.bottleneck else Basic
    units = []
    cin = cfg.width
    for i, ((mid, cout), n) in enumerate(zip(cfg.stage_widths(), cfg.blocks)):
      for j in range(n):
        units.append(unit(cin, mid, 2 if (i > 0 and j == 0) else 1, dtype=dtype, rngs=rngs))
        cin = cout
    self.units = nnx.List(units)
    self.norm = _gn(cin, dtype, rngs)
    self.head = nnx.Linear(cin, num_classes, dtype=dtype, rngs=rngs,
                           kernel_init=annotate(nnx.initializers.zeros_init(), ("conv_out", "classes")),
                           bias_init=annotate(nnx.initializers.zeros_init(), ("classes",)))

  def features(self, x: jax.Array) -> jax.Array:
    """Images float32 [B, S, S, 3] -> pooled features [B, C_out] in the compute dtype."""
    if x.ndim != 4 or x.shape[-1] != 3:
      raise JaxscaleError(f"model expects images of shape [B, H, W, 3], got {list(x.shape)}")
    y = self.stem(x.astype(self.dtype))
    if self.cfg.stem == "imagenet":
      y = _max_pool(y)
    for u in self.units:
      y = u(y)
    y = jax.nn.relu(self.norm(y))
    return y.mean(axis=(1, 2))

  def __call__(self, x: jax.Array) -> jax.Array:
    """Images float32 [B, S, S, 3] -> logits float32 [B, num_classes]."""
    return self.head(self.features(x)).astype(jnp.float32)


def _conv_out(size: int, kernel: int, stride: int) -> int:
  pad = kernel // 2
  return (size + 2 * pad - kernel) // stride + 1


def flops(cfg: ResNetConfig, num_classes: int, image_size: int) -> float:
  """Forward FLOPs per image: 2 x multiply-adds of every convolution and the head.
  GroupNorm, ReLU, pooling, residual adds and weight standardisation are left out."""
  macs = 0
  s = image_size
  k, st = (7, 2) if cfg.stem == "imagenet" else (3, 1)
  s = _conv_out(s, k, st)
  macs += s * s * k * k * 3 * cfg.width
  if cfg.stem == "imagenet":
    s = (s + 2 - 3) // 2 + 1
  cin = cfg.width
  for i, ((mid, cout), n) in enumerate(zip(cfg.stage_widths(), cfg.blocks)):
    for j in range(n):
      stride = 2 if (i > 0 and j == 0) else 1
      so = _conv_out(s, 3, stride)
      if cfg.bottleneck:
        macs += s * s * cin * mid + so * so * 9 * mid * mid + so * so * mid * cout
      else:
        macs += so * so * 9 * cin * mid + so * so * 9 * mid * mid
      if cin != cout or stride != 1:
        macs += so * so * cin * cout
      s, cin = so, cout
  macs += cin * num_classes
  return 2.0 * macs


def check_image_size(cfg: ResNetConfig, image_size: int, name: str = "resnet") -> None:
  """Raises JaxscaleError if `image_size` is too small for the network's total stride."""
  stride = (4 if cfg.stem == "imagenet" else 1) * 2 ** (len(cfg.blocks) - 1)
  if image_size < stride:
    raise JaxscaleError(f"image size {image_size} is smaller than the total stride {stride} of "
                        f"model '{name}'; use images of at least {stride} px")

