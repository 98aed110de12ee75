"""The embedded default study's design: fixed budgets along Dp and Df, paired seeds, teacher rule."""

import importlib.util
import os

import pytest

from jaxscale import config as config_lib
from jaxscale.errors import JaxscaleError
from jaxscale.study import grid
from jaxscale.train.steps import num_train_steps

PATH = os.path.join(os.path.dirname(__file__), "..", "configs", "default.py")


def _load(arg=None):
  spec = importlib.util.spec_from_file_location("default_config", PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return config_lib.validate(module.get_config(arg))


@pytest.mark.parametrize("arg", [None, "quick", "digits"])
def test_every_run_of_a_stage_gets_the_same_budget(arg):
  c = _load(arg)
  s = c.study
  pt = {num_train_steps(c.pretrain.optim, dp) for dp in list(s.dp) + [grid.teacher_of(s).dp]}
  ft = {num_train_steps(c.finetune.optim, df) for df in s.df}
  assert pt == {3200} and ft == {150}
  assert c.pretrain.optim.batch_size == 32 and c.finetune.optim.batch_size == 32


def test_quick_is_a_subset_of_the_full_study():
  full, quick = _load(), _load("quick")
  ids = {cell.id for cell in grid.expand(full)}
  assert {cell.id for cell in grid.expand(quick)} <= ids
  assert len(grid.expand(quick)) < len(grid.expand(full)) / 3


def test_teacher_is_the_smallest_rung_on_more_data_than_any_student():
  c = _load()
  teacher = grid.teacher_of(c.study)
  assert teacher.model == c.study.models[0] == "vit_tiny_xxs"
  assert teacher.dp > max(c.study.dp)
  assert grid.teacher_of(_load("quick").study) == teacher   # the first look keeps the same teacher
  from jaxscale import models
  sizes = [models.param_count(m, 52, 16) for m in c.study.models]
  assert sizes == sorted(sizes) and sizes[-1] / sizes[0] > 3


def test_paired_seeds_and_downstream_task():
  c = _load()
  assert c.study.arms == ("plain", "distilled", "smoothed") and len(c.study.seeds) >= 3
  # the Dp range spans two decades and reaches 4x the earlier default's 4,000
  assert max(c.study.dp) / min(c.study.dp) >= 100 and max(c.study.dp) >= 16000
  # five seeds in one look (benchmarks/sim_designs.py chose it; tests/benchmarks check the choice);
  # no variant runs adaptive rounds unless asked
  assert len(c.study.seeds) == 5 and not c.study.adaptive and c.study.max_runs == 0
  assert not _load("quick").study.adaptive and not _load("pruning").study.adaptive
  assert c.finetune.dataset == "jaxscale_symbols/16px"
  assert _load("digits").finetune.dataset == "jaxscale_digits/16px"


def test_unknown_variant_is_one_line():
  with pytest.raises(JaxscaleError, match="unknown variant 'big'"):
    _load("big")
