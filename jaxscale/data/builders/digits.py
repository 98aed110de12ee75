"""`jaxscale_digits`: the embedded downstream task (UCI handwritten digits from scikit-learn).

The 1,797 8x8 images (intensities 0-16) that ship inside scikit-learn, split once into a fixed
stratified train/test split of 1,437/360 and resized to 16x16 or 32x32 uint8 (bilinear).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

TEST_SIZE = 360
SPLIT_SEED = 0


@dataclasses.dataclass
class DigitsConfig(tfds.core.BuilderConfig):
  resolution: int = 16


def split_indices() -> dict[str, np.ndarray]:
  """The fixed stratified split: {"train": int64 [1437], "test": int64 [360]} indices into load_digits()."""
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split
  y = load_digits().target
  train, test = train_test_split(np.arange(len(y)), test_size=TEST_SIZE, stratify=y,
                                 random_state=SPLIT_SEED)
  return {"train": np.sort(train).astype(np.int64), "test": np.sort(test).astype(np.int64)}


def resize(image8: np.ndarray, size: int) -> np.ndarray:
  """An 8x8 image with values 0-16 -> uint8 [size, size, 1] (bilinear)."""
  u8 = np.clip(np.rint(image8 * (255.0 / 16.0)), 0, 255).astype(np.uint8)
  img = Image.fromarray(u8, mode="L").resize((size, size), Image.Resampling.BILINEAR)
  return np.asarray(img, dtype=np.uint8)[:, :, None]


class JaxscaleDigits(tfds.core.GeneratorBasedBuilder):
  """UCI handwritten digits 0-9 (scikit-learn's copy), fixed stratified split, resized."""

  VERSION = tfds.core.Version("1.0.0")
  # Set explicitly: tfds infers it through importlib_resources, which editable installs lack.
  code_path = epath.Path(__file__)
  pkg_dir_path = epath.Path(__file__).parent
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [DigitsConfig(name=f"{r}px", resolution=r, description=f"{r}x{r} pixels")
                     for r in (16, 32)]
  DEFAULT_CONFIG_NAME = "16px"

  def _info(self) -> tfds.core.DatasetInfo:
    r = self.builder_config.resolution
    return tfds.core.DatasetInfo(
        builder=self,
        description="UCI ML handwritten digits (sklearn.datasets.load_digits), resized from 8x8.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(r, r, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=10),
            "index": tfds.features.Scalar(dtype=np.int64, doc="row in sklearn's load_digits()"),
        }),
        supervised_keys=("image", "label"),
        homepage="https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(idx) for split, idx in split_indices().items()}

  def _generate_examples(self, indices: np.ndarray) -> Iterator[tuple[int, dict]]:
    from sklearn.datasets import load_digits
    digits = load_digits()
    size = self.builder_config.resolution
    for i in indices:
      yield int(i), {"image": resize(digits.images[i], size), "label": int(digits.target[i]),
                     "index": int(i)}
