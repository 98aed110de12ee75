"""Everything `jaxscale study` can check is checked before the first step: one line, exit 2, nothing
trained and no study.json left behind to refuse the corrected command."""

import json
import logging
import os

import pytest

from jaxscale import cli
from jaxscale.train import loop

SMOKE = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "smoke.py")


@pytest.fixture(autouse=True)
def fresh_log(monkeypatch):
  """jaxscale's log lines go to this test's stderr (the CLI binds its handler to the stderr it first sees)."""
  monkeypatch.setattr(logging.getLogger("jaxscale"), "handlers", [])


@pytest.fixture
def no_training(monkeypatch):
  monkeypatch.setattr(loop, "train_group", lambda *a, **k: pytest.fail("a cell trained before the refusal"))


def _refused(capsys, workdir, *extra, config=SMOKE):
  code = cli.main(["study", "--config", config, "--workdir", str(workdir), *extra])
  err = capsys.readouterr().err
  assert code == 2 and err.startswith("jaxscale: error: ") and err.count("\n") == 1, err
  assert "Traceback" not in err
  return err


@pytest.mark.parametrize("override, needle", [
    ("--config.study.law=transfer_addtive", "config.study.law is 'transfer_addtive'; use 'auto'"),
    ("--config.study.law=power", "config.study.law 'power' reads input x"),
    ("--config.study.models=('vit_tiny_xs',)", "config.study.models has one value ('vit_tiny_xs')"),
    ("--config.study.df=(50,)", "give config.study.df at least 2 values"),
    ("--config.study.df=(50,5000)", "config.study.df asks for 5000 images"),
    ("--config.pretrain.optim.lr=1e-2", "config.pretrain.optim.lr_by_model.vit_tiny_s = 0.003 sets its learning rate"),
    ("--config.pretrain.optim.lr=inf", "config.pretrain.optim.lr must be a finite number, got inf"),
    ("--config.pretrain.optim.lr_by_model.vit_tiny_s=inf", "lr_by_model.vit_tiny_s must be a finite number"),
    ("--config.distill.temperature=inf", "config.distill.temperature must be a finite number"),
    ("--config.pretrain.optim.max_steps=5", "max_steps (5) is below min_steps (8)"),
])
def test_a_mistake_is_refused_before_anything_is_written(tmp_path, data_dir, capsys, no_training, override,
                                                         needle):
  workdir = tmp_path / "w"
  err = _refused(capsys, workdir, override, f"--config.data.data_dir={data_dir}")
  assert needle in err
  assert not (workdir / "study.json").exists() and not (workdir / "records.jsonl").exists()


def test_the_law_checks_pass_the_shipped_configs_and_need_every_axis():
  from jaxscale.config import load
  from jaxscale.errors import JaxscaleError
  from jaxscale.study import runner
  configs = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
  for name in ("smoke.py", "default.py", "default.py:quick", "paper.py"):
    runner.check_law(load(os.path.join(configs, name)))  # 2 x 2 x 2 x 1 runs per arm and more: 7 parameters fit
  for field, value in (("dp", "(104,)"), ("models", "('vit_tiny_s',)"), ("df", "(50,)")):
    with pytest.raises(JaxscaleError, match=f"config.study.{field} has one value"):
      runner.check_law(load(SMOKE, [f"--config.study.{field}={value}", "--config.study.law=auto"]))


@pytest.mark.parametrize("extra", [["--dry-run"], []])
def test_infinite_epochs_are_one_line_even_in_a_dry_run(tmp_path, capsys, no_training, extra):
  err = _refused(capsys, tmp_path / "w", "--config.pretrain.optim.epochs=inf", *extra)
  assert "config.pretrain.optim.epochs must be a finite number" in err


def test_a_variant_the_config_lacks_is_one_line(tmp_path, capsys, no_training):
  err = _refused(capsys, tmp_path / "w", config=f"{SMOKE}:quick")
  assert "variant" in err and "quick" in err
  plain = tmp_path / "plain.py"  # a get_config that never reads its argument
  plain.write_text("from jaxscale.config import base_config\ndef get_config(arg=None):\n  return base_config()\n")
  err = _refused(capsys, tmp_path / "w", config=f"{plain}:quick")
  assert "has no variants" in err and "':quick'" in err


