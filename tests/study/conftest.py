"""Study-test fixtures: the embedded datasets the smoke study reads, built once per test module."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))   # smoke_cli: running the smoke study as a user would


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  from jaxscale.data import builders
  path = str(tmp_path_factory.mktemp("tfds"))
  builders.ensure_built("jaxscale_glyphs/16px_1k", path)
  builders.ensure_built("jaxscale_digits/16px", path)
  return path
