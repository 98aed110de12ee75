"""grain input pipelines: an infinite, checkpointable train iterator and complete eval batches.

Train: subset indices -> per-epoch seeded shuffle -> load -> augment (per-example seed) -> batch
-> this process's slice -> prefetch (threads, or worker processes with ``num_workers > 0``).

Everything random is a function of the config seed and an example's *global* position in the
stream, never of the process count or of the number of workers. The global stream is cut into
chunks of ``B_local = global_batch_size // process_count`` examples; global batch b is chunks
``b * P .. b * P + P - 1``, and process p reads chunk ``b * P + p``. So concatenating the local
batches of all processes (in process order) gives exactly the 1-process global batch.
"""

from __future__ import annotations

import logging
from typing import Iterator, Sequence

import grain
import numpy as np

from jaxscale.data import augment
from jaxscale.data.seeding import derive_seed
from jaxscale.errors import JaxscaleError

logger = logging.getLogger("jaxscale")


def _processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
  return process_index, process_count


def _local_batch(global_batch_size: int, process_count: int) -> int:
  if global_batch_size < 1 or global_batch_size % process_count:
    raise JaxscaleError(f"global batch size {global_batch_size} must be a positive multiple of the "
                        f"process count {process_count}; change the batch_size config field")
  return global_batch_size // process_count


def _check_image_size(image_size: int, crop_padding: int = 0) -> None:
  if image_size < augment.MIN_IMAGE_SIZE:
    raise JaxscaleError(f"image size {image_size} is too small for the models; set config.data.image_size "
                        f">= {augment.MIN_IMAGE_SIZE}")
  if not 0 <= crop_padding < image_size:
    raise JaxscaleError(f"crop padding {crop_padding} must be in [0, image size {image_size}); "
                        "change the crop_padding config field")


def _read_options(prefetch: int) -> grain.ReadOptions:
  return grain.ReadOptions(num_threads=max(prefetch, 0), prefetch_buffer_size=max(prefetch, 0))


def read_batch(source, indices: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
  """(images, int64 labels) of `indices`: one batched read when `source` has ``get_many``."""
  if hasattr(source, "get_many"):
    return source.get_many(indices)
  examples = [source[int(i)] for i in indices]
  return [np.asarray(ex["image"]) for ex in examples], np.array([ex["label"] for ex in examples], np.int64)


def _with_position(position: int, index: int) -> tuple[int, int]:
  return position, index


class _TrainBatch:
  """(global positions [B], example indices [B]) -> augmented batch (picklable for workers)."""

  def __init__(self, source, *, seed: int, image_size: int, crop_padding: int, flip_ok: bool):
    self.source = source
    self.kwargs = dict(seed=seed, image_size=image_size, crop_padding=crop_padding, flip_ok=flip_ok)

  def __call__(self, pair: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    positions, indices = pair
    images, labels = read_batch(self.source, indices)
    return augment.train_batch(images, labels, positions, **self.kwargs)


def train_dataset(source, indices: np.ndarray, *, global_batch_size: int, image_size: int,
                  seed: int, crop_padding: int = 0, flip: bool = False,
                  process_index: int | None = None, process_count: int | None = None) -> grain.MapDataset:
  """The infinite MapDataset of this process's train batches (see `train_iterator`)."""
  p, n_proc = _processes(process_index, process_count)
  local = _local_batch(global_batch_size, n_proc)
  _check_image_size(image_size, crop_padding)
  indices = np.asarray(indices, dtype=np.int64)
  if indices.ndim != 1 or indices.size == 0:
    raise JaxscaleError("the training subset is empty; use a subset size >= 1")
  if indices.min() < 0 or indices.max() >= len(source):
    raise JaxscaleError(f"subset indices fall outside the split ({len(source)} examples); rebuild the subset")
  if flip and not getattr(source, "allows_flip", True):
    logger.warning("flips are off: a flip changes the classes of %s", getattr(source, "name", "this dataset"))
    flip = False
  ds = grain.MapDataset.source(indices)
  ds = ds.shuffle(seed=derive_seed(seed, "shuffle")).repeat(None, reseed_each_epoch=True)
  ds = ds.map_with_index(_with_position)                              # global stream position
  ds = ds.batch(local, drop_remainder=True)[p::n_proc]                # this process's chunks
  return ds.map(_TrainBatch(source, seed=derive_seed(seed, "augment"), image_size=image_size,
                            crop_padding=crop_padding, flip_ok=flip))


class TrainIterator(grain.DatasetIterator):
  """The train iterator: batches of a MapDataset from position ``next_batch`` on.

  Its state, ``{"next_batch": int}``, is the number of batches this process has taken; it is
  JSON-serialisable and portable across `num_workers` and `prefetch` settings.
  """

  def __init__(self, dataset: grain.MapDataset, *, num_workers: int = 0, prefetch: int = 2):
    super().__init__()
    self._dataset = dataset
    self._num_workers = num_workers
    self._prefetch = prefetch
    self._next_batch = 0
    self._it = None

  def _open(self) -> None:
    it_ds = self._dataset[self._next_batch:].to_iter_dataset(_read_options(self._prefetch))
    if self._num_workers > 0:
      _ensure_absl_flags_parsed()
      it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=self._num_workers, per_worker_buffer_size=max(self._prefetch, 1)))
    self._it = iter(it_ds)

  def __next__(self) -> dict[str, np.ndarray]:
    if self._it is None:
      self._open()
    batch = next(self._it)
    self._next_batch += 1
    return batch

  def get_state(self) -> dict[str, int]:
    return {"next_batch": self._next_batch}

  def set_state(self, state: dict[str, int]) -> None:
    self._drop()
    self._next_batch = int(state["next_batch"])

  def _drop(self) -> None:
    if self._it is not None and hasattr(self._it, "close"):
      self._it.close()
    self._it = None

  def close(self) -> None:
    """Stops prefetch threads and worker processes."""
    self._drop()


