"""Vision Transformer (Dosovitskiy et al. 2021) in Flax NNX, as in big_vision's `vit.py`.

Patch embedding (a linear map of flattened non-overlapping patches), learned position embeddings,
pre-LayerNorm encoder blocks (multi-head self-attention + GELU MLP), a final LayerNorm, then a
global-average-pool ("gap") or class-token ("token") readout and a linear head.

Shapes: images float32 [B, H, W, 3] in [-1, 1] -> logits float32 [B, num_classes]. Parameters
are float32; `dtype` is the compute dtype (bfloat16 or float32). Softmax and normalisation
statistics are computed in float32 whatever the compute dtype.
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
class ViTConfig:
  """Architecture of one ViT rung.

  Attributes:
    width: token dimension D.
    depth: number of encoder blocks.
    num_heads: attention heads (D must be divisible by it).
    mlp_dim: hidden size of each block's MLP.
    patch_size: side of the square patches, in pixels.
    pool: "gap" (mean over tokens) or "token" (a learned class token).
  """
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  patch_size: int
  pool: str = "gap"


def check_image_size(cfg: ViTConfig, image_size: int, name: str = "vit") -> int:
  """Returns the patch-grid side for `image_size`; raises JaxscaleError if it does not divide."""
  if image_size < cfg.patch_size or image_size % cfg.patch_size:
    raise JaxscaleError(
        f"image size {image_size} is not divisible by the patch size {cfg.patch_size} of model "
        f"'{name}'; use an image size that is a multiple of {cfg.patch_size}")
  return image_size // cfg.patch_size


def _norm(width: int, dtype: Dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(width, epsilon=1e-6, dtype=dtype, rngs=rngs,
                       scale_metadata={"out_sharding": ("embed",), "eager_sharding": False},
                       bias_metadata={"out_sharding": ("embed",), "eager_sharding": False})


def _dense(cin: int, cout: int, axes: tuple[str, str], dtype: Dtype, rngs: nnx.Rngs,
           kernel_init=init.xavier_uniform,
           bias_init=nnx.initializers.zeros_init()) -> nnx.Linear:
  return nnx.Linear(cin, cout, dtype=dtype, rngs=rngs,
                    kernel_init=annotate(kernel_init, axes),
                    bias_init=annotate(bias_init, (axes[1],)))


class Attention(nnx.Module):
  """Multi-head self-attention with a fused q/k/v projection. [B, N, D] -> [B, N, D]."""

  def __init__(self, width: int, num_heads: int, *, dtype: Dtype, rngs: nnx.Rngs):
    self.num_heads = num_heads
    self.dtype = dtype
    self.qkv = _dense(width, 3 * width, ("embed", "heads"), dtype, rngs)
    self.out = _dense(width, width, ("heads", "embed"), dtype, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, n, d = x.shape
    h = self.num_heads
    qkv = self.qkv(x).reshape(b, n, 3, h, d // h)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]           # [B, N, H, Dh]
    q = q * jnp.asarray((d // h) ** -0.5, q.dtype)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    y = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, n, d)
    return self.out(y)


class Mlp(nnx.Module):
  """Two-layer GELU MLP. [B, N, D] -> [B, N, D]."""

  def __init__(self, width: int, mlp_dim: int, *, dtype: Dtype, rngs: nnx.Rngs):
    bias = init.normal(1e-6)
    self.fc1 = _dense(width, mlp_dim, ("embed", "mlp"), dtype, rngs, bias_init=bias)
    self.fc2 = _dense(mlp_dim, width, ("mlp", "embed"), dtype, rngs, bias_init=bias)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(jax.nn.gelu(self.fc1(x)))


class Block(nnx.Module):
  """Pre-LayerNorm encoder block: x + attn(ln(x)), then x + mlp(ln(x))."""

  def __init__(self, cfg: ViTConfig, *, dtype: Dtype, rngs: nnx.Rngs):
    self.norm1 = _norm(cfg.width, dtype, rngs)
    self.attn = Attention(cfg.width, cfg.num_heads, dtype=dtype, rngs=rngs)
    self.norm2 = _norm(cfg.width, dtype, rngs)
    self.mlp = Mlp(cfg.width, cfg.mlp_dim, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


def patchify(x: jax.Array, patch: int) -> jax.Array:
  """[B, H, W, C] -> [B, (H/p)*(W/p), p*p*C], patches in row-major order."""
  b, hh, ww, c = x.shape
  gh, gw = hh // patch, ww // patch
  x = x.reshape(b, gh, patch, gw, patch, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, gh * gw, patch * patch * c)


class ViT(nnx.Module):
  """A ViT classifier for `image_size` x `image_size` RGB images.

  `features(x)` gives the pooled, normalised backbone output [B, width] (compute dtype) and
  `__call__(x)` the float32 logits [B, num_classes] of `head` (zero-initialised, as in big_vision).
  """

  def __init__(self, cfg: ViTConfig, num_classes: int, image_size: int, *,
               dtype: Dtype = jnp.float32, rngs: nnx.Rngs, name: str = "vit"):
    grid = check_image_size(cfg, image_size, name)
    if cfg.pool not in ("gap", "token"):
      raise ValueError(f"unknown ViT pool {cfg.pool!r}")
    self.cfg = cfg
    self.image_size = image_size
    self.dtype = dtype
    p, d = cfg.patch_size, cfg.width
    self.patch_embed = _dense(p * p * 3, d, ("patch", "embed"), dtype, rngs,
                              kernel_init=init.lecun_normal)
    self.pos_embed = make_param(init.normal(0.02), rngs.params(),
                                (1, grid * grid, d), (None, "tokens", "embed"))
    if cfg.pool == "token":
      self.cls_token = make_param(nnx.initializers.zeros_init(), rngs.params(), (1, 1, d),
                                  (None, None, "embed"))
    self.blocks = nnx.List([Block(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.depth)])
    self.norm = _norm(d, dtype, rngs)
    self.head = _dense(d, num_classes, ("embed", "classes"), dtype, rngs,
                       kernel_init=nnx.initializers.zeros_init())

  def features(self, x: jax.Array) -> jax.Array:
    """Images float32 [B, S, S, 3] -> pooled features [B, width] in the compute dtype."""
    if x.ndim != 4 or x.shape[1:] != (self.image_size, self.image_size, 3):
      raise JaxscaleError(
          f"model expects images of shape [B, {self.image_size}, {self.image_size}, 3], got "
          f"{list(x.shape)}; set the data image size to {self.image_size} or build the model for "
          f"{x.shape[1] if x.ndim == 4 else '?'} px")
    tokens = self.patch_embed(patchify(x.astype(self.dtype), self.cfg.patch_size))
    tokens = tokens + self.pos_embed[...].astype(self.dtype)
    if self.cfg.pool == "token":
      cls = jnp.broadcast_to(self.cls_token[...].astype(self.dtype), (x.shape[0], 1, self.cfg.width))
      tokens = jnp.concatenate([cls, tokens], axis=1)
    for block in self.blocks:
      tokens = block(tokens)
    tokens = self.norm(tokens)
    return tokens[:, 0] if self.cfg.pool == "token" else tokens.mean(axis=1)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Images float32 [B, S, S, 3] -> logits float32 [B, num_classes]."""
    return self.head(self.features(x)).astype(jnp.float32)


