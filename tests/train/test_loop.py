"""Stages end to end on the embedded data with vit_tiny_xs: records, determinism, resume, KD, errors."""

import json
import os
import random
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from jaxscale.study import records
from jaxscale.errors import JaxscaleError
from jaxscale.train import checkpoint as ckpt_lib, loop, sharding

SCRIPT = os.path.join(os.path.dirname(__file__), "stage_script.py")
FIELDS = {"stage", "model", "params", "dp", "df", "distilled", "teacher", "seed", "subset_hash", "steps",
          "flops", "eval_error", "eval_loss", "wall_s", "config_hash", "version", "cell_id", "time"}


def _final_params(stage_dir):
  """The final parameters of a finished stage as {path: numpy}."""
  mesh = sharding.make_mesh(type("M", (), {"data": 1, "fsdp": 1}), devices=jax.devices()[:1])
  _, params, _ = loop.load_finished_params(stage_dir, "checkpoint", mesh, np.float32)
  return {"/".join(map(str, k)): np.asarray(v) for k, v in nnx.to_flat_state(params)}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, data_dir, make_config):
  """One finished plain pretrain (shared by several tests; they must not modify it)."""
  workdir = str(tmp_path_factory.mktemp("plain"))
  record = loop.run_stage(make_config(data_dir), "pretrain", workdir, cell_id="c0", show_progress=False)
  return workdir, record


def test_pretrain_record_and_no_retraining(pretrained, config):
  workdir, record = pretrained
  assert set(record) == FIELDS
  assert record["stage"] == "pretrain" and record["dp"] == 208 and record["df"] == 0
  assert record["steps"] == 20 and record["distilled"] is False and record["cell_id"] == "c0"
  from jaxscale import models
  assert record["params"] == models.param_count("vit_tiny_xs", 52, 16)
  assert 0.0 <= record["eval_error"] <= 1.0 and record["eval_loss"] > 0
  assert record["flops"] == pytest.approx(3 * models.flops_per_image("vit_tiny_xs", 52, 16) * 20 * 32)
  losses = loop.stage_losses(workdir, "pretrain")
  assert len(losses) == 20 and losses[-1] < losses[0]
  again = loop.run_stage(config, "pretrain", workdir, cell_id="c0", show_progress=False)
  assert again == record
  assert records.read(os.path.join(workdir, "records.jsonl")) == [record]


def test_two_runs_are_bit_identical(pretrained, config, tmp_path):
  workdir, record = pretrained
  other = loop.run_stage(config, "pretrain", str(tmp_path), cell_id="c0", show_progress=False)
  assert other["subset_hash"] == record["subset_hash"] and other["eval_loss"] == record["eval_loss"]
  a, b = _final_params(os.path.join(workdir, "pretrain")), _final_params(str(tmp_path / "pretrain"))
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert loop.stage_losses(workdir, "pretrain") == loop.stage_losses(str(tmp_path), "pretrain")


def test_finetune_starts_from_pretrained_backbone(pretrained, config, tmp_path):
  workdir, pre = pretrained
  config.finetune.init_checkpoint = os.path.join(workdir, "pretrain")
  model, meta = loop.build_student(config, "finetune", str(tmp_path), 10, None, np.float32)
  assert meta["dp"] == 208 and model.head.kernel.shape[-1] == 10
  backbone = {"/".join(map(str, k)): np.asarray(v) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  pretrained_params = _final_params(os.path.join(workdir, "pretrain"))
  shared = [k for k in backbone if not k.startswith("head/")]
  assert shared and all(k in pretrained_params for k in shared)
  for k in shared:
    np.testing.assert_array_equal(backbone[k], pretrained_params[k], err_msg=k)
  record = loop.run_stage(config, "finetune", str(tmp_path), show_progress=False)
  assert record["stage"] == "finetune" and record["dp"] == 208 and record["df"] == 100
  assert record["steps"] == 10 and record["distilled"] is False and record["subset_hash"] != pre["subset_hash"]


def test_kd_alpha_zero_equals_plain_training_and_is_recorded(pretrained, config, tmp_path):
  workdir, _ = pretrained
  config.distill.update(teacher_checkpoint=os.path.join(workdir, "pretrain"), alpha=0.0, stage="both")
  config.pretrain.optim.min_steps = 6
  record = loop.run_stage(config, "pretrain", str(tmp_path / "kd"), show_progress=False)
  assert record["distilled"] is True and record["teacher"] == "vit_tiny_xs"
  config.distill.teacher_checkpoint = ""
  plain = loop.run_stage(config, "pretrain", str(tmp_path / "plain"), show_progress=False)
  assert plain["distilled"] is False
  a, b = _final_params(str(tmp_path / "kd" / "pretrain")), _final_params(str(tmp_path / "plain" / "pretrain"))
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-6, err_msg=k)
  assert record["flops"] > plain["flops"]  # the teacher's forward passes count
  # A fine-tune from the distilled pretrain is marked distilled too; its teacher (52 classes)
  # cannot teach the 10-class fine-tune, so distil only in pretrain here.
  config.distill.update(teacher_checkpoint=os.path.join(workdir, "pretrain"), stage="pretrain")
  config.finetune.optim.min_steps = 3
  ft = loop.run_stage(config, "finetune", str(tmp_path / "kd"), show_progress=False)
  assert ft["distilled"] is True and ft["teacher"] == "vit_tiny_xs"


