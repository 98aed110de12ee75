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


def test_cell_config_wires_checkpoints_and_teacher():
  config = study_config()
  cells = grid.expand(config)
  ft = next(c for c in cells if c.kind == grid.FINETUNE and c.arm == "distilled")
  c = grid.cell_config(config, ft, "/study/cells")
  assert c.model.name == ft.model and c.pretrain.size == ft.dp and c.finetune.size == ft.df
  assert c.seed == ft.seed
  assert c.finetune.init_checkpoint == f"/study/cells/{ft.pretrain_cell().id}/pretrain"
  assert c.distill.teacher_checkpoint.endswith("teacher-vit_tiny_xs-dp300-s0/pretrain")
  plain = next(c for c in cells if c.kind == grid.PRETRAIN and c.arm == "plain")
  assert grid.cell_config(config, plain, "/x").distill.teacher_checkpoint == ""
  assert config.distill.teacher_checkpoint == ""  # the study config itself is untouched
