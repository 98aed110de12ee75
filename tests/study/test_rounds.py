"""`jaxscale study --adaptive` on the smoke config: a second round trains new seeds at the chosen
point only, its runs equal the same runs trained in a first round, a study stopped between rounds
and then killed (SIGKILL) part-way through the next resumes to the same records and rounds, and bad
inputs are one line."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from smoke_cli import SMOKE, run_cmd, study_cmd
from jaxscale import cli
from jaxscale.study import records, rounds, verdicts

# Differ between runs by nature, or by the group a run trained in (not what it computed).
GROUP_FIELDS = ("wall_s", "time", "group_size", "mesh", "config_hash")
# Round 2 of the smoke study moves each point from 1 pair to 4 (3 new seeds: 18 runs at one (model,
# Dp)); a budget of 18 runs pays for the first (model, Dp) in line and no more.
ADAPTIVE = ("--adaptive", "--max-runs", "18", "--config.study.max_rounds=3", "--no-progress")


def same(row):
  return {k: v for k, v in row.items() if k not in GROUP_FIELDS}


@pytest.fixture(scope="module")
def adaptive_study(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp("adaptive") / "study"
  out = run_cmd(study_cmd(workdir, data_dir, *ADAPTIVE), timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir


def test_second_round_adds_seeds_at_the_chosen_point_only(adaptive_study):
  log = json.loads((adaptive_study / "rounds.json").read_text())
  assert [r["round"] for r in log["rounds"]] == [1, 2] and "run budget is spent" in log["stopped"]
  (add,) = log["rounds"][1]["additions"]
  assert log["rounds"][1]["runs"] == add["runs"] == 18 and log["rounds"][1]["left_out"] == 3
  assert add["seeds"] == [1, 2, 3] and add["why"]
  rows = records.read(str(adaptive_study / "records.jsonl"))
  new = [r for r in rows if not verdicts.is_teacher(r) and r["seed"] > 0]
  assert len(rows) == 25 + 18 and len(new) == 18
  assert {(r["model"], r["dp"]) for r in new} == {(add["model"], add["dp"])}
  assert sorted((r["arm"], r["seed"], r["df"]) for r in new) == sorted(
      (arm, s, df) for arm in ("plain", "distilled") for s in (1, 2, 3) for df in (0, 50, 150))
  assert (adaptive_study / "groups" / "round2").is_dir()  # its own groups, not round 1's results
  report = (adaptive_study / "report" / "report.md").read_text()   # the report shows the rounds
  assert "## Rounds" in report and f"| 2 | 18 | {add['model']}, Dp = {add['dp']:,}, seeds 1-3 |" in report


def test_a_later_round_run_equals_the_same_run_trained_in_round_one(adaptive_study, tmp_path, data_dir):
  direct = tmp_path / "direct"
  out = run_cmd(study_cmd(direct, data_dir, "--config.study.seeds=(1,)", "--no-progress"), timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  first = {r["cell_id"]: r for r in records.read(str(direct / "records.jsonl"))}
  later = [r for r in records.read(str(adaptive_study / "records.jsonl")) if r["seed"] == 1 and not verdicts.is_teacher(r)]
  assert len(later) == 6
  for r in later:
    assert r["group_size"] != first[r["cell_id"]]["group_size"]   # trained beside other runs
    assert same(r) == same(first[r["cell_id"]]), r["cell_id"]


def test_a_study_stopped_between_rounds_and_killed_in_one_resumes_to_the_same_records(adaptive_study, tmp_path, data_dir):
  w = tmp_path / "study"
  shutil.copytree(adaptive_study, w)
  rows = records.read(str(w / "records.jsonl"))
  planned = json.loads((w / "rounds.json").read_text())
  added = {r["cell_id"] for r in rows if not verdicts.is_teacher(r) and r["seed"] > 0}
  # the state of a study killed once round 1 was finished: round 2 neither planned nor trained
  for name in ("records.jsonl", "curves.jsonl"):
    lines = (w / name).read_text().splitlines()
    (w / name).write_text("".join(l + "\n" for l in lines if json.loads(l)["cell_id"] not in added))
  shutil.rmtree(w / "groups" / "round2")
  for cell in added:
    shutil.rmtree(w / "cells" / cell, ignore_errors=True)
  log = dict(planned, rounds=planned["rounds"][:1])
  del log["stopped"]
  (w / "rounds.json").write_text(json.dumps(log))
  # now killed part-way through round 2, once its first group has written its records
  env = dict(os.environ, CI="true", JAX_PLATFORMS="cpu")
  proc = subprocess.Popen(study_cmd(w, data_dir, *ADAPTIVE), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env=env, stdin=subprocess.DEVNULL)
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None and len(records.read(str(w / "records.jsonl"))) <= 25:
    time.sleep(0.2)
  assert proc.poll() is None, "the study finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert 25 < len(records.read(str(w / "records.jsonl"))) < len(rows)
  assert json.loads((w / "rounds.json").read_text())["rounds"] == planned["rounds"]  # planned before it trained
  out = run_cmd(study_cmd(w, data_dir, *ADAPTIVE), timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  again = {r["cell_id"]: r for r in records.read(str(w / "records.jsonl"))}
  assert {k: same(v) for k, v in again.items()} == {r["cell_id"]: same(r) for r in rows}
  assert json.loads((w / "rounds.json").read_text()) == planned


@pytest.mark.parametrize("extra, message", [
    (["--adaptive", "--max-runs", "0"], "--max-runs must be a positive integer"),
    (["--adaptive", "--max-runs", "ten"], "--max-runs must be a positive integer"),
    (["--max-runs", "5"], "pass it with --adaptive"),
    (["--adaptive", "--config.study.arms=('plain',)"], "needs both 'plain' and 'distilled'"),
    (["--config.study.adaptive=True", "--config.study.arms=('distilled',)"], "needs both"),
])
def test_bad_adaptive_inputs_are_one_line_and_write_nothing(tmp_path, capsys, extra, message):
  workdir = tmp_path / "study"
  assert cli.main(["study", "--config", SMOKE, "--workdir", str(workdir), *extra]) == 2
  err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert len(err) == 1 and message in err[0] and not workdir.exists()


def test_dry_run_prints_round_one_and_says_later_rounds_depend_on_it(tmp_path, capsys, data_dir):
  workdir = tmp_path / "study"
  assert cli.main(["study", "--config", SMOKE, "--workdir", str(workdir), "--dry-run", "--adaptive",
                   f"--config.data.data_dir={data_dir}"]) == 0
  out = capsys.readouterr().out
  assert "round 1" in out and "depends on round 1's results" in out and not workdir.exists()
  assert not os.path.exists(rounds.path(str(workdir)))
