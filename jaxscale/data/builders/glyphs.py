"""`jaxscale_glyphs`: the embedded pretraining source (52 classes of synthetic Latin letters).

Builder configs ``{16,32}px_{1k,10k,30k,100k,1m}`` differ in resolution and train size; every
config has the same fixed ``test`` split of 50 images per class (2,600) drawn from a separate seed
stream, so it never shares an example with ``train``. See `glyph_render` for the generative model.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jaxscale.data.builders import glyph_render

SEED = 0
TEST_PER_CLASS = 50
SIZES = {"1k": 1_000, "10k": 10_000, "30k": 30_000, "100k": 100_000, "1m": 1_000_000}
RESOLUTIONS = (16, 32)
_CHUNK = 2_000             # examples per worker task
_PARALLEL_FROM = 20_000    # use a process pool from this many examples on


@dataclasses.dataclass
class GlyphsConfig(tfds.core.BuilderConfig):
  """One resolution (pixels) and train-split size."""
  resolution: int = 16
  train_size: int = 10_000


def _configs() -> list[GlyphsConfig]:
  return [GlyphsConfig(name=f"{r}px_{tag}", resolution=r, train_size=n,
                       description=f"{n:,} train images of {r}x{r} pixels, 2,600 test images")
          for r in RESOLUTIONS for tag, n in SIZES.items()]


class JaxscaleGlyphs(tfds.core.GeneratorBasedBuilder):
  """Synthetic letters A-Z, a-z rendered from matplotlib's fonts; example i is a function of (i, seed)."""

  VERSION = tfds.core.Version("1.1.0")
  # Set explicitly: tfds infers it through importlib_resources, which editable installs lack.
  code_path = epath.Path(__file__)
  pkg_dir_path = epath.Path(__file__).parent
  RELEASE_NOTES = {"1.0.0": "First release.",
                   "1.1.0": "Letters always lighter than the background (one polarity)."}
  BUILDER_CONFIGS = _configs()
  DEFAULT_CONFIG_NAME = "16px_10k"

  def _info(self) -> tfds.core.DatasetInfo:
    r = self.builder_config.resolution
    return tfds.core.DatasetInfo(
        builder=self,
        description=("Synthetic grayscale images of the 52 Latin letters (label 0-25 = A-Z, "
                     "26-51 = a-z) from the TrueType fonts that ship with matplotlib: "
                     + ", ".join(glyph_render.FONT_FILES)),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(r, r, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=list(glyph_render.LETTERS)),
            "index": tfds.features.Scalar(dtype=np.int64, doc="example number i (the seed of its image)"),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    c = self.builder_config
    return {
        "train": self._generate_examples("train", c.train_size),
        "test": self._generate_examples("test", TEST_PER_CLASS * glyph_render.NUM_CLASSES),
    }

  def _generate_examples(self, split: str, n: int) -> Iterator[tuple[int, dict]]:
    size = self.builder_config.resolution
    chunks = [(s, min(s + _CHUNK, n), SEED, split, size) for s in range(0, n, _CHUNK)]
    workers = min(os.cpu_count() or 1, 8)
    if n < _PARALLEL_FROM or workers < 2:
      for chunk in chunks:
        yield from glyph_render.render_chunk(chunk)
      return
    # "spawn": the caller may already run JAX threads, which fork() would copy in a bad state.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
      for part in pool.imap(glyph_render.render_chunk, chunks):
        yield from part
