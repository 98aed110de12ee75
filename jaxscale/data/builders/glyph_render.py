"""Renders one synthetic glyph image: example i is a pure function of (i, seed, split stream).

Each image is one character of an alphabet (label = i mod its length): for `jaxscale_glyphs` the 52
Latin letters (A-Z are 0-25, a-z 26-51), for `jaxscale_symbols` the 20 `SYMBOLS`; drawn from a
TrueType font that ships inside matplotlib, then randomly rotated, scaled, sheared, translated,
thickened or thinned, given random foreground/background intensities (the letter always the
lighter one) and Gaussian noise. The base
glyph of (font, letter, stroke) is rendered once per process at ``CANVAS`` pixels and cached; each
example is an affine warp of it, box-downsampled to the target resolution.
"""

from __future__ import annotations

import functools
import math
import os
import string

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxscale.errors import JaxscaleError

LETTERS = string.ascii_uppercase + string.ascii_lowercase
NUM_CLASSES = len(LETTERS)  # 52
# The downstream alphabet: characters no letter class uses (digits and symbols), present in every
# font of FONT_FILES. Pretraining on LETTERS and fine-tuning on SYMBOLS is a transfer to new classes
# drawn by the same generative model.
SYMBOLS = string.digits + "#$%&?@+=<>"

# Fonts in matplotlib's mpl-data/fonts/ttf that hold all 52 letters as letters (the STIX size /
# non-Unicode variants, the DejaVu "Display" files and cmex10/cmsy10 hold symbols instead).
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmti10.ttf", "cmmi10.ttf", "cmss10.ttf", "cmtt10.ttf",
)

# Fonts that draw every SYMBOLS character as itself: the TeX fonts cmr10, cmb10, cmti10 and cmss10
# put other glyphs at '<' and '>' (and cmti10 a pound sign at '$'), cmmi10 Greek letters at most
# symbols; cmtt10 draws them all. Indices into FONT_FILES.
SYMBOL_FONTS = tuple(i for i, f in enumerate(FONT_FILES)
                     if f not in ("cmr10.ttf", "cmb10.ttf", "cmti10.ttf", "cmmi10.ttf", "cmss10.ttf"))

CANVAS = 64          # base glyph canvas (pixels); images are warped here, then box-downsampled
FONT_PX = 40         # font size on the canvas
STROKES = (0, 1, 2)  # extra stroke width on the canvas (0 = the font's own weight)

# Random-transform ranges (on a unit canvas).
ROTATE_DEG = 8.0
SCALE = (0.9, 1.1)
SHEAR = 0.1
SHIFT = 0.05         # fraction of the canvas
NOISE_STD = (0.0, 0.03)
MIN_CONTRAST = 0.4

# Seed streams: the train and test splits never share an example.
STREAMS = {"train": 0, "test": 1}


def font_dir() -> str:
  import matplotlib
  return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


@functools.lru_cache(maxsize=None)
def font_paths() -> tuple[str, ...]:
  """Absolute paths of FONT_FILES; raises JaxscaleError if matplotlib lacks one."""
  paths = tuple(os.path.join(font_dir(), f) for f in FONT_FILES)
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise JaxscaleError(f"matplotlib's font {missing[0]!r} is missing; reinstall matplotlib>=3.10")
  return paths


@functools.lru_cache(maxsize=None)
def _font(path: str) -> ImageFont.FreeTypeFont:
  return ImageFont.truetype(path, FONT_PX)


@functools.lru_cache(maxsize=None)
def base_glyph(font_index: int, char: str, stroke: int) -> Image.Image:
  """Character `char` of font `font_index`, white on black, centred on a CANVAS x CANVAS 'L' image."""
  font = _font(font_paths()[font_index])
  img = Image.new("L", (CANVAS, CANVAS), 0)
  ImageDraw.Draw(img).text((CANVAS / 2, CANVAS / 2), char, fill=255, font=font,
                           anchor="mm", stroke_width=stroke, stroke_fill=255)
  # Centre the ink (anchors differ between fonts).
  box = img.getbbox()
  if box is not None:
    dx = (CANVAS - (box[0] + box[2])) // 2
    dy = (CANVAS - (box[1] + box[3])) // 2
    img = img.transform(img.size, Image.Transform.AFFINE, (1, 0, -dx, 0, 1, -dy))
  return img


