"""Image ops: decoding-side resizing on the host (numpy) and training augmentation on the device (jax).

Images are stored and moved as uint8 ``[..., S, S, C]`` (C = 1 or 3) and become float32
``[..., S, S, 3]`` in [-1, 1] only inside the compiled step (:func:`normalize`). Training
augmentation (a padded random crop, an optional random-resized crop and an optional horizontal
flip) runs on the device for every
input path, so the same config gives the same batches whether the images were kept on the device
or read by grain. Its random choices are a pure function of a per-run key and an example's global
position in the run's stream (``step * batch_size + b``): :func:`example_uniforms`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

MIN_IMAGE_SIZE = 8  # smallest model resolution the pipeline produces (pixels)


# ----------------------------------------------------------------------------- host (decode side)

def square_resize(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 [H, W, C] -> uint8 [size, size, C]: central square crop, then bilinear resize."""
  if image.ndim == 2:
    image = image[:, :, None]
  h, w, c = image.shape
  if h != w:
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    image = image[top:top + s, left:left + s]
  if image.shape[0] == size:
    return image
  pil = Image.fromarray(image[:, :, 0] if c == 1 else image)
  out = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
  return out.reshape(size, size, c)


def stack_square(images: list[np.ndarray], size: int, channels: int | None = None) -> np.ndarray:
  """uint8 [B, size, size, C] from images of any size (1 -> 3 channels if mixed or if `channels` is 3)."""
  out = [square_resize(im, size) for im in images]
  want = channels or max((im.shape[-1] for im in out), default=1)
  out = [np.repeat(im, want, axis=-1) if im.shape[-1] != want else im for im in out]
  if not out:
    return np.zeros((0, size, size, want), np.uint8)
  return np.stack(out)


# ----------------------------------------------------------------------------- device (in the step)

def normalize(images: jax.Array) -> jax.Array:
  """uint8 [..., S, S, C] -> float32 [..., S, S, 3] in [-1, 1]; one channel is replicated to three."""
  x = images.astype(jnp.float32) * jnp.float32(2.0 / 255.0) - jnp.float32(1.0)
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  return x


def example_uniforms(key: jax.Array, positions: jax.Array, n: int, salt: int = 0) -> jax.Array:
  """float32 [B, n] in [0, 1): ``uniform(fold_in(key, position))`` per example.

  Args:
    key: raw uint32 key data [2] (one run's augmentation key).
    positions: int32 [B] global positions of the examples in the run's stream.
    n: uniforms per example.
    salt: > 0 draws an independent stream (``fold_in`` of the key with `salt` first).
  """
  key = jax.random.wrap_key_data(key)
  if salt:
    key = jax.random.fold_in(key, salt)
  return jax.vmap(lambda p: jax.random.uniform(jax.random.fold_in(key, p), (n,)))(positions)


# Inception-style random-resized crop: a box of 8%-100% of the area with aspect ratio 3/4..4/3.
RRC_AREA = (0.08, 1.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def random_resized_crop(x: jax.Array, u: jax.Array) -> jax.Array:
  """Crops a random box of each image [B, S, S, C] (float) and resizes it back to S x S (bilinear).

  Per image, from its uniforms ``u`` [B, 4]: area ``a = S^2 * lerp(RRC_AREA, u0)``, aspect ratio
  ``r = exp(lerp(log RRC_RATIO, u1))``, box ``h = min(sqrt(a / r), S)``, ``w = min(sqrt(a r), S)`` at
  ``top = u2 (S - h)``, ``left = u3 (S - w)``. A box of the whole image is the identity.
  """
  s = x.shape[1]
  area = s * s * (RRC_AREA[0] + u[:, 0] * (RRC_AREA[1] - RRC_AREA[0]))
  log_lo, log_hi = jnp.log(RRC_RATIO[0]), jnp.log(RRC_RATIO[1])
  ratio = jnp.exp(log_lo + u[:, 1] * (log_hi - log_lo))
  h = jnp.minimum(jnp.sqrt(area / ratio), s)
  w = jnp.minimum(jnp.sqrt(area * ratio), s)
  top, left = u[:, 2] * (s - h), u[:, 3] * (s - w)

  def one(im, h, w, top, left):
    scale = jnp.stack([s / h, s / w])
    return jax.image.scale_and_translate(im, im.shape, (0, 1), scale, -jnp.stack([top, left]) * scale,
                                         method="linear", antialias=False)
  return jax.vmap(one)(x, h, w, top, left)


def random_crop(images: jax.Array, padding: int, u_top: jax.Array, u_left: jax.Array) -> jax.Array:
  """Pads [B, S, S, C] by `padding` pixels (edge values) and crops an S x S window per image.

  The window of image i starts at ``floor(u * (2 * padding + 1))`` for its uniforms u in [0, 1).
  """
  if padding <= 0:
    return images
  s = images.shape[1]
  padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode="edge")
  top = jnp.floor(u_top * (2 * padding + 1)).astype(jnp.int32)
  left = jnp.floor(u_left * (2 * padding + 1)).astype(jnp.int32)
  crop = lambda im, t, l: jax.lax.dynamic_slice(im, (t, l, 0), (s, s, im.shape[-1]))
  return jax.vmap(crop)(padded, top, left)


def flip(images: jax.Array, mask: jax.Array) -> jax.Array:
  """Mirrors images [B, S, S, C] left-right where `mask` [B] is True."""
  return jnp.where(mask[:, None, None, None], images[:, :, ::-1], images)


def train_augment(images: jax.Array, key: jax.Array, positions: jax.Array, *, crop_padding: int,
                  flip_ok: bool, resized_crop: bool = False) -> jax.Array:
  """One run's training batch: uint8 [B, S, S, C] -> float32 [B, S, S, 3].

  A padded random crop (``crop_padding`` > 0), an optional random-resized crop, an optional flip,
  then normalisation to [-1, 1]."""
  u = example_uniforms(key, positions, 3)
  x = random_crop(images, crop_padding, u[:, 0], u[:, 1])
  if flip_ok:
    x = flip(x, u[:, 2] < 0.5)
  x = normalize(x)
  if resized_crop:
    x = random_resized_crop(x, example_uniforms(key, positions, 4, salt=1))
  return x
