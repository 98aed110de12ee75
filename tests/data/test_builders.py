"""The embedded builders: shapes, class counts, determinism, splits, idempotent and atomic builds."""

import hashlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxscale.data import builders, sources
from jaxscale.data.builders import digits, glyph_render
from jaxscale.errors import JaxscaleError

GLYPHS = "jaxscale_glyphs/16px_1k"


def _raw(name, split, data_dir):
  b = builders.builder(name, data_dir)
  return tfds.data_source(f"{name}:{b.version}", split=split, data_dir=data_dir, download=False)


def test_glyph_shapes_and_class_counts(data_dir):
  train = sources.open_source(GLYPHS, "train", data_dir)
  test = sources.open_source(GLYPHS, "test", data_dir)
  assert (len(train), len(test)) == (1000, 2600)
  ex = train[0]
  assert ex["image"].shape == (16, 16, 1) and ex["image"].dtype == np.uint8
  assert train.num_classes == 52 and not train.allows_flip
  counts = np.bincount(sources.load_labels(GLYPHS, "train", data_dir), minlength=52)
  assert counts.min() >= 1000 // 52 and counts.max() <= 1000 // 52 + 1
  assert set(np.bincount(sources.load_labels(GLYPHS, "test", data_dir))) == {50}


def test_glyph_record_is_a_pure_function_of_its_index(data_dir):
  raw = _raw(GLYPHS, "train", data_dir)
  for row in (0, 17, 999):
    ex = raw[row]
    image, label = glyph_render.render(int(ex["index"]), 0, "train", 16)
    np.testing.assert_array_equal(ex["image"], image)
    assert int(ex["label"]) == label == int(ex["index"]) % 52


def _digest(index: int) -> str:
  image, label = glyph_render.render(index, 0, "train", 32)
  return hashlib.sha256(image.tobytes() + bytes([label])).hexdigest()


def test_glyph_render_identical_across_processes():
  code = ("from jaxscale.data.builders import glyph_render as g; import hashlib\n"
          "im, l = g.render(12345, 0, 'train', 32)\n"
          "print(hashlib.sha256(im.tobytes() + bytes([l])).hexdigest())")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == _digest(12345)
  assert _digest(12345) != _digest(12346)


def test_glyph_train_and_test_share_no_image(data_dir):
  def hashes(split):
    src = sources.open_source(GLYPHS, split, data_dir)
    images, _ = src.get_many(np.arange(len(src)))
    return {im.tobytes() for im in images}
  train, test = hashes("train"), hashes("test")
  assert len(test) == 2600 and not train & test


def test_digits_split_is_stratified_and_disjoint(data_dir):
  name = "jaxscale_digits/16px"
  train_idx = np.array([int(ex["index"]) for ex in _raw(name, "train", data_dir)])
  test_idx = np.array([int(ex["index"]) for ex in _raw(name, "test", data_dir)])
  assert (len(train_idx), len(test_idx)) == (1437, 360)
  assert not set(train_idx) & set(test_idx) and len(set(train_idx) | set(test_idx)) == 1797
  test_counts = np.bincount(sources.load_labels(name, "test", data_dir), minlength=10)
  all_counts = np.bincount(sources.load_labels(name, "train", data_dir), minlength=10) + test_counts
  np.testing.assert_allclose(test_counts, all_counts * 360 / 1797, atol=1.0)
  src = sources.open_source(name, "test", data_dir)
  assert src[0]["image"].shape == (16, 16, 1) and src.num_classes == 10


def test_digits_resize_keeps_the_digit():
  from sklearn.datasets import load_digits
  d = load_digits()
  small = digits.resize(d.images[0], 16)[:, :, 0].astype(float)
  back = small.reshape(8, 2, 8, 2).mean(axis=(1, 3))
  assert np.corrcoef(back.ravel(), d.images[0].ravel())[0, 1] > 0.9


def test_ensure_built_is_idempotent(data_dir):
  info = os.path.join(builders.builder(GLYPHS, data_dir).data_dir, "dataset_info.json")
  before = os.stat(info).st_mtime_ns
  builders.ensure_built(GLYPHS, data_dir)
  assert os.stat(info).st_mtime_ns == before


def test_unknown_embedded_config():
  with pytest.raises(JaxscaleError, match="unknown config '8px'"):
    builders.builder("jaxscale_glyphs/8px")


def test_killed_build_never_reads_as_complete(tmp_path):
  name = "jaxscale_glyphs/16px_10k"
  root = str(tmp_path)
  code = ("import tensorflow_datasets as tfds; tfds.disable_progress_bar()\n"
          f"from jaxscale.data import builders; builders.ensure_built({name!r}, {root!r})")
  proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
  config_dir = tmp_path / "jaxscale_glyphs" / "16px_10k"
  deadline = time.monotonic() + 60
  while time.monotonic() < deadline and not any(
      p.name.startswith("incomplete.") for p in (config_dir.iterdir() if config_dir.exists() else [])):
    time.sleep(0.05)
  time.sleep(0.3)
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  assert any(p.name.startswith("incomplete.") for p in config_dir.iterdir())
  assert not builders.is_built(name, root)
  with pytest.raises(JaxscaleError, match=f"run: jaxscale data build {name} --data-dir"):
    sources.open_source(name, "train", root)
  builders.ensure_built(name, root)
  assert builders.is_built(name, root)
  assert not any(p.name.startswith("incomplete.") for p in config_dir.iterdir())
  assert len(sources.open_source(name, "train", root)) == 10_000


# ----------------------------------------------------------------------------- jaxscale_symbols

