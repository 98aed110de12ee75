"""The `jaxscale` dispatcher: help, one-line user errors (exit 2), tracebacks for bugs."""

import os
import subprocess
import sys
import textwrap

import pytest

from jaxscale import cli

FAKE = textwrap.dedent('''
    HELP = "a fake command for tests"
    from jaxscale import cli
    from jaxscale.errors import JaxscaleError

    def add_arguments(parser):
      cli.add_config_argument(parser)
      parser.add_argument("--fail", choices=["user", "bug", "full", "unnamed", "socket"])

    def run(args):
      import errno, os
      config = cli.load_config(args)
      if args.fail == "user":
        raise JaxscaleError("change the thing")
      if args.fail == "bug":
        raise RuntimeError("boom")
      if args.fail == "full":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/w/groups/g1/ckpt")
      if args.fail == "unnamed":
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
      if args.fail == "socket":
        raise ConnectionError("peer went away")
      print("lr", config.pretrain.optim.lr)
      return 0
''')


@pytest.fixture
def fake_command(tmp_path, monkeypatch):
  pkg = tmp_path / "fakepkg"
  pkg.mkdir()
  (pkg / "__init__.py").write_text("")
  (pkg / "command.py").write_text(FAKE)
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.setattr(cli, "COMMANDS", {"fake": "fakepkg.command", "missing": "nopkg.command"})
  cfg = tmp_path / "cfg.py"
  cfg.write_text("from jaxscale.config import base_config\ndef get_config(arg=None):\n  return base_config()\n")
  bad = tmp_path / "bad.py"
  bad.write_text("from jaxscale.config import base_config\ndef get_config(arg=None):\n"
                 "  c = base_config()\n  c.model.nmae = 'x'\n  return c\n")
  return str(cfg), str(bad)


