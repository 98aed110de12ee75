"""Offline stand-ins for the paper's datasets: tiny tfds datasets with the real names and features.

A stand-in is built by the dataset's own tfds builder class (same name, version, feature spec,
supervised keys and ArrayRecord layout as ``tfds build NAME --file_format=array_record``) whose
split generators are replaced by generated examples, so nothing is downloaded. Images are
encoded as the real dataset stores them: JPEG at about ImageNet's resolution for ``imagenet2012``,
``oxford_flowers102`` and ``oxford_iiit_pet`` (decoding them is the real input cost), PNG at the
fixed sizes of ``cifar100`` (32 px) and ``imagenet_resized/64x64``. Each class gets its own colour
and stripe pattern plus noise, so a few steps can lower the loss.

``build(name, data_dir, {"train": n, ...}, classes=None)``; ``classes`` restricts the labels (e.g.
the ImageNet-100 view's classes, so that ``imagenet100`` has examples).
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

PAPER = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "paper.py")

# Stored resolution of the variable-size datasets (ImageNet's mean is about 400 x 350).
JPEG_SIZES = ((256, 320), (300, 256), (240, 240))


def _pattern(label: int, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
  """uint8 [H, W, C]: a class colour with class-dependent stripes, plus noise."""
  h, w, c = shape
  colour = np.random.default_rng(label).uniform(40, 215, size=c)
  period = 4 + label % 13
  stripes = ((np.arange(w)[None, :] + np.arange(h)[:, None] * (label % 3)) // period) % 2
  img = colour[None, None, :] + 30.0 * stripes[:, :, None] + rng.normal(0, 12, size=(h, w, c))
  return np.clip(img, 0, 255).astype(np.uint8)


def _encode(array: np.ndarray, fmt: str) -> bytes:
  buf = io.BytesIO()
  im = Image.fromarray(array[:, :, 0] if array.shape[-1] == 1 else array)
  im.save(buf, format="JPEG", quality=90) if fmt == "jpeg" else im.save(buf, format="PNG")
  return buf.getvalue()


def _fake_value(feature, key: str, label: int, i: int, rng: np.random.Generator):
  import tensorflow_datasets as tfds
  f = tfds.features
  if isinstance(feature, f.Image):
    h, w, c = feature.shape
    if h is None or w is None:
      h, w = JPEG_SIZES[i % len(JPEG_SIZES)]
    fmt = feature.encoding_format or ("jpeg" if feature.shape[0] is None else "png")
    return _encode(_pattern(label, (h, w, c), rng), fmt)
  if isinstance(feature, f.ClassLabel):
    return label % feature.num_classes
  if isinstance(feature, f.Text):
    return f"{key}_{i:06d}"
  if isinstance(feature, f.BBoxFeature):
    return f.BBox(0.1, 0.2, 0.8, 0.9)
  raise TypeError(f"no stand-in value for feature {key!r} ({type(feature).__name__})")


def builder_class(name: str):
  """A subclass of tfds's builder for `name` (``dataset[/config]``) that generates stand-in splits."""
  import tensorflow_datasets as tfds
  base = tfds.builder_cls(name.split("/", 1)[0])

  class StandIn(base, skip_registration=True):
    MANUAL_DOWNLOAD_INSTRUCTIONS = None

    def __init__(self, *, splits, classes, seed, **kwargs):
      self._standin = (dict(splits), classes, seed)
      super().__init__(**kwargs)

    def _split_generators(self, dl_manager):
      splits, _, _ = self._standin
      return {split: self._standin_examples(split, n) for split, n in splits.items()}

    def _standin_examples(self, split: str, n: int):
      _, classes, seed = self._standin
      features = self.info.features
      label_key = self.info.supervised_keys[1]
      labels = list(range(features[label_key].num_classes)) if classes is None else list(classes)
      rng = np.random.default_rng([seed, sum(map(ord, split))])
      for i in range(n):
        label = labels[i % len(labels)]
        yield f"{split}_{i}", {k: (label if k == label_key else _fake_value(feat, k, label, i, rng))
                               for k, feat in features.items()}

    def _generate_examples(self, *args, **kwargs):  # the real one reads downloaded files
      raise NotImplementedError

  StandIn.name = base.name
  return StandIn


def build(name: str, data_dir: str, splits: dict[str, int], classes=None, seed: int = 0) -> str:
  """Prepares stand-in `name` in `data_dir` as ArrayRecord; returns its version directory."""
  import tensorflow_datasets as tfds
  config = name.split("/", 1)[1] if "/" in name else None
  cls = builder_class(name)
  b = cls(splits=splits, classes=classes, seed=seed, data_dir=data_dir, config=config,
          file_format="array_record")
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=data_dir))
  return str(b.data_path)


def imagenet100_classes(data_dir: str, per_view: int | None = None) -> list[int]:
  """imagenet2012 label ids of the ImageNet-100 view's classes (the first `per_view` of them)."""
  import tensorflow_datasets as tfds
  from jaxscale.data import sources
  feature = tfds.builder("imagenet2012", data_dir=data_dir).info.features["label"]
  wnids = sources.class_list("imagenet100")[:per_view]
  return [feature.str2int(w) for w in wnids]