SYMBOLS = "jaxscale_symbols/16px"
# sha256 of 40 letter and 40 symbol images (see test_glyph_images_pinned), with Pillow's bundled
# FreeType of the pinned Pillow version.
PINNED_DIGEST = "1360a6a8649acf206368d59f8b162a35b3538fcd43fe5d99514359524717365f"


@pytest.fixture(scope="module")
def symbols_dir(tmp_path_factory, monkeypatch_module) -> str:
  """jaxscale_symbols/16px built with every network connection refused (nothing may download)."""
  import socket

  def refuse(*args, **kwargs):
    raise AssertionError("the symbols build tried to open a network connection")
  monkeypatch_module.setattr(socket.socket, "connect", refuse)
  monkeypatch_module.setattr(socket, "create_connection", refuse)
  root = str(tmp_path_factory.mktemp("tfds_symbols"))
  builders.ensure_built(SYMBOLS, root)
  return root


@pytest.fixture(scope="module")
def monkeypatch_module():
  with pytest.MonkeyPatch.context() as mp:
    yield mp


def test_symbols_shapes_splits_and_class_counts(symbols_dir):
  from jaxscale.data.builders import symbols
  train = sources.open_source(SYMBOLS, "train", symbols_dir)
  test = sources.open_source(SYMBOLS, "test", symbols_dir)
  assert (len(train), len(test)) == (10_000, 5_000)
  assert train.num_classes == symbols.NUM_CLASSES == 20 and not train.allows_flip
  assert train[0]["image"].shape == (16, 16, 1) and train[0]["image"].dtype == np.uint8
  assert set(np.bincount(sources.load_labels(SYMBOLS, "train", symbols_dir), minlength=20)) == {500}
  assert set(np.bincount(sources.load_labels(SYMBOLS, "test", symbols_dir), minlength=20)) == {250}
  assert "jaxscale_symbols/16px" in builders.embedded_names()


def test_symbols_record_is_a_pure_function_of_its_index(symbols_dir):
  from jaxscale.data.builders import symbols
  for split, rows in (("train", (0, 123, 9_999)), ("test", (0, 4_999))):
    raw = _raw(SYMBOLS, split, symbols_dir)
    for row in rows:
      ex = raw[row]
      image, label = glyph_render.render(int(ex["index"]), symbols.SEED, split, 16,
                                         glyph_render.SYMBOLS, glyph_render.SYMBOL_FONTS)
      np.testing.assert_array_equal(ex["image"], image)
      assert int(ex["label"]) == label == int(ex["index"]) % 20


def test_symbols_train_and_test_share_no_image(symbols_dir):
  def hashes(split):
    images, _ = sources.open_source(SYMBOLS, split, symbols_dir).get_many(
        np.arange(len(sources.open_source(SYMBOLS, split, symbols_dir))))
    return {im.tobytes() for im in images}
  train, test = hashes("train"), hashes("test")
  assert len(test) == 5_000 and not train & test


def test_symbol_classes_are_new_to_pretraining():
  assert not set(glyph_render.SYMBOLS) & set(glyph_render.LETTERS)
  assert len(set(glyph_render.SYMBOLS)) == len(glyph_render.SYMBOLS) == 20
  # The TeX fonts that draw other glyphs at some symbols are left out; the rest are all drawn from.
  fonts = {glyph_render.FONT_FILES[i] for i in glyph_render.SYMBOL_FONTS}
  assert not fonts & {"cmmi10.ttf", "cmr10.ttf"} and "cmtt10.ttf" in fonts and len(fonts) == 17
  picked = {glyph_render.render(i, 1, "train", 16, glyph_render.SYMBOLS, glyph_render.SYMBOL_FONTS)[1]
            for i in range(40)}
  assert picked == set(range(20))


def _content_digest(name: str, data_dir: str) -> str:
  """sha256 over every split's (index, label, image) in index order: the dataset's content."""
  h = hashlib.sha256()
  for split in ("train", "test"):
    rows = sorted(((int(ex["index"]), int(ex["label"]), np.asarray(ex["image"]).tobytes())
                   for ex in _raw(name, split, data_dir)))
    for index, label, image in rows:
      h.update(index.to_bytes(8, "little") + label.to_bytes(2, "little") + image)
  return h.hexdigest()


def test_builds_are_deterministic_across_processes(data_dir, symbols_dir, tmp_path):
  """Building again in a fresh process gives byte-identical content (glyphs and symbols)."""
  root = str(tmp_path)
  code = ("import tensorflow_datasets as tfds; tfds.disable_progress_bar()\n"
          "from jaxscale.data import builders\n"
          f"builders.ensure_built({GLYPHS!r}, {root!r}); builders.ensure_built({SYMBOLS!r}, {root!r})")
  subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
  assert _content_digest(GLYPHS, root) == _content_digest(GLYPHS, data_dir)
  assert _content_digest(SYMBOLS, root) == _content_digest(SYMBOLS, symbols_dir)


def test_glyph_images_pinned():
  """A digest of letter and symbol images pinned: a change to the renderer (or to PIL/FreeType
  output) that alters the data fails here instead of silently changing a study's results."""
  h = hashlib.sha256()
  for i in range(0, 520, 13):
    h.update(glyph_render.render(i, 0, "train", 16)[0].tobytes())
    h.update(glyph_render.render(i, 1, "test", 16, glyph_render.SYMBOLS, glyph_render.SYMBOL_FONTS)[0].tobytes())
  assert h.hexdigest() == PINNED_DIGEST