def train_iterator(source, indices: np.ndarray, *, global_batch_size: int, image_size: int,
                   seed: int, crop_padding: int = 0, flip: bool = False,
                   process_index: int | None = None, process_count: int | None = None,
                   num_workers: int = 0, prefetch: int = 2) -> TrainIterator:
  """An infinite iterator of this process's train batches.

  Yields ``{"image": float32 [B_local, S, S, 3] in [-1, 1], "label": int32 [B_local]}`` with
  ``B_local = global_batch_size // process_count`` and S = `image_size`. Each epoch over `indices`
  is reshuffled with a seed of (seed, epoch); batches run on across epoch boundaries. The
  iterator's ``get_state()`` is JSON-serialisable and ``set_state(state)`` resumes at exactly the
  next example. Output is identical for any `num_workers` and `prefetch`.
  """
  ds = train_dataset(source, indices, global_batch_size=global_batch_size, image_size=image_size,
                     seed=seed, crop_padding=crop_padding, flip=flip,
                     process_index=process_index, process_count=process_count)
  return TrainIterator(ds, num_workers=num_workers, prefetch=prefetch)


def _ensure_absl_flags_parsed() -> None:
  """grain's worker processes read absl flags; outside an absl app, use their defaults."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


class _EvalBatch:
  """Global positions [B] -> eval batch; positions past the end are zero images with mask False."""

  def __init__(self, source, indices: np.ndarray | None, image_size: int):
    self.source, self.indices, self.image_size = source, indices, image_size
    self.n = len(source) if indices is None else len(indices)

  def __call__(self, positions: np.ndarray) -> dict[str, np.ndarray]:
    positions = np.asarray(positions, np.int64)
    mask = positions < self.n
    real = positions[mask]
    rows = real if self.indices is None else self.indices[real]
    images, labels = read_batch(self.source, rows)
    s, b = self.image_size, len(positions)
    out = {"image": np.zeros((b, s, s, 3), np.float32), "label": np.zeros((b,), np.int32), "mask": mask}
    if len(real):
      got = augment.eval_batch(images, labels, s)
      out["image"][mask] = got["image"]
      out["label"][mask] = got["label"]
    return out


class EvalBatches:
  """Re-iterable eval batches of one process; ``len()`` is the number of local batches."""

  def __init__(self, dataset: grain.MapDataset, num_examples: int, prefetch: int):
    self._dataset = dataset
    self._prefetch = prefetch
    self.num_examples = num_examples

  def __len__(self) -> int:
    return len(self._dataset)

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return iter(self._dataset.to_iter_dataset(_read_options(self._prefetch)))


def eval_batches(source, *, global_batch_size: int, image_size: int,
                 indices: Sequence[int] | np.ndarray | None = None,
                 process_index: int | None = None, process_count: int | None = None,
                 prefetch: int = 2) -> EvalBatches:
  """Every example of `source` (or of `indices`) once, in order, in batches of this process.

  Yields ``{"image": float32 [B_local, S, S, 3], "label": int32 [B_local], "mask": bool [B_local]}``.
  The last global batch is padded with zero images whose mask is False; nothing is dropped.
  """
  p, n_proc = _processes(process_index, process_count)
  local = _local_batch(global_batch_size, n_proc)
  _check_image_size(image_size)
  if indices is not None:
    indices = np.asarray(indices, dtype=np.int64)
  batch_fn = _EvalBatch(source, indices, image_size)
  num_batches = -(-batch_fn.n // global_batch_size)
  ds = grain.MapDataset.range(num_batches * global_batch_size)
  ds = ds.batch(local, drop_remainder=True)[p::n_proc].map(batch_fn)
  return EvalBatches(ds, batch_fn.n, prefetch)
