"""`jaxscale study` end to end on the smoke config: records, fits, report, resume after SIGKILL,
dry runs, and one-line refusals."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from smoke_cli import SMOKE, run_cmd, study_cmd
from jaxscale import cli
from jaxscale.study import grid, records
from jaxscale.config import load
from jaxscale.train import sharding

VOLATILE = ("wall_s", "time")  # differ between runs by nature


def stable(rows):
  return {r["cell_id"]: {k: v for k, v in r.items() if k not in VOLATILE} for r in rows}


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp("smoke") / "study"
  out = run_cmd(study_cmd(workdir, data_dir), timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir, out


def test_smoke_study_end_to_end(smoke_study, data_dir):
  workdir, out = smoke_study
  config = load(SMOKE, [f"--config.data.data_dir={data_dir}"])
  cells = grid.expand(config)
  rows = records.read(str(workdir / "records.jsonl"))
  assert sorted(r["cell_id"] for r in rows) == sorted(c.id for c in cells)
  for r in rows:
    assert 0.0 <= r["eval_error"] <= 1.0 and r["params"] > 0 and r["steps"] > 0
    per_model = r["stage"] == "pretrain" and r["model"] == "vit_tiny_s"
    assert r["lr"] == (3e-3 if per_model else config[r["stage"]].optim.lr)
    # the CLI split the CPU into one device per core, and every group (a single run padded) spreads
    # its runs over all of them, so the mesh depends on the device count alone
    assert r["mesh"] == list(sharding.mesh_shape(0, -1, 1, sharding.usable_cores(), r["group_size"], whole_runs=True))
  lines = (workdir / "curves.jsonl").read_text().splitlines()   # one curve per record, ending at it
  curves = {c["cell_id"]: c for c in map(json.loads, lines)}
  assert len(lines) == len(rows) and curves.keys() == {r["cell_id"] for r in rows}
  for r in rows:
    assert curves[r["cell_id"]]["points"][-1]["eval_error"] == r["eval_error"]
    assert curves[r["cell_id"]]["points"][-1]["examples"] == r["steps"] * r["batch_size"]
  ft = [r for r in rows if r["stage"] == "finetune"]
  assert {r["distilled"] for r in ft} == {True, False}
  fits = json.loads((workdir / "fits.json").read_text())
  assert set(fits["groups"]) == {"false", "true"}
  assert fits["boundary"] is not None and "roots" in fits["boundary"]
  report_md = (workdir / "report" / "report.md").read_text()
  # the report holds the fitted numbers
  alpha = fits["groups"]["false"]["params"]["alpha"]["value"]
  from jaxscale.report.render import fmt
  assert fmt(alpha) in report_md
  html = (workdir / "report" / "report.html").read_text()
  assert html.count("data:image/png;base64,") >= 4
  for name in ("error_vs_dp.png", "error_vs_df.png", "error_vs_m.png", "delta_e.png"):
    assert (workdir / "report" / name).stat().st_size > 1000
  assert "report:" in out.stdout


def test_rerun_skips_finished_cells_and_report_rebuilds(smoke_study):
  workdir, _ = smoke_study
  before = (workdir / "records.jsonl").read_text()
  out = run_cmd([sys.executable, "-m", "jaxscale", "report", "--workdir", str(workdir)], timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  assert (workdir / "records.jsonl").read_text() == before


def test_killed_study_resumes_to_the_same_records(smoke_study, data_dir, tmp_path):
  reference, _ = smoke_study
  workdir = tmp_path / "killed"
  env = dict(os.environ, CI="true", JAX_PLATFORMS="cpu")
  proc = subprocess.Popen(study_cmd(workdir, data_dir), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env=env, stdin=subprocess.DEVNULL)
  path = workdir / "records.jsonl"
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    if path.exists() and len(records.read(str(path))) >= 6:
      break
    time.sleep(0.2)
  time.sleep(0.7)  # land inside the next cell, part-way through its steps
  assert proc.poll() is None, "the study finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  partial = records.read(str(path))
  assert 6 <= len(partial) < 25
  out = run_cmd(study_cmd(workdir, data_dir), timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  counts = re.findall(r"study\s+(\d+)/(\d+) cell", out.stderr)   # the resumed run's progress lines
  assert counts and all(int(done) <= int(total) for done, total in counts) and counts[-1][0] == counts[-1][1]
  resumed = records.read(str(path))
  ref = records.read(str(reference / "records.jsonl"))
  assert len(resumed) == len(ref)
  assert stable(resumed).keys() == stable(ref).keys()
  for cell_id, row in stable(ref).items():
    got = stable(resumed)[cell_id]
    assert got["eval_error"] == row["eval_error"], cell_id
    assert got["eval_loss"] == pytest.approx(row["eval_loss"], rel=1e-6), cell_id
    assert got["steps"] == row["steps"] and got["subset_hash"] == row["subset_hash"]
  # no curve lost or written twice, each the uninterrupted study's
  got = (workdir / "curves.jsonl").read_text().splitlines()
  want = {c["cell_id"]: c for c in map(json.loads, (reference / "curves.jsonl").read_text().splitlines())}
  assert sorted(json.loads(c)["cell_id"] for c in got) == sorted(want)
  for c in map(json.loads, got):
    assert [p["eval_error"] for p in c["points"]] == [p["eval_error"] for p in want[c["cell_id"]]["points"]]


def test_dry_run_writes_nothing(tmp_path, capsys):
  workdir = tmp_path / "dry"
  data_dir = tmp_path / "no-data-yet"
  assert cli.main(["study", "--config", SMOKE, "--workdir", str(workdir), "--dry-run",
                   f"--config.data.data_dir={data_dir}"]) == 0
  out = capsys.readouterr().out
  assert "25 cells" in out and "GFLOPs" in out and "grid total 0" not in out
  assert out.count("ETA") == 1 and "measured here" in out
  assert not workdir.exists() and not data_dir.exists()


@pytest.mark.parametrize("override, needle", [
    ("--config.study.dp=()", "config.study.dp"),
    ("--config.study.df=(50,5000)", "config.study.df"),
])
def test_bad_grids_are_one_line_errors(tmp_path, data_dir, capsys, override, needle):
  code = cli.main(["study", "--config", SMOKE, "--workdir", str(tmp_path / "w"), override,
                   f"--config.data.data_dir={data_dir}"])
  err = capsys.readouterr().err
  assert code == 2 and needle in err and err.count("\n") == 1


def test_workdir_with_another_study_is_refused(smoke_study, data_dir, capsys):
  workdir, _ = smoke_study
  before = (workdir / "records.jsonl").read_text()
  assert cli.main(["study", "--config", SMOKE, "--workdir", str(workdir), "--config.seed=7",
                   f"--config.data.data_dir={data_dir}"]) == 2
  err = capsys.readouterr().err
  assert "different config" in err and "--force-new" in err and err.count("\n") == 1
  assert (workdir / "records.jsonl").read_text() == before


def test_force_new_archives_the_old_study(tmp_path):
  from jaxscale.config import base_config
  from jaxscale.study import runner
  old, new = base_config(), base_config()
  new.seed = 3
  runner.prepare_workdir(old, str(tmp_path))
  records.append(str(tmp_path / "records.jsonl"), {"cell_id": "x"})
  runner.prepare_workdir(new, str(tmp_path), force_new=True)
  archived = [p for p in tmp_path.iterdir() if p.name.startswith("previous-")]
  assert len(archived) == 1 and (archived[0] / "records.jsonl").exists()
  assert not (tmp_path / "records.jsonl").exists()
  assert json.loads((tmp_path / "study.json").read_text())["hash"] == runner.study_hash(new)


def test_unwritable_workdir(tmp_path, data_dir, capsys):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  code = cli.main(["study", "--config", SMOKE, "--workdir", str(blocker / "w"),
                   f"--config.data.data_dir={data_dir}"])
  err = capsys.readouterr().err
  assert code == 2 and "workdir" in err and err.count("\n") == 1
