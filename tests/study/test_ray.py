"""`jaxscale study --engine ray` on a local Ray cluster: the same records as the in-process engine
through a worker killed mid-group and a driver killed mid-study; a workdir the workers cannot see,
and a user error inside a task, each refused on one line; the local engine never imports Ray."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from jaxscale.config import load
from jaxscale.study import grid, records

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

SMOKE = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "smoke.py")
VOLATILE = ("wall_s", "time", "group_size")  # differ between runs (or engines) by nature
# One step per dispatch and a checkpoint every 2 steps: a group killed part-way has something to resume.
EXTRA = ("--config.engine.steps_per_dispatch=1", "--config.checkpoint.every_steps=2")


def study_cmd(workdir, data_dir, *extra):
  return [sys.executable, "-m", "jaxscale", "study", "--config", SMOKE, "--workdir", str(workdir),
          f"--config.data.data_dir={data_dir}", "--no-progress", *EXTRA, *extra]


def env():
  return dict(os.environ, CI="true", JAX_PLATFORMS="cpu", RAY_USAGE_STATS_ENABLED="0",
              RAY_AUTH_MODE="disabled")


def run_cmd(cmd, **kw):
  return subprocess.run(cmd, capture_output=True, text=True, env=env(), stdin=subprocess.DEVNULL, **kw)


def stable(rows):
  return {r["cell_id"]: {k: v for k, v in r.items() if k not in VOLATILE} for r in rows}


def assert_same_records(got_rows, ref_rows):
  """Every cell exactly once; equal to the reference (eval_loss within 1e-6)."""
  ids = [r["cell_id"] for r in got_rows]
  assert len(ids) == len(set(ids)), "a cell has more than one record"
  got, ref = stable(got_rows), stable(ref_rows)
  assert got.keys() == ref.keys()
  for cell_id, row in ref.items():
    g = dict(got[cell_id])
    assert g.pop("eval_loss") == pytest.approx(row["eval_loss"], rel=1e-6, abs=1e-6), cell_id
    assert g == {k: v for k, v in row.items() if k != "eval_loss"}, cell_id


def session_processes(sid):
  """Live processes of session `sid` (a process this test started with start_new_session)."""
  out = []
  for p in psutil.process_iter():
    try:
      if os.getsid(p.pid) == sid:
        out.append(p)
    except (ProcessLookupError, PermissionError, psutil.Error):
      pass
  return out


def end_session(sid, grace_s=30.0):
  """Waits for the processes of session `sid` to exit, then SIGKILLs those left (ours, by pid)."""
  deadline = time.time() + grace_s
  while session_processes(sid) and time.time() < deadline:
    time.sleep(0.5)
  for p in session_processes(sid):
    try:
      p.send_signal(signal.SIGKILL)
    except psutil.Error:
      pass


@pytest.fixture(scope="module")
def local_records(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp("local") / "study"
  # one CPU device, as each Ray task gets here (config.engine.cpu_devices = 0 gives a task the CPUs
  # Ray assigned it, 1): the same mesh, hence the same records
  out = run_cmd(study_cmd(workdir, data_dir, "--config.engine.cpu_devices=1"), timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  return records.read(str(workdir / "records.jsonl"))


def test_local_engine_does_not_import_ray():
  code = ("import sys; from jaxscale import cli; from jaxscale.study import command, runner; "
          "assert 'ray' not in sys.modules, 'ray imported'")
  out = run_cmd([sys.executable, "-c", code], timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]


def test_dependencies_follow_the_cells(data_dir):
  from jaxscale.study import ray_engine
  config = load(SMOKE, [f"--config.data.data_dir={data_dir}"])
  groups = grid.groups(config)
  needs = ray_engine.dependencies(config, groups)
  by_id = {g.id: g for g in groups}
  teacher_id = grid.teacher_of(config.study).id
  teacher = next(g.id for g in groups if teacher_id in {c.id for c in g.cells})
  assert needs[teacher] == set()
  for g in groups:
    if g.stage == grid.PRETRAIN:  # distillation during pretraining: the KD groups need the teacher's group
      assert needs[g.id] == ({teacher} if g.distils else set())
    if g.stage == grid.FINETUNE:
      pretrained = {c.pretrain_cell().id for c in g.cells}
      assert needs[g.id] == {h.id for h in groups if pretrained & {c.id for c in h.cells}}
      # the teacher is no fine-tune's dependency: its group (its model's plain one) is, for the students in it
      students = {c.id for c in by_id[teacher].cells} - {teacher_id}
      assert teacher not in needs[g.id] or pretrained & students
      assert all(by_id[d].stage == grid.PRETRAIN for d in needs[g.id])
  position = {g.id: i for i, g in enumerate(groups)}
  assert all(position[d] < position[g] for g, ds in needs.items() for d in ds)


def test_resources_become_task_options():
  from ml_collections import ConfigDict
  from jaxscale.study import ray_engine
  opts = lambda r: ray_engine._resources(ConfigDict({"engine": {"resources": r}}))
  assert opts('{"CPU": 1}') == {"num_cpus": 1, "num_gpus": 0}
  assert opts('{"GPU": 1}') == {"num_cpus": 0, "num_gpus": 1, "max_calls": 1}
  assert opts('{"TPU": 4, "CPU": 8}') == {"num_cpus": 8, "num_gpus": 0, "resources": {"TPU": 4}, "max_calls": 1}


def test_ray_study_survives_a_killed_worker_and_a_killed_driver(local_records, data_dir, tmp_path):
  workdir = tmp_path / "ray"
  log = open(tmp_path / "driver1.log", "w")
  driver = subprocess.Popen(study_cmd(workdir, data_dir, "--engine", "ray"), stdout=log, stderr=subprocess.STDOUT,
                            env=env(), stdin=subprocess.DEVNULL, start_new_session=True)
  try:
    # 1. SIGKILL the worker that trains the teacher group once it has saved a checkpoint.
    config = load(SMOKE, [f"--config.data.data_dir={data_dir}"])
    teacher_id = grid.teacher_of(config.study).id
    teacher = next(g for g in grid.groups(config) if teacher_id in {c.id for c in g.cells})
    group_dir = workdir / "groups" / teacher.id
    killed = None
    deadline = time.time() + 600
    while killed is None and time.time() < deadline and driver.poll() is None:
      saved = group_dir.is_dir() and any(p.name.isdigit() for p in group_dir.iterdir())
      if saved and not (group_dir / "result.json").exists():
        for p in session_processes(driver.pid):
          try:
            if p.cmdline()[:1] == [f"ray::group {teacher.id}"]:
              p.send_signal(signal.SIGKILL)
              killed = p.pid
          except psutil.Error:
            pass
      time.sleep(0.02)
    assert killed is not None, "the teacher group was not caught mid-group"
    assert not (group_dir / "result.json").exists()
    # 2. SIGKILL the driver once the pretraining groups are done and fine-tuning has started.
    path = workdir / "records.jsonl"
    while time.time() < deadline and driver.poll() is None:
      if path.exists() and len(records.read(str(path))) >= 9:
        break
      time.sleep(0.1)
    assert driver.poll() is None, "the study finished before the driver could be killed"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
  finally:
    if driver.poll() is None:
      driver.kill()
    end_session(driver.pid)
    log.close()
  first = (tmp_path / "driver1.log").read_text()
  assert "resuming" in first and f"{teacher.id}" in first, first[-3000:]  # the retry resumed the checkpoint
  partial = records.read(str(workdir / "records.jsonl"))
  assert 9 <= len(partial) < 25
  finished = {p.parent.name: p.stat().st_mtime_ns for p in (workdir / "groups").glob("*/result.json")}

  out = run_cmd(study_cmd(workdir, data_dir, "--engine", "ray"), timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  for group_id, mtime in finished.items():  # no finished group was trained (or written) again
    assert (workdir / "groups" / group_id / "result.json").stat().st_mtime_ns == mtime, group_id
  assert_same_records(records.read(str(workdir / "records.jsonl")), local_records)
  assert json.loads((workdir / "fits.json").read_text())["boundary"] is not None
  # the driver wrote every run's TensorBoard event file (tensorboardX is in the test extra)
  boards = {p.parent.name for p in (workdir / "tb").glob("*/*/*/events.out.tfevents.*")}
  assert boards == {r["cell_id"] for r in local_records}


def test_user_error_in_a_task_is_one_line(data_dir, tmp_path):
  # Two data-parallel devices on a one-device worker: found only when the task builds its mesh.
  out = run_cmd(study_cmd(tmp_path / "study", data_dir, "--engine", "ray", "--config.mesh.data=2"), timeout=600)
  assert out.returncode == 2, out.stderr[-3000:]
  last = out.stderr.strip().splitlines()[-1]
  assert "config.mesh" in last and "Traceback" not in out.stderr and "RayTaskError" not in out.stderr, out.stderr[-3000:]
  assert not (tmp_path / "study" / "records.jsonl").exists()


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.skipif(not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("unshare")),
                    reason="hiding a folder from the Ray node needs a private mount namespace (root, unshare)")
def test_workdir_the_workers_cannot_see_is_refused(data_dir, tmp_path):
  hidden = tmp_path / "hidden"
  hidden.mkdir()
  port = free_port()
  ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
  # A Ray node in its own mount namespace, where `hidden` is an empty tmpfs: its workers cannot see
  # what the driver writes there, as on a cluster whose nodes do not mount the driver's disk.
  head = subprocess.Popen(
      ["unshare", "-m", "sh", "-c", f"mount -t tmpfs tmpfs {hidden} && exec {ray_bin} start --head --block "
       f"--node-ip-address=127.0.0.1 --port={port} --num-cpus=1 --include-dashboard=false"],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(), stdin=subprocess.DEVNULL,
      start_new_session=True)
  try:
    deadline = time.time() + 120
    while time.time() < deadline and head.poll() is None:  # wait for the head to listen
      with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
          break
      time.sleep(0.5)
    out = run_cmd(study_cmd(hidden / "study", data_dir, "--engine", "ray", "--address", f"127.0.0.1:{port}"),
                  timeout=300)
  finally:
    os.killpg(head.pid, signal.SIGTERM)
    head.wait(timeout=60)
    end_session(head.pid)
    current = "/tmp/ray/ray_current_cluster"  # `ray start` records its address for later `ray.init()`s
    if os.path.exists(current) and open(current).read().strip().endswith(f":{port}"):
      os.remove(current)
  assert out.returncode == 2, out.stderr[-3000:]
  last = out.stderr.strip().splitlines()[-1]
  assert "not visible" in last and str(hidden / "study") in last, out.stderr[-3000:]
  assert not (hidden / "study" / "records.jsonl").exists()
  assert not list((hidden / "study").glob(".ray-probe-*"))  # the probe token is removed
