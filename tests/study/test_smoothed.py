"""The smoothed control arm: the KD loss against a uniform teacher (label smoothing), its cells and
groups, its validation, and a smoothed run's independence of the teacher's values."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxscale import cli
from jaxscale.config import base_config, load, validate
from jaxscale.errors import JaxscaleError
from jaxscale.study import grid, runner
from jaxscale.train import loop, losses

SMOKE = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "smoke.py")
ARMS3 = ("plain", "distilled", "smoothed")


# ----------------------------------------------------------------------------- the loss

@pytest.mark.parametrize("alpha", [0.3, 0.9])
def test_kd_loss_with_a_uniform_teacher_is_label_smoothing(alpha):
  """T = 1: (1 - a) CE(y, s) + a KL(u || softmax(s)) = CE(smooth_labels(y, a), s) - a log K, so the
  two losses have the same gradient (Yuan et al. 2020)."""
  rng = np.random.default_rng(0)
  k = 7
  s = jnp.asarray(rng.normal(size=(5, k)) * 3, jnp.float32)
  y = jnp.asarray(rng.integers(0, k, 5))
  uniform = jnp.zeros_like(s)   # softmax of constant logits
  smoothed = lambda s: jnp.mean(optax.softmax_cross_entropy(s, optax.smooth_labels(jax.nn.one_hot(y, k), alpha)))
  kd = lambda s: losses.kd_loss(s, uniform, y, alpha, 1.0)
  np.testing.assert_allclose(kd(s), smoothed(s) - alpha * np.log(k), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(jax.grad(kd)(s), jax.grad(smoothed)(s), rtol=1e-5, atol=1e-7)
  # the teacher's logits matter only up to a constant shift: any constant row is the uniform teacher
  np.testing.assert_allclose(losses.kd_loss(s, uniform + 4.0, y, alpha, 1.0), kd(s), rtol=1e-6)
  # and a real teacher gives another loss
  assert abs(float(losses.kd_loss(s, s[::-1], y, alpha, 1.0) - kd(s))) > 1e-3


def test_kd_loss_with_a_uniform_teacher_at_temperature_t():
  """Any T: the KD term is T^2 (CE(u, s / T) - log K), a smoothing toward uniform of the tempered student."""
  rng = np.random.default_rng(1)
  k, t, alpha = 5, 2.0, 0.5
  s = jnp.asarray(rng.normal(size=(6, k)) * 2, jnp.float32)
  y = jnp.asarray(rng.integers(0, k, 6))
  u = jnp.full((6, k), 1.0 / k)
  ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(s, y))
  expected = (1 - alpha) * ce + alpha * t ** 2 * (jnp.mean(optax.softmax_cross_entropy(s / t, u)) - np.log(k))
  np.testing.assert_allclose(losses.kd_loss(s, jnp.zeros_like(s), y, alpha, t), expected, rtol=1e-5)


# ----------------------------------------------------------------------------- the grid

def study_config(**study):
  c = base_config()
  c.study.update(dict(models=("vit_tiny_xs", "vit_tiny_s"), dp=(300, 100), df=(50, 20), arms=ARMS3,
                      seeds=(0, 1), teacher_dp=0), **study)
  for stage, n in (("pretrain", 40), ("finetune", 10)):
    c[stage].optim.update(min_steps=n, max_steps=n)
  return c


def test_a_study_with_the_smoothed_arm_has_its_cells_in_the_distilling_groups():
  config = study_config()
  cells = grid.expand(config)
  assert grid.count(cells) == {"teacher": 1, "pretrain": 2 * 2 * 3 * 2, "finetune": 2 * 2 * 3 * 2 * 2}
  assert "pt-vit_tiny_s-dp300-smoothed-s1" in {c.id for c in cells}
  alpha = config.distill.alpha
  for c in cells:
    pretraining = c.kind == grid.PRETRAIN
    assert grid.kd_alpha(config, c) == (alpha if pretraining and c.arm in ("distilled", "smoothed") else 0.0)
    assert grid.uniform_teacher(config, c) == (pretraining and c.arm == "smoothed")
  groups = grid.groups(config)
  # no extra program: per model one plain and one KD pretraining group, one fine-tune group
  assert [g.id for g in groups] == [
      "pt-vit_tiny_xs-40steps", "pt-vit_tiny_s-40steps", "pt-vit_tiny_xs-kd-40steps",
      "pt-vit_tiny_s-kd-40steps", "ft-vit_tiny_xs-10steps", "ft-vit_tiny_s-10steps"]
  for g in groups:
    if g.stage == grid.PRETRAIN:
      assert {c.arm for c in g.cells} - {"plain"} == ({"distilled", "smoothed"} if g.distils else set())
    cfg = grid.group_config(config, g, "/study/cells")
    assert bool(cfg.distill.teacher_checkpoint) == g.distils
  ft = [c for c in cells if c.kind == grid.FINETUNE and c.arm == "smoothed"]
  assert {runner.run_of(config, c, "/cells").init for c in ft} == {
      grid.run_dir("/cells", c.pretrain_cell()) for c in ft}


def test_the_smoothed_arm_distils_in_the_stage_the_distilled_arm_does():
  config = study_config()
  config.distill.stage = "both"
  cells = grid.expand(config)
  assert {grid.uniform_teacher(config, c) for c in cells if c.arm == "smoothed"} == {True}
  assert not any(grid.uniform_teacher(config, c) for c in cells if c.arm != "smoothed")
  run = runner.run_of(config, next(c for c in cells if c.arm == "smoothed" and c.kind == grid.FINETUNE), "/c")
  assert run.uniform_teacher and run.alpha == config.distill.alpha
  config.distill.alpha = 0.0   # no KD term: the smoothed arm trains as the plain one
  assert not any(grid.uniform_teacher(config, c) for c in grid.expand(config))


@pytest.mark.parametrize("arms, needle", [
    (("plain", "smooth"), "'smooth'"),
    (("plain", "smoothed"), "but not .distilled."),
])
def test_bad_arms_are_refused(arms, needle):
  config = study_config(arms=arms)
  with pytest.raises(JaxscaleError, match=needle):
    validate(config)


@pytest.mark.parametrize("arms, needle", [
    ("('plain','control')", "config.study.arms"),
    ("('plain','smoothed')", "'distilled'"),
])
def test_bad_arms_are_one_line_cli_errors(tmp_path, capsys, arms, needle):
  code = cli.main(["study", "--config", SMOKE, "--workdir", str(tmp_path / "w"), "--dry-run",
                   f"--config.study.arms={arms}", f"--config.data.data_dir={tmp_path / 'data'}"])
  err = capsys.readouterr().err
  assert code == 2 and needle in err and err.count("\n") == 1
  assert not (tmp_path / "w").exists()


def test_records_name_the_arm(data_dir):
  config = load(SMOKE, [f"--config.data.data_dir={data_dir}", f"--config.study.arms={ARMS3}"])
  cell = next(c for c in grid.expand(config) if c.arm == "smoothed" and c.kind == grid.FINETUNE)
  result = {"params": 10, "subset_hash": "h", "steps": 10, "eval_error": 0.5, "eval_loss": 1.0,
            "eval_count": 100, "diverged_at": None, "wall_s": 1.0, "group_size": 1}
  config.model.name = cell.model
  rec = runner.record_of(config, cell, result)
  assert (rec["arm"], rec["distilled"], rec["teacher"], rec["alpha"]) == ("smoothed", False, "", 0.0)
  pre = runner.record_of(config, cell.pretrain_cell(), result)
  assert (pre["arm"], pre["distilled"], pre["alpha"]) == ("smoothed", False, config.distill.alpha)
  dist = runner.record_of(config, dataclasses.replace(cell.pretrain_cell(), arm="distilled"), result)
  assert (dist["arm"], dist["distilled"], dist["alpha"]) == ("distilled", True, config.distill.alpha)


# ----------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
  """Two teachers (seeds 5, 6), then a KD group of [plain, distilled, smoothed] (seed 0) with each."""
  config = load(SMOKE, [f"--config.data.data_dir={data_dir}", "--config.model.name=vit_tiny_xs"])
  root = tmp_path_factory.mktemp("smoothed")
  teachers = [str(root / f"teacher{seed}") for seed in (5, 6)]
  loop.train_group(config, "pretrain", [loop.Run(f"t{i}", seed, 312, out_dir=out)
                                        for i, (seed, out) in enumerate(zip((5, 6), teachers))],
                   str(root / "teachers"), show_progress=False)
  alpha = float(config.distill.alpha)
  runs = [loop.Run("plain", 0, 104), loop.Run("distilled", 0, 104, alpha=alpha),
          loop.Run("smoothed", 0, 104, alpha=alpha, uniform_teacher=True)]
  out = []
  for i, teacher in enumerate(teachers):
    config.distill.teacher_checkpoint, config.distill.teacher_model = teacher, "vit_tiny_xs"
    results = loop.train_group(config, "pretrain", runs, str(root / f"g{i}"), show_progress=False)
    out.append({r["name"]: r for r in results})
  return out


def test_a_smoothed_run_does_not_read_its_teacher(trained):
  with_a, with_b = trained
  assert with_a["smoothed"]["losses"] == with_b["smoothed"]["losses"]
  assert with_a["smoothed"]["eval_loss"] == with_b["smoothed"]["eval_loss"]
  # the distilled run does read it, and the arms differ from each other
  assert with_a["distilled"]["losses"] != with_b["distilled"]["losses"]
  for arms in (("smoothed", "distilled"), ("smoothed", "plain")):
    assert with_a[arms[0]]["losses"] != with_a[arms[1]]["losses"]
  # paired: the same subset in every arm (and the same order and initialisation: one seed)
  assert with_a["smoothed"]["subset_hash"] == with_a["plain"]["subset_hash"] == with_a["distilled"]["subset_hash"]


def test_a_control_study_records_the_smoothed_arm_paired_with_the_others(data_dir, tmp_path):
  config = load(SMOKE + ":control", [f"--config.data.data_dir={data_dir}", "--config.study.models=('vit_tiny_xs',)",
                                     "--config.pretrain.eval_at=(1.0,)", "--config.finetune.eval_at=(1.0,)"])
  assert tuple(config.study.arms) == ARMS3
  workdir = str(tmp_path / "study")
  runner.prepare_workdir(config, workdir)
  rows = {r["cell_id"]: r for r in runner.run_cells(config, workdir, show_progress=False)}
  cells = grid.expand(config)
  assert sorted(rows) == sorted(c.id for c in cells)
  for c in cells:
    r = rows[c.id]
    assert r["arm"] == c.arm and r["distilled"] == (c.arm == "distilled")
    assert r["alpha"] == grid.kd_alpha(config, c)
    if c.arm == "smoothed":
      assert r["teacher"] == "" and r["alpha"] == (config.distill.alpha if c.kind == grid.PRETRAIN else 0.0)
      twins = [rows[dataclasses.replace(c, arm=arm).id] for arm in ("plain", "distilled")]
      assert {t["subset_hash"] for t in twins} == {r["subset_hash"]}   # paired by seed
      assert all(t["eval_loss"] != r["eval_loss"] for t in twins)


def test_the_default_control_variant_leaves_out_only_the_smoothed_arm():
  default = os.path.join(os.path.dirname(SMOKE), "default.py")
  full, control = load(default), load(default + ":control")
  ids = {c.id for c in grid.expand(control)}
  missing = [c for c in grid.expand(full) if c.id not in ids]
  assert ids <= {c.id for c in grid.expand(full)}
  students = [c for c in grid.expand(full) if c.kind != grid.TEACHER]
  assert {c.arm for c in missing} == {"smoothed"} and len(missing) == len(students) // 3
  assert grid.teacher_of(control.study) == grid.teacher_of(full.study)
