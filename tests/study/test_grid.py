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


def fixed_budget(config, pretrain_steps=40, finetune_steps=10):
  for stage, n in (("pretrain", pretrain_steps), ("finetune", finetune_steps)):
    config[stage].optim.update(min_steps=n, max_steps=n)
  return config


def _needs(config, group, owner):
  out = {owner[c.pretrain_cell().id] for c in group.cells if c.kind == grid.FINETUNE}
  if group.distils:
    out.add(owner[grid.teacher_of(config.study).id])
  return out - {group.id}


@pytest.mark.parametrize("budget", ["fixed", "epochs"])
def test_groups_pack_cells_by_stage_model_and_kd_in_dependency_order(budget):
  config = study_config()
  if budget == "fixed":
    fixed_budget(config)
  else:
    config.pretrain.optim.update(epochs=1.0, min_steps=1, max_steps=0, batch_size=10)
  groups = grid.groups(config)
  cells = [c for g in groups for c in g.cells]
  assert sorted(c.id for c in cells) == sorted(c.id for c in grid.expand(config))  # every cell once
  owner = {c.id: g.id for g in groups for c in g.cells}
  position = {g.id: i for i, g in enumerate(groups)}
  for g in groups:
    assert {(c.stage, c.model) for c in g.cells} == {(g.stage, g.model)}
    steps = [grid.cell_steps(config, c) for c in g.cells]
    assert g.steps == max(steps) and steps == sorted(steps)   # shorter runs first, the group as its longest
    assert {grid.kd_alpha(config, c) > 0 for c in g.cells} == {g.distils}  # plain runs skip the teacher
    assert all(position[d] < position[g.id] for d in _needs(config, g, owner))
  teacher = grid.teacher_of(config.study)
  if budget == "fixed":
    # every Dp shares a step count: per model one plain and one KD pretraining group, one fine-tune group
    assert [g.id for g in groups] == [
        "pt-vit_tiny_xs-40steps", "pt-vit_tiny_s-40steps", "pt-vit_tiny_xs-kd-40steps",
        "pt-vit_tiny_s-kd-40steps", "ft-vit_tiny_xs-10steps", "ft-vit_tiny_s-10steps"]
    assert owner[teacher.id] == "pt-vit_tiny_xs-40steps"   # the teacher joins its model's plain group
    s = config.study
    assert len(groups[-1].cells) == len(s.dp) * len(s.df) * len(s.arms) * len(s.seeds)
  else:
    # 1 epoch of batch 10: Dp 100 and 300 train 10 and 30 steps, in one group per model and arm (Dp 100
    # first); the teacher (Dp 300) joins its model's plain group
    pt = [g for g in groups if g.stage == "pretrain"]
    assert [g.id for g in pt] == ["pt-vit_tiny_xs-30steps", "pt-vit_tiny_s-30steps", "pt-vit_tiny_xs-kd-30steps",
                                  "pt-vit_tiny_s-kd-30steps"]
    assert owner[teacher.id] == "pt-vit_tiny_xs-30steps"
    assert [c.dp for c in pt[1].cells] == [100, 100, 300, 300]
    assert [grid.cell_steps(config, c) for c in pt[1].cells] == [10, 10, 30, 30]


def test_an_epoch_budget_packs_every_dp_into_one_group_or_equal_parts_by_length():
  """Budgets in epochs give each Dp its own step count; a (stage, model, KD) key is still one group,
  split into equal parts of runs of similar length, each cell keeping its own steps."""
  config = study_config(dp=(100, 400, 200, 300), seeds=(0, 1, 2), arms=("plain",))
  config.pretrain.optim.update(epochs=1.0, min_steps=1, max_steps=0, batch_size=10)
  own = {c.id: grid.cell_steps(config, c) for c in grid.expand(config)}
  assert {own[c.id] for c in grid.expand(config) if c.kind == grid.PRETRAIN} == {10, 20, 30, 40}
  pt = [g for g in grid.groups(config) if g.stage == grid.PRETRAIN]
  assert [(g.id, len(g.cells)) for g in pt] == [("pt-vit_tiny_xs-40steps", 12), ("pt-vit_tiny_s-40steps", 12)]
  assert [c.dp for c in pt[1].cells] == [100] * 3 + [200] * 3 + [300] * 3 + [400] * 3
  config.engine.group_size = 6   # 12 runs per model: two parts of 6, the shorter runs together
  pt = [g for g in grid.groups(config) if g.stage == grid.PRETRAIN and g.model == "vit_tiny_s"]
  assert [(g.id, g.steps) for g in pt] == [("pt-vit_tiny_s-20steps-part0", 20), ("pt-vit_tiny_s-40steps-part1", 40)]
  assert [sorted({c.dp for c in g.cells}) for g in pt] == [[100, 200], [300, 400]]
  assert {grid.cell_steps(config, c) for g in pt for c in g.cells} == {10, 20, 30, 40}


def test_teacher_seed_is_independent_of_the_study_seeds():
  a = grid.teacher_of(study_config(seeds=(0, 1)).study)
  b = grid.teacher_of(study_config(seeds=(4, 5)).study)
  assert a == b and a.seed == 0
  assert grid.teacher_of(study_config(teacher_seed=3).study).seed == 3


def test_group_size_splits_groups():
  config = study_config()
  config.engine.group_size = 3
  groups = grid.groups(config)
  assert max(len(g.cells) for g in groups) == 3
  assert any(g.id.endswith("-part1") for g in groups)
  assert len({g.id for g in groups}) == len(groups)
  fixed_budget(config)
  config.engine.group_size = 10   # 16 fine-tunes per model: two parts of 8 (one program shape), not 10 + 6
  ft = [g for g in grid.groups(config) if g.stage == grid.FINETUNE and g.model == "vit_tiny_s"]
  assert [len(g.cells) for g in ft] == [8, 8]


def test_group_config_wires_the_teacher_and_kd_weight():
  config = study_config()
  groups = grid.groups(config)
  pt = next(g for g in groups if g.stage == grid.PRETRAIN and g.distils)
  c = grid.group_config(config, pt, "/study/cells")
  assert c.model.name == pt.model
  assert c.distill.teacher_checkpoint.endswith("teacher-vit_tiny_xs-dp300-s0/pretrain")
  assert {grid.kd_alpha(config, cell) for cell in pt.cells} == {config.distill.alpha}
  plain = next(g for g in groups if g.stage == grid.PRETRAIN and not g.distils)
  assert grid.group_config(config, plain, "/x").distill.teacher_checkpoint == ""
  ft = next(g for g in groups if g.stage == grid.FINETUNE)
  assert grid.group_config(config, ft, "/x").distill.teacher_checkpoint == ""  # KD during pretraining only
  assert config.distill.teacher_checkpoint == ""  # the study config itself is untouched
