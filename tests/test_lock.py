"""One writer per workdir: a second process is refused in one line naming the holder, with two real
processes; the lock goes when its holder ends, however it ends."""

import json
import os
import signal
import subprocess
import sys

import pytest

from jaxscale import cli, fileio
from jaxscale.config import base_config
from jaxscale.errors import JaxscaleError

SMOKE = os.path.join(os.path.dirname(__file__), "..", "configs", "smoke.py")
HOLD = ("import sys\nfrom jaxscale import fileio\nfileio.lock_workdir(sys.argv[1], 'jaxscale study')\n"
        "print('held', flush=True)\nsys.stdin.read()\n")


@pytest.fixture
def holder(tmp_path):
  """A second process that holds the lock of tmp_path/w until its stdin closes."""
  workdir = tmp_path / "w"
  proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.stdout.readline().strip() == "held"
  yield workdir, proc
  if proc.poll() is None:
    proc.kill()
  proc.wait()


def _refused(capsys, argv, pid):
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "Traceback" not in err
  assert f"pid {pid}" in err and "jaxscale study" in err and "in use" in err
  return err


def test_study_report_and_train_are_refused_while_another_process_writes(holder, capsys):
  workdir, proc = holder
  (workdir / "study.json").write_text(json.dumps({"hash": "x", "config": base_config().to_dict()}))
  _refused(capsys, ["study", "--config", SMOKE, "--workdir", str(workdir)], proc.pid)
  _refused(capsys, ["report", "--workdir", str(workdir)], proc.pid)
  _refused(capsys, ["train", "--config", SMOKE, "--stage", "pretrain", "--workdir", str(workdir)], proc.pid)
  assert not (workdir / "records.jsonl").exists() and not (workdir / "fits.json").exists()


def test_lock_is_released_when_its_holder_ends(holder):
  workdir, proc = holder
  with pytest.raises(JaxscaleError, match=f"pid {proc.pid}"):
    fileio.lock_workdir(str(workdir), "test")
  proc.send_signal(signal.SIGKILL)  # no clean-up code runs: the OS drops the lock
  proc.wait()
  fileio.lock_workdir(str(workdir), "test")
  fileio.lock_workdir(str(workdir), "test")  # the holder may take it again
  fileio.release_locks()


def test_cli_releases_the_lock_when_the_command_ends(tmp_path, capsys):
  workdir = tmp_path / "w"
  # refused after it took the lock: there is no pretraining to fine-tune
  assert cli.main(["train", "--config", SMOKE, "--stage", "finetune", "--workdir", str(workdir)]) == 2
  assert "pretrain checkpoint" in capsys.readouterr().err and (workdir / fileio.LOCK_NAME).exists()
  out = subprocess.run([sys.executable, "-c", HOLD, str(workdir)], input="", capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=120)
  assert out.returncode == 0 and "held" in out.stdout, out.stderr
