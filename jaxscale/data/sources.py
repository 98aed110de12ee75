"""Random-access sources over datasets prepared in ArrayRecord format, opened by name.

A name is a tfds name (``cifar10``, ``imagenet2012:5.1.0``, ``jaxscale_glyphs/16px_30k``) or a
class-subset view (``imagenet100``: the 100 ImageNet classes listed in
``class_lists/imagenet100.txt``, labels renumbered 0-99 in that order). Reading needs no TensorFlow;
only preparing a standard tfds dataset does (``tfds build NAME --file_format=array_record``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import logging
import os
from typing import Any

import numpy as np

from jaxscale.data import builders
from jaxscale.errors import JaxscaleError

logger = logging.getLogger("jaxscale")

# Class-subset views: view name -> (base tfds dataset, class-list file in class_lists/).
VIEWS = {"imagenet100": ("imagenet2012", "imagenet100.txt")}

# Datasets whose classes change under a horizontal flip (letters, digits): flips are refused.
NO_FLIP = ("jaxscale_glyphs", "jaxscale_symbols", "jaxscale_digits", "mnist", "emnist", "kmnist", "svhn_cropped")

_LABEL_CHUNK = 4096  # records read per batch when collecting labels


def class_list(view: str) -> list[str]:
  """The class names (e.g. ImageNet WordNet ids) of class-subset view `view`, in label order."""
  _, filename = VIEWS[view]
  text = importlib.resources.files("jaxscale.data").joinpath("class_lists", filename).read_text()
  return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _base_name(name: str) -> str:
  return name.split("/", 1)[0].split(":", 1)[0]


def _build_command(name: str, data_dir: str) -> str:
  if builders.is_embedded(name):
    return f"jaxscale data build {name}" + (f" --data-dir {data_dir}" if data_dir else "")
  return (f"tfds build {name} --file_format=array_record" + (f" --data_dir={data_dir}" if data_dir else "")
          + " (needs TensorFlow and, for some datasets, manually downloaded files)")


@functools.lru_cache(maxsize=64)
def _builder(name: str, data_dir: str):
  """The tfds builder of `name` (a tfds name, not a view); JaxscaleError if tfds does not know it."""
  import tensorflow_datasets as tfds
  if builders.is_embedded(name):
    return builders.builder(name, data_dir)
  try:
    return tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError:
    raise JaxscaleError(
        f"unknown dataset {name!r}; use an embedded one ({', '.join(builders.embedded_names())}), "
        f"a class-subset view ({', '.join(VIEWS)}) or a tfds dataset name") from None
  except Exception as e:  # e.g. a registered builder whose code needs an unavailable package
    raise JaxscaleError(f"cannot open tfds dataset {name!r}: {' '.join(str(e).split())[:200]}") from None


def _prepared_builder(name: str, split: str, data_dir: str):
  """The builder of a prepared ArrayRecord dataset that has `split`; one-line errors otherwise."""
  b = _builder(name, data_dir)
  if not b.data_path.joinpath("dataset_info.json").exists():
    _builder.cache_clear()  # it may be built later in this process
    raise JaxscaleError(f"dataset {name!r} is not prepared in {b.data_dir_root}; run: {_build_command(name, data_dir)}")
  import tensorflow_datasets as tfds
  if b.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
    raise JaxscaleError(f"dataset {name!r} was prepared as {b.info.file_format.value}, not ArrayRecord; "
                        f"run: tfds build {name} --file_format=array_record --overwrite")
  if split.split("[", 1)[0] not in b.info.splits:
    raise JaxscaleError(f"dataset {name!r} has no split {split!r}; its splits: {', '.join(sorted(b.info.splits))}")
  return b


def _keys(b) -> tuple[str, str]:
  """(image feature, label feature) of a tfds builder."""
  keys = b.info.supervised_keys
  if isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys):
    return keys
  return "image", "label"


def _data_source(b, split: str, decoders=None):
  import tensorflow_datasets as tfds
  return tfds.data_source(_name_of(b), split=split, data_dir=os.fspath(b.data_dir_root),
                          download=False, decoders=decoders)


def _name_of(b) -> str:
  """``name/config:version`` of builder `b`, as tfds.data_source expects."""
  config = f"/{b.builder_config.name}" if b.builder_config else ""
  return f"{b.name}{config}:{b.version}"


@dataclasses.dataclass
class Source:
  """Examples of one split: ``len(src)``; ``src[i] -> {"image": uint8 [H, W, C], "label": int}``.

  Attributes:
    name, split: what was opened.
    num_classes: number of classes (labels are 0 .. num_classes - 1).
    allows_flip: whether a horizontal flip keeps the class (False for letters and digits).
  """
  name: str
  split: str
  num_classes: int
  allows_flip: bool
  records: Any                   # a tfds ArrayRecordDataSource
  image_key: str = "image"
  label_key: str = "label"
  rows: np.ndarray | None = None       # view: rows of `records` in this source
  label_map: np.ndarray | None = None  # view: base label -> label (-1 = not in the view)

  def __len__(self) -> int:
    return len(self.rows) if self.rows is not None else len(self.records)

  def __getitem__(self, i: int) -> dict[str, Any]:
    row = int(self.rows[i]) if self.rows is not None else int(i)
    ex = self.records[row]
    image = np.asarray(ex[self.image_key], dtype=np.uint8)
    if image.ndim == 2:
      image = image[:, :, None]
    label = int(ex[self.label_key])
    if self.label_map is not None:
      label = int(self.label_map[label])
    return {"image": image, "label": label}

  def get_many(self, indices) -> tuple[list[np.ndarray], np.ndarray]:
    """Batched read: (uint8 [H, W, C] images, int64 [len(indices)] labels)."""
    idx = np.asarray(indices, dtype=np.int64)
    rows = self.rows[idx] if self.rows is not None else idx
    examples = self.records.__getitems__(rows.tolist()) if len(rows) else []
    images = [np.asarray(ex[self.image_key], dtype=np.uint8) for ex in examples]
    labels = np.fromiter((int(ex[self.label_key]) for ex in examples), np.int64, len(examples))
    if self.label_map is not None:
      labels = self.label_map[labels]
    return images, labels


def open_source(name: str, split: str, data_dir: str = "") -> Source:
  """Opens split `split` of prepared dataset (or view) `name`; data_dir "" = the tfds default."""
  if name in VIEWS:
    base, _ = VIEWS[name]
    src = open_source(base, split, data_dir)
    label_map = _view_label_map(name, data_dir)
    base_labels = load_labels(base, split, data_dir)
    rows = np.flatnonzero(label_map[base_labels] >= 0).astype(np.int64)
    return dataclasses.replace(src, name=name, num_classes=int(label_map.max()) + 1, rows=rows,
                               label_map=label_map)
  b = _prepared_builder(name, split, data_dir)
  image_key, label_key = _keys(b)
  features = b.info.features
  if image_key not in features or label_key not in features:
    raise JaxscaleError(f"dataset {name!r} has no {image_key!r}/{label_key!r} features; "
                        "use an image classification dataset")
  return Source(name=name, split=split, num_classes=int(features[label_key].num_classes),
                allows_flip=_base_name(name) not in NO_FLIP, records=_data_source(b, split),
                image_key=image_key, label_key=label_key)


def _view_label_map(view: str, data_dir: str) -> np.ndarray:
  """int64 [base num_classes]: base label -> view label, -1 for classes outside the view."""
  base, _ = VIEWS[view]
  feature = _builder(base, data_dir).info.features[_keys(_builder(base, data_dir))[1]]
  label_map = np.full(feature.num_classes, -1, np.int64)
  for new, cls in enumerate(class_list(view)):
    label_map[feature.str2int(cls)] = new
  return label_map


@functools.lru_cache(maxsize=32)
def _cached_labels(name: str, split: str, data_dir: str) -> np.ndarray:
  b = _prepared_builder(name, split, data_dir)
  image_key, label_key = _keys(b)
  cache = b.data_path / f"labels-{split}.npy"
  if cache.exists():
    return np.load(os.fspath(cache))
  import tensorflow_datasets as tfds
  records = _data_source(b, split, decoders={image_key: tfds.decode.SkipDecoding()})
  n = len(records)
  labels = np.empty(n, np.int64)
  for start in range(0, n, _LABEL_CHUNK):
    chunk = records.__getitems__(list(range(start, min(start + _LABEL_CHUNK, n))))
    labels[start:start + len(chunk)] = [int(ex[label_key]) for ex in chunk]
  if n > 10_000 and "://" not in os.fspath(cache):  # cache big label arrays beside the data
    try:
      tmp = f"{os.fspath(cache)}.tmp{os.getpid()}.npy"
      np.save(tmp, labels)
      os.replace(tmp, os.fspath(cache))
    except OSError:
      pass  # a read-only data dir: read them again next time
  return labels


def load_labels(name: str, split: str, data_dir: str = "") -> np.ndarray:
  """int64 [N] labels of every example of the split, in source order, read without decoding images."""
  if name in VIEWS:
    base, _ = VIEWS[name]
    base_labels = load_labels(base, split, data_dir)
    mapped = _view_label_map(name, data_dir)[base_labels]
    return mapped[mapped >= 0]
  labels = _cached_labels(name, split, data_dir)
  labels.flags.writeable = False
  return labels


def prepared_dir(name: str, split: str, data_dir: str = "") -> str:
  """The folder of prepared dataset `name` (a view: its base's), where files kept beside the data go."""
  base = VIEWS[name][0] if name in VIEWS else name
  return os.fspath(_prepared_builder(base, split, data_dir).data_path)


def num_classes(name: str, data_dir: str = "") -> int:
  """Number of classes of dataset or view `name` (needs no prepared data)."""
  if name in VIEWS:
    return len(class_list(name))
  b = _builder(name, data_dir)
  return int(b.info.features[_keys(b)[1]].num_classes)


def allows_flip(name: str) -> bool:
  """Whether a horizontal flip keeps the class of dataset `name`."""
  base = VIEWS[name][0] if name in VIEWS else name
  return _base_name(base) not in NO_FLIP
