"""`jaxscale_symbols`: the embedded synthetic downstream task (20 classes no pretraining class uses).

The digits 0-9 and the symbols ``# $ % & ? @ + = < >`` drawn by the same generative model as
`jaxscale_glyphs` (fonts, affine jitter, stroke, contrast, noise; see `glyph_render`), from the 17
fonts that draw every one of them as itself (`glyph_render.SYMBOL_FONTS`). Pretraining on the
letters and fine-tuning here is a transfer to new classes of the same image distribution, with a
test split large enough to resolve small differences: 250 images per class (5,000), so one run's
error e has a binomial standard error sqrt(e (1 - e) / 5000) <= 0.0071.

Configs ``16px`` and ``32px``: 10,000 train images (500 per class) and 5,000 test images, each
example a pure function of (index, SEED, split); train and test come from separate seed streams.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jaxscale.data.builders import glyph_render

SEED = 1                  # not the letters' seed: example i here shares no draw with letter i
TRAIN_PER_CLASS = 500
TEST_PER_CLASS = 250
NUM_CLASSES = len(glyph_render.SYMBOLS)  # 20
RESOLUTIONS = (16, 32)


@dataclasses.dataclass
class SymbolsConfig(tfds.core.BuilderConfig):
  resolution: int = 16


class JaxscaleSymbols(tfds.core.GeneratorBasedBuilder):
  """Synthetic digits and symbols (20 classes), 10,000 train / 5,000 test images."""

  VERSION = tfds.core.Version("1.0.0")
  # Set explicitly: tfds infers it through importlib_resources, which editable installs lack.
  code_path = epath.Path(__file__)
  pkg_dir_path = epath.Path(__file__).parent
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [SymbolsConfig(name=f"{r}px", resolution=r,
                                   description=f"{r}x{r} pixels, 10,000 train and 5,000 test images")
                     for r in RESOLUTIONS]
  DEFAULT_CONFIG_NAME = "16px"

  def _info(self) -> tfds.core.DatasetInfo:
    r = self.builder_config.resolution
    return tfds.core.DatasetInfo(
        builder=self,
        description=("Synthetic grayscale images of the digits 0-9 and the symbols # $ % & ? @ + = < > "
                     "(labels 0-19 in that order), rendered like jaxscale_glyphs from matplotlib's fonts: "
                     + ", ".join(glyph_render.FONT_FILES[i] for i in glyph_render.SYMBOL_FONTS)),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(r, r, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=list(glyph_render.SYMBOLS)),
            "index": tfds.features.Scalar(dtype=np.int64, doc="example number i (the seed of its image)"),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {"train": self._generate_examples("train", TRAIN_PER_CLASS * NUM_CLASSES),
            "test": self._generate_examples("test", TEST_PER_CLASS * NUM_CLASSES)}

  def _generate_examples(self, split: str, n: int) -> Iterator[tuple[int, dict]]:
    # 15,000 images render in a few seconds in one process (no pool needed).
    yield from glyph_render.render_chunk((0, n, SEED, split, self.builder_config.resolution,
                                          glyph_render.SYMBOLS, glyph_render.SYMBOL_FONTS))