def test_help_lists_only_existing_commands(fake_command, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  assert "fake" in out and "a fake command for tests" in out
  assert "missing" not in out


def test_subcommand_help(fake_command, capsys):
  with pytest.raises(SystemExit):
    cli.main(["fake", "--help"])
  assert "--config" in capsys.readouterr().out


def test_override_reaches_command(fake_command, capsys):
  cfg, _ = fake_command
  assert cli.main(["fake", "--config", cfg, "--config.pretrain.optim.lr=0.25"]) == 0
  assert "lr 0.25" in capsys.readouterr().out


@pytest.mark.parametrize("extra, needle", [
    (["--config.pretrain.optim.lrr=1"], "pretrain.optim.lrr"),
    (["--fail", "user"], "change the thing"),
])
def test_user_error_is_one_line_exit_2(fake_command, capsys, extra, needle):
  cfg, _ = fake_command
  assert cli.main(["fake", "--config", cfg, *extra]) == 2
  err = capsys.readouterr().err
  assert err.startswith("jaxscale: error: ") and needle in err
  assert err.count("\n") == 1 and "Traceback" not in err


def test_unknown_config_field_is_one_line(fake_command, capsys):
  _, bad = fake_command
  assert cli.main(["fake", "--config", bad]) == 2
  err = capsys.readouterr().err
  assert "model.nmae" in err and err.count("\n") == 1


def test_unexpected_exception_keeps_traceback(fake_command):
  cfg, _ = fake_command
  with pytest.raises(RuntimeError, match="boom"):
    cli.main(["fake", "--config", cfg, "--fail", "bug"])


def test_console_script_runs():
  env = dict(os.environ, CI="true")
  out = subprocess.run([sys.executable, "-m", "jaxscale", "--help"], capture_output=True, text=True,
                       env=env, stdin=subprocess.DEVNULL, timeout=120)
  assert out.returncode == 0, out.stderr
  assert "usage: jaxscale" in out.stdout
  for name in cli.available_commands():
    assert name in out.stdout


def test_report_on_a_folder_without_a_study_is_one_line(tmp_path, capsys):
  assert cli.main(["report", "--workdir", str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert "no study.json" in err and "--workdir" in err and err.count("\n") == 1


def test_report_on_a_study_without_finetunes_is_one_line(tmp_path, capsys):
  import json
  from jaxscale.config import base_config
  (tmp_path / "study.json").write_text(json.dumps({"hash": "x", "config": base_config().to_dict()}))
  (tmp_path / "records.jsonl").write_text(json.dumps({"stage": "pretrain", "model": "m", "params": 1,
                                                      "dp": 1, "eval_error": 0.5}) + "\n")
  assert cli.main(["report", "--workdir", str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert "no fine-tune records" in err and err.count("\n") == 1
  assert not (tmp_path / "report").exists() and not (tmp_path / "fits.json").exists()


@pytest.mark.parametrize("fail, needle", [
    ("full", "jaxscale: error: '/w/groups/g1/ckpt': No space left on device (ENOSPC); free space on that disk"),
    ("unnamed", "Read-only file system (EROFS); use a path on a writable file system"),
])
def test_a_refused_file_operation_is_one_line(fake_command, capsys, fail, needle):
  cfg, _ = fake_command
  assert cli.main(["fake", "--config", cfg, "--fail", fail]) == 2
  err = capsys.readouterr().err
  assert needle in err and err.count("\n") == 1


def test_an_os_error_that_names_no_file_keeps_its_traceback(fake_command):
  cfg, _ = fake_command
  with pytest.raises(ConnectionError):
    cli.main(["fake", "--config", cfg, "--fail", "socket"])


def _one_line(capsys, argv):
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert err.startswith("jaxscale: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
  return err


SMOKE = os.path.join(os.path.dirname(__file__), "..", "configs", "smoke.py")


@pytest.mark.parametrize("flags, needle", [
    (["--flops-per-s", "-1"], "--flops-per-s must be a finite rate > 0"),
    (["--flops-per-s", "inf"], "--flops-per-s must be a finite rate > 0"),
    (["--device-memory", "0GB"], "--device-memory must be more than 0 bytes"),
])
def test_plan_ranges_are_refused_before_any_compile(capsys, monkeypatch, flags, needle):
  from jaxscale.study import plan
  monkeypatch.setattr(plan, "capacity_table", lambda *a, **k: pytest.fail("compiled before refusing"))
  assert needle in _one_line(capsys, ["plan", "--config", SMOKE, *flags])


def _read_only(monkeypatch, module, suffix=""):
  """Makes `module`'s file creation answer as a read-only file system does (root ignores chmod)."""
  import errno
  real_open, real_mkstemp = os.open, module.tempfile.mkstemp

  def ro_open(path, flags, *a, **k):
    if flags & os.O_CREAT and str(path).endswith(suffix):
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
    return real_open(path, flags, *a, **k)

  def ro_mkstemp(*a, **k):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), k.get("dir"))
  monkeypatch.setattr(module.os, "open", ro_open)
  monkeypatch.setattr(module.tempfile, "mkstemp", ro_mkstemp)


def test_data_build_into_a_file_or_a_read_only_folder_is_one_line(tmp_path, capsys, monkeypatch):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  err = _one_line(capsys, ["data", "build", "jaxscale_digits/16px", "--data-dir", str(blocker)])
  assert f"--data-dir {blocker}: {blocker} is a file, not a folder" in err
  from jaxscale import fileio
  _read_only(monkeypatch, fileio)
  err = _one_line(capsys, ["data", "build", "jaxscale_digits/16px", "--data-dir", str(tmp_path / "ro")])
  assert "cannot write --data-dir" in err and "Read-only file system (EROFS)" in err


def test_report_and_predict_on_a_read_only_path_are_one_line(tmp_path, capsys, monkeypatch):
  import json
  from jaxscale import fileio
  from jaxscale.config import base_config
  (tmp_path / "study.json").write_text(json.dumps({"hash": "x", "config": base_config().to_dict()}))
  _read_only(monkeypatch, fileio, suffix=fileio.LOCK_NAME)
  err = _one_line(capsys, ["report", "--workdir", str(tmp_path)])
  assert "cannot write to workdir" in err and "Read-only file system" in err
  assert not (tmp_path / "report").exists()
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  fits, rows = tmp_path / "fits.json", tmp_path / "rows.csv"
  fits.write_text("{}")
  rows.write_text("x\n1\n")
  err = _one_line(capsys, ["predict", str(fits), str(rows), "--out", str(blocker / "p.csv")])
  assert f"{blocker} is a file, not a folder" in err
