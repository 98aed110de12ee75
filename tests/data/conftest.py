"""Small embedded datasets built once per test session into a temporary tfds data dir."""

import pytest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  import tensorflow_datasets as tfds
  from jaxscale.data import builders
  tfds.disable_progress_bar()
  root = str(tmp_path_factory.mktemp("tfds"))
  builders.ensure_built("jaxscale_glyphs/16px_1k", root)
  builders.ensure_built("jaxscale_digits/16px", root)
  return root