def interpolate_pos_embed(pos: jax.Array, new_grid: int) -> jax.Array:
  """Resizes position embeddings [1, g*g, D] to [1, new_grid**2, D] (bilinear on the g x g grid)."""
  _, n, d = pos.shape
  grid = int(round(n ** 0.5))
  if grid * grid != n:
    raise ValueError(f"position embeddings with {n} tokens are not a square grid")
  if grid == new_grid:
    return pos
  img = pos.reshape(grid, grid, d)
  img = jax.image.resize(img, (new_grid, new_grid, d), method="bilinear", antialias=False)
  return img.reshape(1, new_grid * new_grid, d).astype(pos.dtype)


def flops(cfg: ViTConfig, num_classes: int, image_size: int) -> float:
  """Forward FLOPs per image: 2 x multiply-adds of every matmul (patch embed, q/k/v, attention
  scores and mixing, output projection, MLP, head). Norms, GELU, softmax and adds are left out."""
  grid = check_image_size(cfg, image_size)
  n = grid * grid + (1 if cfg.pool == "token" else 0)
  d, m, p = cfg.width, cfg.mlp_dim, cfg.patch_size
  macs = grid * grid * p * p * 3 * d                          # patch embedding
  per_block = n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * m
  macs += cfg.depth * per_block
  macs += d * num_classes
  return 2.0 * macs
