"""Image ops for the input pipelines, on numpy batches.

Images enter as uint8 [H, W, C] (C = 1 or 3) and leave as float32 [B, S, S, 3] in [-1, 1].
Random choices come from `uniforms(seed, positions, n)`: counter-based, so the augmentation of an
example depends only on the seed and the example's global position in the stream (not on the
batch it lands in, the process that reads it, or the worker that computes it).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MIN_IMAGE_SIZE = 8  # smallest model resolution the pipeline produces (pixels)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
  x = x + _GOLDEN
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def uniforms(seed: int, positions: np.ndarray, n: int) -> np.ndarray:
  """float64 [len(positions), n] in [0, 1): a pure function of (seed, position, column)."""
  pos = np.asarray(positions, dtype=np.uint64)[:, None]
  cols = np.arange(n, dtype=np.uint64)[None, :]
  with np.errstate(over="ignore"):
    x = _splitmix64(_splitmix64(np.uint64(seed) ^ _splitmix64(pos)) + cols)
  return (x >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


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


def stack_square(images: list[np.ndarray], size: int) -> np.ndarray:
  """uint8 [B, size, size, C] from images of any size (channels made equal: 1 -> 3 if mixed)."""
  out = [square_resize(im, size) for im in images]
  if len({im.shape[-1] for im in out}) > 1:
    out = [np.repeat(im, 3, axis=-1) if im.shape[-1] == 1 else im for im in out]
  return np.stack(out)


def random_crop(images: np.ndarray, padding: int, u_top: np.ndarray, u_left: np.ndarray) -> np.ndarray:
  """Pads [B, S, S, C] by `padding` pixels (edge values) and crops an S x S window per image.

  The window of image i starts at ``floor(u * (2 * padding + 1))`` for its uniforms u in [0, 1).
  """
  if padding <= 0:
    return images
  b, s = images.shape[0], images.shape[1]
  padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode="edge")
  top = (u_top * (2 * padding + 1)).astype(np.int64)
  left = (u_left * (2 * padding + 1)).astype(np.int64)
  rows = top[:, None] + np.arange(s)                 # [B, S]
  cols = left[:, None] + np.arange(s)                # [B, S]
  return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def flip(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Mirrors images [B, S, S, C] left-right where `mask` [B] is True."""
  return np.where(mask[:, None, None, None], images[:, :, ::-1], images)


def normalize(images: np.ndarray) -> np.ndarray:
  """uint8 [..., S, S, C] -> float32 [..., S, S, 3] in [-1, 1]; one channel is replicated to three."""
  x = images.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  return x


def train_batch(images: list[np.ndarray], labels: np.ndarray, positions: np.ndarray, *,
                seed: int, image_size: int, crop_padding: int, flip_ok: bool) -> dict[str, np.ndarray]:
  """Augments one batch: square resize, padded random crop, optional flip, normalise."""
  x = stack_square(images, image_size)
  u = uniforms(seed, positions, 3)
  x = random_crop(x, crop_padding, u[:, 0], u[:, 1])
  if flip_ok:
    x = flip(x, u[:, 2] < 0.5)
  return {"image": normalize(x), "label": np.asarray(labels, np.int32)}


def eval_batch(images: list[np.ndarray], labels: np.ndarray, image_size: int) -> dict[str, np.ndarray]:
  """Deterministic eval preprocessing of one batch: square resize and normalise."""
  return {"image": normalize(stack_square(images, image_size)), "label": np.asarray(labels, np.int32)}
