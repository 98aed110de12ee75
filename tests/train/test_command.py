"""`jaxscale train`: the record line, refusing to retrain, one-line user errors, preemption status."""

import json
import os

import pytest

from jaxscale.study import records
from jaxscale import cli
from jaxscale.train import loop


@pytest.fixture
def config_file(tmp_path, data_dir):
  path = tmp_path / "cfg.py"
  path.write_text(
      "import sys\n"
      f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
      "from conftest import tiny_config\n"
      f"def get_config(arg=None):\n  return tiny_config({data_dir!r})\n")
  return str(path)


def test_train_prints_record_then_refuses_to_retrain(config_file, tmp_path, capsys):
  work = str(tmp_path / "w")
  args = ["train", "--config", config_file, "--stage", "pretrain", "--workdir", work, "--no-progress",
          "--config.pretrain.optim.min_steps=4", "--config.pretrain.optim.epochs=0.5"]
  assert cli.main(args) == 0
  out = capsys.readouterr()
  record = json.loads(out.out.strip().splitlines()[-1])
  assert record["stage"] == "pretrain" and record["steps"] == 4 and record["group_size"] == 1
  assert records.read(os.path.join(work, "records.jsonl")) == [record]
  assert cli.main(args) == 0
  out = capsys.readouterr()
  assert "already finished" in out.err and json.loads(out.out.strip()) == record
  assert records.read(os.path.join(work, "records.jsonl")) == [record]


def test_user_error_exits_2_with_one_line(config_file, tmp_path, capsys):
  code = cli.main(["train", "--config", config_file, "--stage", "finetune", "--workdir", str(tmp_path / "w"),
                   "--no-progress"])
  err = capsys.readouterr().err.strip()
  assert code == 2 and len(err.splitlines()) == 1 and "pretrain checkpoint" in err


def test_pretrain_then_finetune_records(config_file, tmp_path, capsys):
  work = str(tmp_path / "w")
  common = ["--config", config_file, "--workdir", work, "--no-progress", "--config.pretrain.optim.min_steps=4",
            "--config.finetune.optim.min_steps=3", "--config.finetune.optim.epochs=0.1"]
  assert cli.main(["train", "--stage", "pretrain", *common]) == 0
  assert cli.main(["train", "--stage", "finetune", *common]) == 0
  pre, ft = records.read(os.path.join(work, "records.jsonl"))
  assert (ft["stage"], ft["dp"], ft["df"], ft["steps"], ft["distilled"]) == ("finetune", 208, 100, 3, False)
  assert ft["params"] < pre["params"]  # a 10-class head replaces the 52-class one


def test_preempted_exits_143(config_file, tmp_path, capsys, monkeypatch):
  def preempted(*a, **k):
    raise loop.Preempted("pretrain stopped by SIGTERM at step 3; checkpoint saved")
  monkeypatch.setattr(loop, "train_group", preempted)
  code = cli.main(["train", "--config", config_file, "--stage", "pretrain", "--workdir", str(tmp_path)])
  assert code == 143 and "SIGTERM at step 3" in capsys.readouterr().err