def test_a_truncated_study_json_is_one_line(tmp_path, data_dir, capsys, no_training):
  workdir = tmp_path / "w"
  workdir.mkdir()
  (workdir / "study.json").write_text('{"hash": "abc", "config": {"seed": ')
  err = _refused(capsys, workdir, f"--config.data.data_dir={data_dir}")
  assert "study.json is not a study's config" in err and "--force-new" in err
  assert cli.main(["report", "--workdir", str(workdir)]) == 2
  err = capsys.readouterr().err
  assert "study.json is not a study's config" in err and err.count("\n") == 1
  (workdir / "study.json").write_text(json.dumps(["not", "a", "study"]))
  assert "not a study's config" in _refused(capsys, workdir, f"--config.data.data_dir={data_dir}")


TENSORSTORE_ENOSPC = ('RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database at local file "{d}/ocdbt/": '
                      'Failed writing: "{d}/ocdbt/d/91e1": Failed to write 4571 bytes to file 12: No space left on '
                      "device [os_error_code='28']")


def test_a_full_disk_is_one_line_and_keeps_the_finished_records(tmp_path, data_dir, capsys, monkeypatch):
  from jaxscale.study import records
  workdir = tmp_path / "w"
  calls = []

  def train_group(cfg, stage, runs, group_dir, **k):  # the first group trains, the second meets a full disk
    calls.append(group_dir)
    if len(calls) > 1:
      raise ValueError(TENSORSTORE_ENOSPC.format(d=group_dir))
    return [dict(params=1000, subset_hash="h", steps=8, eval_error=0.5, eval_loss=1.0, eval_count=10,
                 diverged_at=None, wall_s=1.0, group_size=len(runs)) for _ in runs]
  monkeypatch.setattr(loop, "train_group", train_group)
  monkeypatch.setattr(loop, "compile_ahead", lambda *a, **k: None)
  assert cli.main(["study", "--config", SMOKE, "--workdir", str(workdir), f"--config.data.data_dir={data_dir}",
                   "--no-progress"]) == 2
  out = capsys.readouterr().err
  errors = [line for line in out.splitlines() if line.startswith("jaxscale: error: ")]
  assert len(errors) == 1 and "Traceback" not in out
  err = errors[0]
  done = records.read(str(workdir / "records.jsonl"))
  assert len(done) >= 1 and len(calls) == 2
  assert "No space left on device (ENOSPC) while training group" in err
  assert f"the {len(done)} finished records in {workdir / 'records.jsonl'} are intact" in err


def test_a_disk_too_small_for_the_next_group_is_refused_before_it_trains(tmp_path, data_dir, capsys, monkeypatch,
                                                                          no_training):
  import collections
  from jaxscale.study import runner
  usage = collections.namedtuple("usage", "total used free")
  monkeypatch.setattr(runner.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
  assert cli.main(["study", "--config", SMOKE, "--workdir", str(tmp_path / "w"), "--no-progress",
                   f"--config.data.data_dir={data_dir}"]) == 2
  out = capsys.readouterr().err
  errors = [line for line in out.splitlines() if line.startswith("jaxscale: error: ")]
  assert len(errors) == 1 and "Traceback" not in out
  assert "has 0.00 MB free but group" in errors[0] and "the 0 finished records" in errors[0]


def test_os_errors_are_found_behind_a_library_s_text():
  import errno
  from jaxscale import fileio
  e = fileio.os_error_of(ValueError(TENSORSTORE_ENOSPC.format(d="/w/g")))
  assert (e.errno, e.filename) == (errno.ENOSPC, "/w/g/ocdbt/d/91e1")
  try:
    try:
      open("/nonexistent-dir/x", "w")
    except OSError as inner:
      raise RuntimeError("wrapped") from inner
  except RuntimeError as outer:
    assert fileio.os_error_of(outer).errno == errno.ENOENT
  assert fileio.os_error_of(RuntimeError("boom")) is None
