"""Fixtures for stage-level tests: the embedded datasets built once per session, a tiny config."""

import pytest

from jaxscale.config import base_config

PRETRAIN_DATA = "jaxscale_glyphs/16px_1k"
FINETUNE_DATA = "jaxscale_digits/16px"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  from jaxscale.data import builders
  path = str(tmp_path_factory.mktemp("tfds"))
  builders.ensure_built(PRETRAIN_DATA, path)
  builders.ensure_built(FINETUNE_DATA, path)
  return path


def tiny_config(data_dir: str):
  """vit_tiny_xs, Dp = 208 (4 per class), batch 32, 20 pretrain / 10 fine-tune steps."""
  c = base_config()
  c.data.data_dir = data_dir
  c.model.name = "vit_tiny_xs"
  c.pretrain.dataset = PRETRAIN_DATA
  c.pretrain.size = 208
  c.pretrain.optim.update(batch_size=32, epochs=1.0, min_steps=20, eval_batch_size=256, lr=2e-3)
  c.finetune.dataset = FINETUNE_DATA
  c.finetune.size = 100
  c.finetune.optim.update(batch_size=32, epochs=1.0, min_steps=10, eval_batch_size=256, lr=1e-3)
  c.checkpoint.every_steps = 1000
  return c


@pytest.fixture
def config(data_dir):
  return tiny_config(data_dir)


@pytest.fixture(scope="session")
def make_config():
  """The `tiny_config` function (for fixtures of a wider scope than `config`)."""
  return tiny_config
