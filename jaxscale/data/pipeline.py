"""Input paths of the training engine: example order tables, image reading, eval chunks.

Training order is a table computed on the host: the example that run ``r`` sees at position ``b``
of step ``t`` is a pure function of the run's data seed, its subset and ``(t, b)``
(:func:`example_order`): the subset is reshuffled every epoch with a seed of (seed, epoch) and
batches run on across epoch boundaries. The engine then either gathers the images on the device
from a uint8 copy of the group's examples (small data), or reads exactly the same examples with
grain (:class:`DispatchReader`: worker threads read and decode, then the same device step
augments them). Either way the order and the augmentation are the same, so a config gives the
same records whichever path a machine takes.
"""

from __future__ import annotations

import logging
from typing import Iterator

import grain
import numpy as np

from jaxscale.data import augment
from jaxscale.errors import JaxscaleError

logger = logging.getLogger("jaxscale")

_READ_CHUNK = 2048  # examples per batched read when loading a whole subset


def check_image_size(image_size: int, crop_padding: int = 0) -> None:
  """Raises JaxscaleError for a resolution the models cannot take or a crop padding that does not fit."""
  if image_size < augment.MIN_IMAGE_SIZE:
    raise JaxscaleError(f"image size {image_size} is too small for the models; set config.data.image_size "
                        f">= {augment.MIN_IMAGE_SIZE}")
  if not 0 <= crop_padding < image_size:
    raise JaxscaleError(f"crop padding {crop_padding} must be in [0, image size {image_size}); "
                        "change the crop_padding config field")


def example_order(indices: np.ndarray, seed: int, batch_size: int, start_step: int,
                  num_steps: int) -> np.ndarray:
  """int64 [num_steps, batch_size]: the examples of steps ``start_step ..`` of one run.

  Position ``p = step * batch_size + b`` of the run's stream is example
  ``indices[perm_e[p mod n]]`` with ``n = len(indices)``, ``e = p // n`` and ``perm_e`` the
  permutation of epoch ``e`` drawn from ``numpy.random.default_rng([seed, e])``.
  """
  indices = np.asarray(indices, np.int64)
  n = len(indices)
  if n == 0:
    raise JaxscaleError("the training subset is empty; use a subset size >= 1")
  pos = np.arange(start_step * batch_size, (start_step + num_steps) * batch_size, dtype=np.int64)
  epoch, offset = np.divmod(pos, n)
  out = np.empty_like(pos)
  for e in np.unique(epoch):
    where = epoch == e
    perm = np.random.default_rng([int(seed), int(e)]).permutation(n)
    out[where] = indices[perm[offset[where]]]
  return out.reshape(num_steps, batch_size)


def read_images(source, indices: np.ndarray, image_size: int, channels: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 [N, S, S, C] images, int32 [N] labels) of `indices`, read in batched chunks."""
  indices = np.asarray(indices, np.int64).reshape(-1)
  if len(indices) and (indices.min() < 0 or indices.max() >= len(source)):
    raise JaxscaleError(f"subset indices fall outside the split ({len(source)} examples); rebuild the subset")
  images, labels = [], []
  for start in range(0, len(indices), _READ_CHUNK):
    ims, labs = source.get_many(indices[start:start + _READ_CHUNK])
    images.append(augment.stack_square(ims, image_size, channels))
    labels.append(np.asarray(labs, np.int32))
  if not images:
    return np.zeros((0, image_size, image_size, channels or 1), np.uint8), np.zeros((0,), np.int32)
  return np.concatenate(images), np.concatenate(labels)


def images_mb(count: int, image_size: int, channels: int) -> float:
  """Megabytes (1e6 bytes) held by `count` uint8 [S, S, C] images, as :func:`read_images` returns them."""
  return count * image_size * image_size * channels / 1e6


def image_channels(source) -> int:
  """Channels of the first image of `source` (1 or 3)."""
  ims, _ = source.get_many(np.zeros(1, np.int64))
  return 1 if np.asarray(ims[0]).ndim == 2 else int(np.asarray(ims[0]).shape[-1])


class _ReadDispatch:
  """Dispatch number -> (uint8 [K, R, B, S, S, C], int32 [K, R, B]) for a fixed order table (picklable)."""

  def __init__(self, source, order: np.ndarray, steps_per_dispatch: int, image_size: int, channels: int):
    self.source, self.order, self.k = source, order, steps_per_dispatch
    self.image_size, self.channels = image_size, channels

  def __call__(self, d: int) -> tuple[np.ndarray, np.ndarray]:
    table = self.order[:, d * self.k:(d + 1) * self.k]           # [R, k, B]
    table = np.swapaxes(table, 0, 1)                             # [k, R, B]
    images, labels = read_images(self.source, table.reshape(-1), self.image_size, self.channels)
    return (images.reshape(*table.shape, *images.shape[1:]), labels.reshape(table.shape))


class DispatchReader:
  """grain reads and decodes the images of each dispatch ahead of the device (threads, prefetch).

  ``order`` is int64 [R, T_padded, B] (every run's order table, padded to whole dispatches);
  iterating from dispatch ``start`` yields ``(images uint8 [K, R, B, S, S, C], labels int32 [K, R, B])``.
  """

  def __init__(self, source, order: np.ndarray, *, steps_per_dispatch: int, image_size: int,
               channels: int, prefetch: int = 2, num_workers: int = 0):
    self.num_dispatches = order.shape[1] // steps_per_dispatch
    self._ds = grain.MapDataset.range(self.num_dispatches).map(
        _ReadDispatch(source, order, steps_per_dispatch, image_size, channels))
    self._prefetch, self._workers = max(prefetch, 0), num_workers

  def iterate(self, start: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    ds = self._ds[start:].to_iter_dataset(
        grain.ReadOptions(num_threads=max(self._prefetch, 1), prefetch_buffer_size=self._prefetch))
    if self._workers > 0:
      from absl import flags
      if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self._workers,
                                                       per_worker_buffer_size=max(self._prefetch, 1)))
    return iter(ds)


def eval_chunks(source, *, chunk_size: int, image_size: int, channels: int,
                prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
  """Every example of `source` once, in order, in chunks of `chunk_size` (the last padded).

  Yields ``{"image": uint8 [C, S, S, ch], "label": int32 [C], "mask": bool [C]}``; padding examples
  are zero images with mask False, so nothing is dropped and every chunk has one shape.
  """
  n = len(source)
  if n == 0:
    raise JaxscaleError(f"the eval split of {getattr(source, 'name', 'the dataset')} is empty; "
                        "set the eval_split config field")

  def read(c: int) -> dict[str, np.ndarray]:
    rows = np.arange(c * chunk_size, min((c + 1) * chunk_size, n))
    images, labels = read_images(source, rows, image_size, channels)
    pad = chunk_size - len(rows)
    return {"image": np.concatenate([images, np.zeros((pad, *images.shape[1:]), np.uint8)]),
            "label": np.concatenate([labels, np.zeros(pad, np.int32)]),
            "mask": np.arange(chunk_size) < len(rows)}

  ds = grain.MapDataset.range(-(-n // chunk_size)).map(read)
  return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=max(prefetch, 1),
                                                   prefetch_buffer_size=max(prefetch, 0))))