def test_user_errors_are_one_line(pretrained, config, tmp_path):
  workdir, _ = pretrained
  cases = []
  c = config.copy_and_resolve_references()
  c.distill.teacher_checkpoint = str(tmp_path / "nope")
  cases.append((c, "pretrain", "teacher checkpoint"))
  c = config.copy_and_resolve_references()
  c.distill.update(teacher_checkpoint=os.path.join(workdir, "pretrain"), stage="finetune")
  c.finetune.init_checkpoint = os.path.join(workdir, "pretrain")
  cases.append((c, "finetune", "incompatible teacher"))
  c = config.copy_and_resolve_references()
  c.distill.update(teacher_checkpoint=os.path.join(workdir, "pretrain"), teacher_model="vit_tiny_s")
  cases.append((c, "pretrain", "incompatible teacher"))
  c = config.copy_and_resolve_references()
  c.mesh.data = 3
  cases.append((c, "pretrain", "does not match the 1 devices"))
  c = config.copy_and_resolve_references()
  c.model.name = "vit_tiny_s"
  c.finetune.init_checkpoint = os.path.join(workdir, "pretrain")
  cases.append((c, "finetune", "holds model 'vit_tiny_xs'"))
  c = config.copy_and_resolve_references()
  cases.append((c, "finetune", "pretrain checkpoint"))  # no <workdir>/pretrain in tmp_path
  for i, (c, stage, message) in enumerate(cases):
    with pytest.raises(JaxscaleError) as e:
      loop.run_stage(c, stage, str(tmp_path / str(i)), show_progress=False)
    assert message in str(e.value) and "\n" not in str(e.value), (i, str(e.value))
    assert not os.path.exists(tmp_path / str(i) / "records.jsonl")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(config, tmp_path):
  config.pretrain.optim.update(optimizer="sgd", lr=1e36, grad_clip=0.0, momentum=0.0, warmup_frac=0.0)
  config.checkpoint.every_steps = 1
  with pytest.raises(JaxscaleError, match=r"at step \d+") as e:
    loop.run_stage(config, "pretrain", str(tmp_path), show_progress=False)
  bad_step = int(str(e.value).split("at step ")[1].split(";")[0])
  with ckpt_lib.StageCheckpoints(str(tmp_path / "pretrain")) as ck:
    assert ck.latest_step() == bad_step - 1
  assert "\n" not in str(e.value)
  assert not os.path.exists(tmp_path / "records.jsonl")


def _run_script(config, workdir, log, *extra):
  cfg = os.path.join(workdir, "config.json")
  os.makedirs(workdir, exist_ok=True)
  with open(cfg, "w") as f:
    json.dump(config.to_dict(), f)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, SCRIPT, cfg, "pretrain", workdir, log, *map(str, extra)],
                        env=env, capture_output=True, text=True, timeout=300)


def _seen(log):
  return [json.loads(line) for line in open(log)]


