"""Evaluations along the budget (config.<stage>.eval_at): where they fall, what a curve holds, and that
they change no result: a run's record is the same with or without them, alone or in a group, resumed."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxscale import config as config_lib
from jaxscale.errors import JaxscaleError
from jaxscale.study import records
from jaxscale.train import evals, loop

SCRIPT = os.path.join(os.path.dirname(__file__), "group_script.py")
AT = (0.25, 0.5, 0.75, 1.0)   # 20 steps, K = 5: points at 5, 10, 15 and the final one at 20


def test_eval_steps_are_dispatch_boundaries_before_the_end():
  assert evals.eval_steps((0.1, 0.3, 1.0), 800, 50) == [100, 250]
  assert evals.eval_steps((0.1, 0.3, 1.0), 150, 50) == [50]        # both round to the first boundary
  assert evals.eval_steps((0.25, 0.5, 0.75, 1.0), 20, 5) == [5, 10, 15]
  assert evals.eval_steps((1.0,), 20, 5) == [] and evals.eval_steps((0.5,), 40, 50) == []


def test_smoothed_loss_is_the_mean_of_the_last_steps_before_the_point():
  losses = [float(v) for v in range(100)]
  assert evals.smoothed_loss(losses, 50, 100) == np.mean(losses[45:50])
  assert evals.smoothed_loss([np.nan] * 3 + [1.0], 4, 20) == 1.0


def _runs(root, seeds):
  return [loop.Run(f"s{s}", s, 208, meta=(("dp", 208),)) for s in seeds]


def _train(config, root, seeds, eval_at):
  config.engine.steps_per_dispatch = 5
  config.pretrain.eval_at = eval_at
  return loop.train_group(config_lib.validate(config), "pretrain", _runs(root, seeds), os.path.join(root, "g"),
                          show_progress=False)


@pytest.fixture(scope="module")
def curved(tmp_path_factory, data_dir, make_config):
  """Seeds 0, 1, 2 trained as one group with points at 5, 10, 15 and 20 of 20 steps."""
  root = str(tmp_path_factory.mktemp("curved"))
  return _train(make_config(data_dir), root, (0, 1, 2), AT)


def test_a_curve_ends_at_the_record_and_follows_the_budget(curved):
  for r in curved:
    curve = r["curve"]
    assert [p["step"] for p in curve] == [5, 10, 15, 20]
    assert [p["examples"] for p in curve] == [160, 320, 480, 640]
    assert curve[-1]["eval_error"] == r["eval_error"] and curve[-1]["eval_loss"] == r["eval_loss"]
    assert curve[-1]["eval_count"] == r["eval_count"] and {p["eval_count"] for p in curve[:-1]} == {256}
    assert curve[-1]["train_loss"] == pytest.approx(np.mean(r["losses"][-1:]))
    assert curve[0]["train_loss"] == pytest.approx(r["losses"][4])
    assert len({p["eval_loss"] for p in curve}) == 4   # each point measures the parameters of its step


def test_a_run_has_the_same_curve_alone_and_the_same_record_without_points(curved, config, tmp_path):
  (alone,) = _train(config, str(tmp_path / "a"), (1,), AT)
  assert alone["curve"] == curved[1]["curve"]
  (plain,) = _train(config, str(tmp_path / "b"), (1,), (1.0,))
  assert [p["step"] for p in plain["curve"]] == [20]
  make = lambda cfg, r: records.build(cfg, "pretrain", {**r, "wall_s": 0.0}, cell_id="c", dp=208, df=0,
                                      distilled=False, teacher="", alpha=0.0, seed=1, flops=1.0) | {"time": ""}
  with_points = config.copy_and_resolve_references()
  with_points.pretrain.eval_at = AT
  without = config.copy_and_resolve_references()
  without.pretrain.eval_at = (1.0,)
  assert json.dumps(make(with_points, alone)) == json.dumps(make(without, plain))


def test_a_killed_group_resumes_to_the_same_curves(curved, config, tmp_path):
  """SIGKILL right after dispatch 3 is queued (points at 5 and 10 written, checkpoint at 10 or 15)."""
  config.engine.steps_per_dispatch = 5
  config.checkpoint.every_steps = 5
  config.pretrain.eval_at = AT
  cfg, spec, out, g = tmp_path / "c.json", tmp_path / "spec.json", tmp_path / "out.json", tmp_path / "g"
  cfg.write_text(json.dumps(config.to_dict()))
  spec.write_text(json.dumps({"stage": "pretrain", "group_dir": str(g), "runs": [
      dict(name=f"s{s}", seed=s, size=208, meta=[["dp", 208]]) for s in (0, 1, 2)]}))
  base = [sys.executable, SCRIPT, str(cfg), str(spec), str(out)]
  proc = subprocess.run(base + ["3", "KILL"], capture_output=True, text=True, timeout=600)
  assert proc.returncode == -9, proc.stderr[-2000:]
  saved = json.loads((g / evals.POINTS_FILE).read_text())
  # point 15 is fetched at the next boundary, which never came; a resume from 15 measures it on the
  # restored state, one from 10 trains on to it
  assert [p["step"] for p in saved["points"]] == [5, 10]
  proc = subprocess.run(base, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  again = json.loads(out.read_text())
  assert [a["curve"] for a in again] == [json.loads(json.dumps(r["curve"])) for r in curved]


@pytest.mark.parametrize("eval_at", [(0.0, 1.0), (0.5, 1.5), (0.5, 0.2, 1.0), (0.5, 0.5), ()])
def test_bad_eval_at_is_one_line(config, eval_at):
  config.pretrain.eval_at = eval_at
  with pytest.raises(JaxscaleError, match=r"^config\.pretrain\.eval_at must hold increasing fractions[^\n]*$"):
    config_lib.validate(config)


def test_an_eval_subset_larger_than_the_split_is_one_line(config):
  config.finetune.eval_subset = 361   # jaxscale_digits/16px's test split has 360 images
  with pytest.raises(JaxscaleError, match=r"^config\.finetune\.eval_subset=361 is larger than the 360 images"):
    evals.check(config, "finetune")
  config.finetune.eval_subset = 360
  evals.check(config, "finetune")
  config.finetune.eval_at = (1.0,)          # nothing measured before the end: no subset needed
  config.finetune.eval_subset = 10 ** 6
  evals.check(config, "finetune")


@pytest.mark.parametrize("override, needle", [
    ("--config.pretrain.eval_at=(0.5,0.2,1.0)", "config.pretrain.eval_at must hold increasing fractions"),
    ("--config.finetune.eval_subset=361", "config.finetune.eval_subset=361 is larger than the 360 images"),
])
def test_the_study_refuses_bad_eval_settings_in_one_line(data_dir, tmp_path, capsys, override, needle):
  from jaxscale import cli
  smoke = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "smoke.py")
  args = ["study", "--config", smoke, "--workdir", str(tmp_path / "w"), "--dry-run",
          f"--config.data.data_dir={data_dir}", override]
  assert cli.main(args) == 2
  err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
  assert len(err) == 1 and needle in err[0], err


def test_a_point_due_at_the_restored_step_is_measured_on_the_restored_state(tmp_path):
  """Unit: the fake program's error is the params' value, so each point shows which state it measured."""
  def dispatch(params):
    return [{"errors": np.asarray(params, np.float32) * 4, "loss": np.ones(2, np.float32), "count": 4.0}]
  state = lambda v: type("S", (), {"params": np.full(2, v)})
  kept = {"runs": ["a", "b"], "points": [{"step": 5, "eval_error": [0.5, 0.5], "eval_loss": [1, 1], "eval_count": 4},
                                         {"step": 15, "eval_error": [9, 9], "eval_loss": [1, 1], "eval_count": 4}]}
  (tmp_path / evals.POINTS_FILE).write_text(json.dumps(kept))
  along = evals.AlongBudget([[5, 10, 15]] * 2, ["a", "b"], dispatch, str(tmp_path), 10, [20, 20], 8)
  along.start(10, state(0.25))           # 10 is due and missing: measured now; 15 (after the restore) dropped
  along(15, state(0.125))
  along(20, state(1.0))
  curve = along.curve(0, [1.0] * 20, {"eval_error": [0.0, 0.0], "eval_loss": [1, 1], "eval_count": 100})
  assert [(p["step"], p["eval_error"]) for p in curve] == [(5, 0.5), (10, 0.25), (15, 0.125), (20, 0.0)]
  saved = json.loads((tmp_path / evals.POINTS_FILE).read_text())
  assert [p["step"] for p in saved["points"]] == [5, 10, 15]