def example_rng(index: int, seed: int, split: str) -> np.random.Generator:
  """The generator that decides example `index` of `split` (independent of any other example)."""
  return np.random.default_rng([seed, STREAMS[split], index])


def render(index: int, seed: int, split: str, size: int, alphabet: str = LETTERS,
           fonts: tuple[int, ...] | None = None) -> tuple[np.ndarray, int]:
  """Example `index`: (uint8 [size, size, 1] image, int label in [0, len(alphabet))).

  `fonts` are the indices into FONT_FILES to draw from (None = all of them).
  """
  label = index % len(alphabet)
  rng = example_rng(index, seed, split)
  u = rng.random(12).tolist()
  font_index = (int(u[0] * len(FONT_FILES)) if fonts is None
                else fonts[int(u[0] * len(fonts))])
  stroke = STROKES[int(u[1] * len(STROKES))]
  angle = math.radians(ROTATE_DEG * (2 * u[2] - 1))
  scale = (SCALE[0] + (SCALE[1] - SCALE[0]) * u[3]) * (1.0 - 0.12 * stroke / max(STROKES))
  shear = SHEAR * (2 * u[4] - 1)
  tx, ty = SHIFT * CANVAS * (2 * u[5] - 1), SHIFT * CANVAS * (2 * u[6] - 1)
  bg = (1.0 - MIN_CONTRAST) * u[7]
  fg = bg + MIN_CONTRAST + (1.0 - bg - MIN_CONTRAST) * u[8]
  # Letters are always lighter than the background (as in the downstream digits): a tiny model
  # learns shapes in a few hundred steps instead of first having to learn both polarities.
  noise_std = NOISE_STD[0] + (NOISE_STD[1] - NOISE_STD[0]) * u[10]
  noise = rng.standard_normal((size, size), dtype=np.float32)

  # Forward map about the canvas centre: x' = A x + t, A = rotation(angle) @ shear @ scale.
  # PIL's AFFINE transform wants the inverse map (output pixel -> input pixel).
  c, s = math.cos(angle), math.sin(angle)
  a00, a01, a10, a11 = c * scale, (c * shear - s) * scale, s * scale, (s * shear + c) * scale
  det = a00 * a11 - a01 * a10
  i00, i01, i10, i11 = a11 / det, -a01 / det, -a10 / det, a00 / det
  h = CANVAS / 2
  bx, by = h + tx, h + ty
  coeffs = (i00, i01, h - (i00 * bx + i01 * by), i10, i11, h - (i10 * bx + i11 * by))
  warped = base_glyph(font_index, alphabet[label], stroke).transform(
      (CANVAS, CANVAS), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)
  small = warped.resize((size, size), Image.Resampling.BOX) if size != CANVAS else warped
  ink = np.asarray(small, dtype=np.float32)
  img = (bg * 255.0) + ((fg - bg) * ink) + ((noise_std * 255.0) * noise)
  img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
  return img[:, :, None], label


def render_chunk(args: tuple) -> list[tuple[int, dict]]:
  """tfds examples (key, features) of indices [start, stop); a top-level function for process pools.

  `args` is ``(start, stop, seed, split, size)``, optionally followed by ``alphabet`` and ``fonts``
  (see `render`).
  """
  start, stop, seed, split, size = args[:5]
  alphabet = args[5] if len(args) > 5 else LETTERS
  fonts = args[6] if len(args) > 6 else None
  out = []
  for i in range(start, stop):
    image, label = render(i, seed, split, size, alphabet, fonts)
    out.append((i, {"image": image, "label": label, "index": i}))
  return out
