"""Study grid: cell ids, shared pretraining, teacher choice, dependency order, empty grids."""

import pytest

from jaxscale.config import base_config
from jaxscale.errors import JaxscaleError
from jaxscale.study import grid


def study_config(**study):
  c = base_config()
  c.study.update(dict(models=("vit_tiny_xs", "vit_tiny_s"), dp=(300, 100), df=(50, 20),
                      arms=("plain", "distilled"), seeds=(0, 1), teacher_dp=0), **study)
  return c


def test_counts_and_shared_pretraining():
  cells = grid.expand(study_config())
  counts = grid.count(cells)
  assert counts == {"teacher": 1, "pretrain": 2 * 2 * 2 * 2, "finetune": 2 * 2 * 2 * 2 * 2}
  ids = [c.id for c in cells]
  assert len(ids) == len(set(ids))
  # every fine-tune's pretraining cell exists and comes before it
  position = {c.id: i for i, c in enumerate(cells)}
  for c in cells:
    if c.kind == grid.FINETUNE:
      assert position[c.pretrain_cell().id] < position[c.id]
    if c.arm == "distilled":
      assert position[grid.teacher_of(study_config().study).id] < position[c.id]


def test_teacher_defaults_to_smallest_rung_on_largest_dp():
  t = grid.teacher_of(study_config().study)
  assert (t.model, t.dp, t.kind) == ("vit_tiny_xs", 300, "teacher")
  t = grid.teacher_of(study_config(teacher_model="vit_tiny_s", teacher_dp=999).study)
  assert (t.model, t.dp) == ("vit_tiny_s", 999)


def test_ids_are_deterministic_and_readable():
  a = [c.id for c in grid.expand(study_config())]
  b = [c.id for c in grid.expand(study_config())]
  assert a == b
  assert "ft-vit_tiny_s-dp300-distilled-s1-df50" in a


def test_plain_only_study_has_no_teacher():
  cells = grid.expand(study_config(arms=("plain",)))
  assert grid.count(cells)["teacher"] == 0


@pytest.mark.parametrize("field", ["models", "dp", "df", "arms", "seeds"])
def test_empty_grid_is_a_one_line_error(field):
  with pytest.raises(JaxscaleError, match=f"config.study.{field}"):
    grid.expand(study_config(**{field: ()}))


def test_groups_pack_cells_by_model_and_size_in_dependency_order():
  config = study_config()
  groups = grid.groups(config)
  cells = [c for g in groups for c in g.cells]
  assert sorted(c.id for c in cells) == sorted(c.id for c in grid.expand(config))  # every cell once
  kinds = [g.kind for g in groups]
  assert kinds == sorted(kinds, key=["teacher", "pretrain", "finetune"].index)
  for g in groups:
    assert len({(c.model, c.df if c.kind == grid.FINETUNE else c.dp) for c in g.cells}) == 1
  ft = next(g for g in groups if g.kind == grid.FINETUNE)
  s = config.study
  assert len(ft.cells) == len(s.dp) * len(s.arms) * len(s.seeds) and ft.id == f"ft-{ft.model}-df{ft.size}"


def test_group_size_splits_groups():
  config = study_config()
  config.engine.group_size = 3
  groups = grid.groups(config)
  assert max(len(g.cells) for g in groups) == 3
  assert any(g.id.endswith("-part1") for g in groups)
  assert len({g.id for g in groups}) == len(groups)


def test_group_config_wires_the_teacher_and_kd_weight():
  config = study_config()
  groups = grid.groups(config)
  pt = next(g for g in groups if g.kind == grid.PRETRAIN)
  c = grid.group_config(config, pt, "/study/cells")
  assert c.model.name == pt.model
  assert c.distill.teacher_checkpoint.endswith("teacher-vit_tiny_xs-dp300-s0/pretrain")
  alphas = {cell.arm: grid.kd_alpha(config, cell) for cell in pt.cells}
  assert alphas == {"plain": 0.0, "distilled": config.distill.alpha}
  ft = next(g for g in groups if g.kind == grid.FINETUNE)
  assert grid.group_config(config, ft, "/x").distill.teacher_checkpoint == ""  # KD during pretraining only
  assert config.distill.teacher_checkpoint == ""  # the study config itself is untouched
