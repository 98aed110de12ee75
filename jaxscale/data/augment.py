"""Per-example image ops on numpy arrays: square resize, padded random crop, flip, normalisation.

Images enter as uint8 [H, W, C] (C = 1 or 3) and leave as float32 [S, S, 3] in [-1, 1].
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MIN_IMAGE_SIZE = 8  # smallest model resolution the pipeline produces (pixels)


def square_resize(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 [H, W, C] -> uint8 [size, size, C]: central square crop, then bilinear resize."""
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


def random_crop(image: np.ndarray, padding: int, rng: np.random.Generator) -> np.ndarray:
  """Pads [S, S, C] by `padding` pixels (edge values) and crops a random S x S window."""
  if padding <= 0:
    return image
  s = image.shape[0]
  padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)), mode="edge")
  top, left = rng.integers(0, 2 * padding + 1, size=2)
  return padded[top:top + s, left:left + s]


def normalize(image: np.ndarray) -> np.ndarray:
  """uint8 [S, S, C] -> float32 [S, S, 3] in [-1, 1]; one channel is replicated to three."""
  x = image.astype(np.float32) * (2.0 / 255.0) - 1.0
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  return x


def train_transform(example: dict, rng: np.random.Generator, *, image_size: int,
                    crop_padding: int, flip: bool) -> dict:
  """Augments one example: resize, padded random crop, optional flip, normalise."""
  image = square_resize(example["image"], image_size)
  image = random_crop(image, crop_padding, rng)
  if flip and rng.random() < 0.5:
    image = image[:, ::-1]
  return {"image": normalize(image), "label": np.int32(example["label"])}


def eval_transform(example: dict, *, image_size: int) -> dict:
  """Deterministic eval preprocessing: resize and normalise."""
  return {"image": normalize(square_resize(example["image"], image_size)),
          "label": np.int32(example["label"])}
