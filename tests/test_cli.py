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
      parser.add_argument("--fail", choices=["user", "bug"])

    def run(args):
      config = cli.load_config(args)
      if args.fail == "user":
        raise JaxscaleError("change the thing")
      if args.fail == "bug":
        raise RuntimeError("boom")
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
