"""The embedded tfds datasets (`jaxscale_glyphs`, `jaxscale_symbols`, `jaxscale_digits`) and how to
build them.

`ensure_built(name, data_dir)` is what other code calls: it builds an embedded dataset into the
tfds data dir (ArrayRecord, no TensorFlow needed) unless it is already prepared. Builds are atomic:
tfds writes into an ``incomplete.*`` directory and renames it to ``<version>`` only once every
split and ``dataset_info.json`` are written, so a killed build never reads as prepared. A lock file
beside the dataset keeps two processes from building the same one at once.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import sys
import time
from typing import Iterator

from jaxscale.errors import JaxscaleError

logger = logging.getLogger("jaxscale")

GLYPHS = "jaxscale_glyphs"
DIGITS = "jaxscale_digits"
SYMBOLS = "jaxscale_symbols"


def _classes() -> dict:
  """Embedded dataset name -> its tfds builder class."""
  from jaxscale.data.builders import digits, glyphs, symbols
  return {GLYPHS: glyphs.JaxscaleGlyphs, SYMBOLS: symbols.JaxscaleSymbols, DIGITS: digits.JaxscaleDigits}


def embedded_names() -> list[str]:
  """Every embedded ``dataset/config`` name, e.g. ``jaxscale_glyphs/16px_30k``."""
  return [f"{base}/{c.name}" for base, cls in _classes().items() for c in cls.BUILDER_CONFIGS]


def is_embedded(name: str) -> bool:
  """Whether `name` (``dataset[/config]``) names one of the datasets this package builds."""
  return name.split("/", 1)[0].split(":", 1)[0] in (GLYPHS, SYMBOLS, DIGITS)


def builder(name: str, data_dir: str = ""):
  """The tfds builder of embedded dataset `name`, writing ArrayRecord into `data_dir` ("" = tfds default)."""
  import tensorflow_datasets as tfds
  classes = _classes()  # importing the modules registers the builders with tfds
  base, _, config = name.partition("/")
  if base not in classes:
    raise JaxscaleError(f"{name!r} is not an embedded dataset; embedded: {', '.join(embedded_names())}")
  cls = classes[base]
  configs = [c.name for c in cls.BUILDER_CONFIGS]
  if config not in configs:
    raise JaxscaleError(f"unknown config {config!r} of {base}; use {base}/NAME with NAME one of {', '.join(configs)}")
  return tfds.builder(name, data_dir=data_dir or None, file_format="array_record")


def _prepared(b) -> bool:
  """Whether builder `b`'s version dir is complete (tfds writes dataset_info.json there last, by rename)."""
  return b.data_path.joinpath("dataset_info.json").exists()


def is_built(name: str, data_dir: str = "") -> bool:
  """Whether embedded dataset `name` is prepared in `data_dir`."""
  return _prepared(builder(name, data_dir))


@contextlib.contextmanager
def _build_lock(dataset_dir: str) -> Iterator[None]:
  """An exclusive lock on ``<dataset_dir>.lock`` (local files only; a no-op on gs:// and the like)."""
  if "://" in dataset_dir:
    yield
    return
  import fcntl
  os.makedirs(os.path.dirname(dataset_dir), exist_ok=True)
  with open(dataset_dir + ".lock", "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _remove_stale_incomplete(dataset_dir: str) -> None:
  """Deletes ``incomplete.*`` dirs that killed builds left beside `dataset_dir` (call under the lock)."""
  parent = os.path.dirname(dataset_dir)
  if "://" in parent or not os.path.isdir(parent):
    return
  for entry in os.listdir(parent):
    if entry.startswith("incomplete."):
      shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


@contextlib.contextmanager
def _quiet_tfds() -> Iterator[None]:
  """tfds's console output while it builds: its tqdm bars only on a terminal (elsewhere they are
  escape codes in a log), and never its printed 'Downloading and preparing dataset' lines (nothing
  is downloaded; the log line above says what is built)."""
  import tensorflow_datasets as tfds
  tfds.display_progress_bar(sys.stderr.isatty())
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    tfds.display_progress_bar(True)   # tfds's own default


def ensure_built(name: str, data_dir: str = "") -> None:
  """Builds embedded dataset `name` (e.g. ``jaxscale_glyphs/16px_30k``) unless it is prepared already."""
  b = builder(name, data_dir)
  if _prepared(b):
    return
  with _build_lock(b.data_dir):
    b = builder(name, data_dir)  # another process may have finished it while we waited
    if _prepared(b):
      return
    _remove_stale_incomplete(b.data_dir)
    logger.info("building %s into %s from files inside installed packages (nothing is downloaded)",
                name, b.data_dir)
    t0 = time.monotonic()
    with _quiet_tfds():
      b.download_and_prepare()
    logger.info("built %s in %.1fs", name, time.monotonic() - t0)


def build(name: str, data_dir: str = "") -> str:
  """Builds `name` if needed and returns the prepared directory."""
  ensure_built(name, data_dir)
  return builder(name, data_dir).data_dir