def test_sigkill_then_resume_matches_uninterrupted_run(pretrained, config, tmp_path, monkeypatch):
  """A subprocess is SIGKILLed at a random update (KILL_AT=N in the environment fixes it);
  resuming here ends where the plain run ended, having seen the same examples."""
  from jaxscale.train import steps as steps_lib
  workdir, _ = pretrained
  config.checkpoint.every_steps = 4
  kill = int(os.environ.get("KILL_AT", 0)) or random.Random().randint(5, 19)
  work, log = str(tmp_path / "w"), str(tmp_path / "log.jsonl")
  first = _run_script(config, work, log, kill, "KILL")
  assert first.returncode == -9, (kill, first.stderr[-2000:])
  assert not os.path.exists(os.path.join(work, "records.jsonl"))
  # Resume in this process, logging the same way as the script.
  real_shard, real_lr, pending = sharding.shard_batch, steps_lib.learning_rate, {}

  def shard(batch, mesh):
    if "mask" not in batch:
      pending["labels"] = [int(x) for x in batch["label"]]
    return real_shard(batch, mesh)

  def lr(optim, step, total):
    with open(log, "a") as f:
      f.write(json.dumps({"step": step, "labels": pending["labels"]}) + "\n")
    return real_lr(optim, step, total)

  monkeypatch.setattr(sharding, "shard_batch", shard)
  monkeypatch.setattr(steps_lib, "learning_rate", lr)
  loop.run_stage(config, "pretrain", work, show_progress=False)
  seen = _seen(log)
  resumed_at = (kill // 4) * 4
  steps = [s["step"] for s in seen]
  assert steps == list(range(kill + 1)) + list(range(resumed_at, 20)), f"killed at step {kill}"
  # The examples seen after the restart are those the uninterrupted run saw at the same steps.
  reference = {}
  for s in seen:
    assert reference.setdefault(s["step"], s["labels"]) == s["labels"], f"step {s['step']}, kill {kill}"
  a = _final_params(os.path.join(workdir, "pretrain"))
  b = _final_params(os.path.join(work, "pretrain"))
  for k in a:
    np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-6, err_msg=f"{k}, killed at step {kill}")
  assert len(records.read(os.path.join(work, "records.jsonl"))) == 1


def test_sigterm_saves_checkpoint_and_resumes(config, tmp_path, monkeypatch):
  """In-process: SIGTERM during update 3 -> checkpoint at step 4, Preempted; a rerun finishes."""
  import signal
  from jaxscale.train import steps as steps_lib
  config.pretrain.optim.min_steps = 8
  seen, real = [], steps_lib.learning_rate

  def lr(optim, step, total):
    seen.append(step)
    if step == 3 and seen.count(3) == 1:
      os.kill(os.getpid(), signal.SIGTERM)
    return real(optim, step, total)

  monkeypatch.setattr(steps_lib, "learning_rate", lr)
  with pytest.raises(loop.Preempted, match="SIGTERM at step 4") as e:
    loop.run_stage(config, "pretrain", str(tmp_path), show_progress=False)
  assert "\n" not in str(e.value)
  assert signal.getsignal(signal.SIGTERM) is not None  # handler restored
  with ckpt_lib.StageCheckpoints(str(tmp_path / "pretrain")) as ck:
    assert ck.latest_step() == 4
  assert not os.path.exists(tmp_path / "records.jsonl")
  record = loop.run_stage(config, "pretrain", str(tmp_path), show_progress=False)
  assert seen == list(range(8)) and record["steps"] == 8
  assert records.read(str(tmp_path / "records.jsonl")) == [record]


def test_append_record_survives_a_partial_line(tmp_path):
  path = str(tmp_path / "r.jsonl")
  records.append(path, {"a": 1})
  with open(path, "a") as f:
    f.write('{"half": ')  # a crash mid-write
  records.append(path, {"b": 2})
  assert records.read(path) == [{"a": 1}, {"b": 2}]


def test_purpose_seeds_differ_and_are_stable():
  assert loop.purpose_seed(0, "init") == loop.purpose_seed(0, "init")
  assert len({loop.purpose_seed(s, p) for s in (0, 1) for p in ("init", "pretrain/subset", "pretrain/data")}) == 6


@pytest.mark.slow
def test_stage_on_8_devices_matches_1_device(config, tmp_path):
  """Slow (a subprocess running 3 stages; the step-level test in test_steps covers the same):
  vit_tiny_xs on the real pipeline gives the same loss curve on data=8 and data=2 x fsdp=4."""
  cfg = tmp_path / "c.json"
  cfg.write_text(json.dumps(config.to_dict()))
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")
  out = tmp_path / "out.json"
  subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "stage_meshes.py"), str(cfg),
                  str(out), str(tmp_path / "w"), "1x1", "8x1", "2x4"], env=env, check=True, timeout=600)
  r = json.loads(out.read_text())
  for mesh in ("8x1", "2x4"):
    np.testing.assert_allclose(r[mesh]["losses"], r["1x1"]["losses"], rtol=0, atol=1e-5)
    assert r[mesh]["eval_loss"] == pytest.approx(r["1x1"]["eval_loss"], abs=1e-5)
