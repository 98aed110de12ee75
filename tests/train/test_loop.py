"""The group engine end to end on the embedded data with vit_tiny_xs: a run gives the same result alone
or in a group, with any K, on either input path and any device count; divergence, kills and user errors."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import standin  # noqa: E402
from jaxscale import config as config_lib, models
from jaxscale.errors import JaxscaleError
from jaxscale.train import checkpoint as ckpt_lib, loop

SCRIPT = os.path.join(os.path.dirname(__file__), "group_script.py")


def _assert_same_params(a, b, atol=1e-5):
  """All parameters allclose, except the attention's key bias: its gradient is exactly zero (a shift
  of every key score of a query leaves the softmax unchanged), so Adam turns the rounding noise of a
  differently fused program into updates that change no output. Its query and value parts are compared."""
  assert a.keys() == b.keys()
  for k in a:
    x, y = a[k], b[k]
    if k.endswith("attn/qkv/bias"):
      third = x.shape[-1] // 3
      x, y = np.delete(x, np.s_[third:2 * third], -1), np.delete(y, np.s_[third:2 * third], -1)
    np.testing.assert_allclose(x, y, rtol=0, atol=atol, err_msg=k)


def _runs(root, seeds=(0, 1, 2), **kw):
  return [loop.Run(f"s{s}", s, 208, out_dir=os.path.join(root, f"s{s}"), meta=(("dp", 208),), **kw)
          for s in seeds]


@pytest.fixture(scope="module")
def group(tmp_path_factory, data_dir, make_config):
  """Three plain pretraining runs trained as one group (K = 5); tests must not modify them."""
  root = str(tmp_path_factory.mktemp("group"))
  config = make_config(data_dir)
  config.engine.steps_per_dispatch = 5
  results = loop.train_group(config_lib.validate(config), "pretrain", _runs(root), os.path.join(root, "g"),
                             show_progress=False)
  return root, results


def test_results_and_no_retraining(group, config):
  root, results = group
  assert [r["name"] for r in results] == ["s0", "s1", "s2"]
  for r in results:
    assert r["steps"] == 20 and len(r["losses"]) == 20 and r["losses"][-1] < r["losses"][0]
    assert r["params"] == models.param_count("vit_tiny_xs", 52, 16) and r["group_size"] == 3
    assert 0.0 <= r["eval_error"] <= 1.0 and r["eval_loss"] > 0 and r["diverged_at"] is None
    assert r["eval_count"] > 0
  assert len({r["subset_hash"] for r in results}) == 3  # each seed draws its own subset
  assert loop.train_group(config, "pretrain", _runs(root), os.path.join(root, "g")) == results
  assert ckpt_lib.open_finished(os.path.join(root, "s0"), "run")["dp"] == 208


@pytest.mark.parametrize("engine", [dict(steps_per_dispatch=1), dict(steps_per_dispatch=50),
                                    dict(steps_per_dispatch=3, data_on_device="never")],
                         ids=["alone-K1", "alone-K50", "alone-K3-grain"])
def test_a_run_alone_equals_the_run_in_its_group(group, config, tmp_path, engine):
  """Same final parameters (1e-5) and record for group size, K and input path."""
  root, results = group
  config.engine.update(engine)
  (alone,) = loop.train_group(config, "pretrain", _runs(str(tmp_path), seeds=(1,)), str(tmp_path / "g"),
                              show_progress=False)
  _assert_same_params(standin.run_params(str(tmp_path / "s1")), standin.run_params(os.path.join(root, "s1")))
  assert alone["eval_error"] == results[1]["eval_error"]
  assert alone["eval_loss"] == pytest.approx(results[1]["eval_loss"], abs=1e-6)
  np.testing.assert_allclose(alone["losses"], results[1]["losses"], atol=1e-5)
  assert alone["subset_hash"] == results[1]["subset_hash"]


def test_lr_by_model_is_the_models_peak_lr(group, config, tmp_path):
  """A model listed in ``optim.lr_by_model`` trains as a run given that peak lr explicitly."""
  root, results = group
  lr = 2 * config.pretrain.optim.lr
  config.pretrain.optim.lr_by_model = {"vit_tiny_xs": lr, "vit_tiny_m": 1.0}
  (by_model,) = loop.train_group(config, "pretrain", _runs(str(tmp_path / "a"), seeds=(1,)),
                                 str(tmp_path / "ga"), show_progress=False)
  config.pretrain.optim.lr_by_model = {}
  (explicit,) = loop.train_group(config, "pretrain", _runs(str(tmp_path / "b"), seeds=(1,), lr=lr),
                                 str(tmp_path / "gb"), show_progress=False)
  np.testing.assert_array_equal(by_model["losses"], explicit["losses"])
  assert not np.allclose(by_model["losses"], results[1]["losses"], atol=1e-4)


def test_finetune_starts_from_each_runs_backbone(group, config):
  root, _ = group
  runs = [loop.Run(f"f{s}", s, 100, init=os.path.join(root, f"s{s}")) for s in (0, 2)]
  graphdef, params, metas = loop.initial_params(config, "finetune", runs, 10, np.float32)
  assert [m["dp"] for m in metas] == [208, 208]
  for i, s in enumerate((0, 2)):
    pre = standin.run_params(os.path.join(root, f"s{s}"))
    np.testing.assert_array_equal(params["blocks"][0]["mlp"]["fc1"]["kernel"][i], pre["blocks/0/mlp/fc1/kernel"])
    assert params["head"]["kernel"].shape[-1] == 10
  assert not np.array_equal(params["blocks"][0]["mlp"]["fc1"]["kernel"][0], params["blocks"][0]["mlp"]["fc1"]["kernel"][1])


def test_kd_alpha_zero_in_a_distilled_group_equals_plain(group, config, tmp_path):
  root, results = group
  config.distill.update(teacher_checkpoint=os.path.join(root, "s0"), teacher_model="vit_tiny_xs")
  runs = [loop.Run("plain", 1, 208, alpha=0.0, out_dir=str(tmp_path / "plain")),
          loop.Run("kd", 1, 208, alpha=0.5, out_dir=str(tmp_path / "kd"))]
  plain, kd = loop.train_group(config, "pretrain", runs, str(tmp_path / "g"), show_progress=False)
  _assert_same_params(standin.run_params(str(tmp_path / "plain")), standin.run_params(os.path.join(root, "s1")))
  assert plain["eval_loss"] == pytest.approx(results[1]["eval_loss"], abs=1e-6)
  assert kd["eval_loss"] != pytest.approx(plain["eval_loss"], abs=1e-4)


@pytest.mark.parametrize("subset", [False, True], ids=["whole-split", "subset"])
def test_compile_ahead_compiles_what_the_group_then_runs(group, config, tmp_path, caplog, monkeypatch, subset):
  """The runner compiles the next group's programs in a thread from shapes alone (no teacher or
  backbone loaded, and a group's own subset of images not read); the group then compiles neither its
  train chunk nor its eval. With a budget of half the split, only the runs' images go on the device."""
  import jax
  from jaxscale.data import pipeline, sources
  root, _ = group
  config.engine.steps_per_dispatch = 4   # a program shape no other test compiles
  if subset:
    source = sources.open_source(config.pretrain.dataset, config.pretrain.train_split, config.data.data_dir)
    split_mb = pipeline.images_mb(len(source), config.data.image_size, pipeline.image_channels(source))
    config.engine.device_data_mb = split_mb / 2
  config.distill.update(teacher_checkpoint=os.path.join(root, "s0"), teacher_model="vit_tiny_xs")
  runs = [loop.Run("kd0", 0, 104, alpha=0.5), loop.Run("kd1", 1, 208, alpha=0.5)]  # sizes differ, steps equal

  def compiled(fn):
    caplog.clear()
    with jax.log_compiles(True), caplog.at_level("WARNING"):
      fn()
    return [r.getMessage().split(" with ")[0] for r in caplog.records if r.getMessage().startswith("Compiling jit(")]

  if subset:
    reads = []
    read_images = pipeline.read_images
    monkeypatch.setattr(pipeline, "read_images", lambda *a, **k: reads.append(a) or read_images(*a, **k))
  ahead = compiled(lambda: loop.compile_ahead(config, "pretrain", runs))
  assert "Compiling jit(chunk)" in ahead   # a K no other test uses: compiled here, not found in a cache
  if subset:
    assert reads == []   # compile_ahead read no image; the group reads its subset once
  during = compiled(lambda: loop.train_group(config, "pretrain", runs, str(tmp_path / "g"), show_progress=False))
  assert "Compiling jit(chunk)" not in during and "Compiling jit(eval_chunk)" not in during, during
  if subset:
    assert len(reads) == 1 and len(reads[0][1]) <= 104 + 208   # the runs' images, not the split


def test_a_diverging_run_stops_alone(group, config, tmp_path):
  root, results = group
  runs = [loop.Run("bad", 1, 208, lr=1e30), loop.Run("good", 1, 208, out_dir=str(tmp_path / "good"))]
  bad, good = loop.train_group(config, "pretrain", runs, str(tmp_path / "g"), show_progress=False)
  assert bad["diverged_at"] is not None and 1 <= bad["diverged_at"] <= 20
  assert good["diverged_at"] is None
  _assert_same_params(standin.run_params(str(tmp_path / "good")), standin.run_params(os.path.join(root, "s1")))


def test_user_errors_are_one_line(group, config, tmp_path):
  root, _ = group
  cases = []
  c = config.copy_and_resolve_references()
  c.distill.teacher_checkpoint = str(tmp_path / "nope")
  cases.append((c, "pretrain", dict(alpha=0.5), "teacher checkpoint"))
  c = config.copy_and_resolve_references()
  c.distill.update(teacher_checkpoint=os.path.join(root, "s0"), teacher_model="vit_tiny_s")
  cases.append((c, "pretrain", dict(alpha=0.5), "incompatible teacher"))
  c = config.copy_and_resolve_references()
  c.distill.update(teacher_checkpoint=os.path.join(root, "s0"), stage="finetune")
  cases.append((c, "finetune", dict(alpha=0.5, size=100, init=os.path.join(root, "s0")), "incompatible teacher"))
  c = config.copy_and_resolve_references()
  c.model.name = "vit_tiny_s"
  cases.append((c, "finetune", dict(size=100, init=os.path.join(root, "s0")), "holds model 'vit_tiny_xs'"))
  c = config.copy_and_resolve_references()
  cases.append((c, "finetune", dict(size=100, init=str(tmp_path / "none")), "pretrain checkpoint"))
  c = config.copy_and_resolve_references()
  c.mesh.data = 3
  cases.append((c, "pretrain", {}, "does not match the 1 devices"))
  c = config.copy_and_resolve_references()
  c.engine.update(data_on_device="always", device_data_mb=0.01)
  cases.append((c, "pretrain", {}, "config.engine.device_data_mb"))
  c = config.copy_and_resolve_references()
  c.pretrain.optim.lr_by_model = {"vit_tiny_q": 1e-3}
  cases.append((c, "pretrain", {}, "lr_by_model names unknown model(s) vit_tiny_q"))
  for i, (c, stage, run, message) in enumerate(cases):
    spec = dict(name="r", seed=0, size=208)
    spec.update(run)
    with pytest.raises(JaxscaleError) as e:
      loop.train_group(c, stage, [loop.Run(**spec)], str(tmp_path / str(i)), show_progress=False)
    assert message in str(e.value) and "\n" not in str(e.value), (i, str(e.value))


def test_a_checkpoint_of_the_other_optimizer_layout_is_refused(config, tmp_path):
  """One device (fsdp 1) keeps a flat optimizer state; a group checkpointed with the tree layout (a
  mesh with fsdp > 1, or a checkpoint from before the flat layout, whose meta has no layout) is refused
  with what to change, before its state is read."""
  from jaxscale.train import steps as steps_lib
  state = steps_lib.TrainState(step=np.zeros(1, np.int32), params={"w": np.zeros((1, 2), np.float32)},
                               opt_state=(), diverged_at=np.zeros(1, np.int32))
  k = int(config.engine.steps_per_dispatch)
  for i, layout in enumerate([{"optimizer_state": "tree"}, {}]):
    g = str(tmp_path / str(i))
    with ckpt_lib.GroupCheckpoints(g) as ckpts:
      ckpts.save(k, state, {"runs": ["r"], "losses": [[1.0] * k], "step": k, "steps_per_dispatch": k,
                            "wall_s": 0.0, **layout})
    with pytest.raises(JaxscaleError) as e:
      loop.train_group(config, "pretrain", [loop.Run("r", 0, 208)], g, show_progress=False)
    message = str(e.value)
    assert "holds a tree optimizer state" in message and "config.mesh.fsdp above 1" in message, message
    assert "delete that directory" in message
    assert "\n" not in message


@pytest.mark.parametrize("field,value", [("group_size", 0), ("steps_per_dispatch", -2)])
def test_engine_fields_must_be_positive(config, field, value):
  config.engine[field] = value
  with pytest.raises(JaxscaleError, match=f"config.engine.{field} must be a positive integer"):
    config_lib.validate(config)


@pytest.mark.parametrize("section,field,value,message", [
    ("engine", "cpu_devices", -1, "config.engine.cpu_devices must be 0 (one per core) or a positive integer"),
    ("mesh", "runs", -2, "config.mesh.runs must be -1 or 0 or >= 1"),
    ("mesh", "data", 0, "config.mesh.data must be -1 or >= 1")])
def test_device_fields_are_checked(config, section, field, value, message):
  config[section][field] = value
  with pytest.raises(JaxscaleError, match=re.escape(message)):
    config_lib.validate(config)


@pytest.mark.parametrize("signal_name,at,code", [("KILL", 3, -9), ("TERM", 2, 143)])
def test_killed_group_resumes_to_the_same_results(group, config, tmp_path, signal_name, at, code):
  """SIGKILL after dispatch 3 (checkpoints at steps 5, 10, 15 are asynchronous; each waits for the one
  before, so step 10 is complete) or SIGTERM after dispatch 2 (saves at 15, exits 143); the rerun ends
  with the uninterrupted group's results."""
  root, results = group
  config.engine.steps_per_dispatch = 5
  config.checkpoint.every_steps = 5
  runs, g = _runs(str(tmp_path / "w")), tmp_path / "w" / "g"
  proc, _ = standin.run_group_script(tmp_path, config, runs, g, at, signal_name)
  assert proc.returncode == code, proc.stderr[-2000:]
  latest = ckpt_lib.GroupCheckpoints(str(g)).latest_step()
  assert loop.finished(str(g)) is None and latest in (10, 15)
  # the saved meta lists exactly the losses of the saved state's steps (the loop appends more while the
  # writer runs; a resume starts at len(losses))
  meta = json.loads((g / str(latest) / "meta" / "metadata").read_text())
  assert meta["step"] == latest and {len(run) for run in meta["losses"]} == {latest}
  proc, again = standin.run_group_script(tmp_path, config, runs, g)
  assert proc.returncode == 0, proc.stderr[-2000:]
  for a, b in zip(again, results):
    assert a["eval_error"] == b["eval_error"] and abs(a["eval_loss"] - b["eval_loss"]) <= 1e-6
    np.testing.assert_allclose(a["losses"], b["losses"], atol=1e-6)
  _assert_same_params(standin.run_params(str(tmp_path / "w" / "s2")), standin.run_params(os.path.join(root, "s2")), atol=1e-6)


def test_eight_devices_match_one(group, config, tmp_path):
  """The group of 3 runs on 8 simulated devices: runs spread over a runs axis (padded to 8; the train
  and eval programs loop over each device's runs), runs x data x fsdp = 2x2x2 (vmapped), and the auto
  mesh (runs=0 on a CPU: every device on the runs axis)."""
  root, results = group
  config.engine.steps_per_dispatch = 5
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
  meshes = [(dict(runs=-1, data=1, fsdp=1), [8, 1, 1]), (dict(runs=2, data=2, fsdp=2), [2, 2, 2]),
            (dict(runs=0, data=-1, fsdp=1), [8, 1, 1])]
  for i, (mesh, shape) in enumerate(meshes):
    config.mesh.update(mesh)
    work = tmp_path / str(i)
    work.mkdir()
    proc, got = standin.run_group_script(work, config, _runs(str(work / "w")), work / "w" / "g", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [a["mesh"] for a in got] == [shape] * 3 and results[0]["mesh"] == [1, 1, 1]
    for a, b in zip(got, results):
      np.testing.assert_allclose(a["losses"], b["losses"], atol=1e-5)
      assert a["eval_loss"] == pytest.approx(b["eval_loss"], abs=1e-5)
      assert abs(a["eval_error"] - b["eval_error"]) <= 1 / b["eval_count"] + 1e-9


def _as_spec(runs):
  return [dict(name=r.name, seed=r.seed, size=r.size) for r in runs]


@pytest.mark.parametrize("devices", [1, 2])
def test_a_runs_record_does_not_depend_on_its_group(config, tmp_path, devices):
  """Bit for bit (==): seed 1 trained alone, in a group of 3 and of 5 (on 2 devices padded to 2, 4 and 6
  runs, on a runs axis of 2), 300 steps of the smallest rung, long enough for the last bits of a
  vmapped matmul to have been amplified to ~1e-4 in the losses."""
  config.model.name = "vit_tiny_xxs"
  config.pretrain.optim.update(min_steps=300, max_steps=300)
  config.engine.steps_per_dispatch = 50
  groups = [[str(tmp_path / f"g{n}"), _as_spec(_runs("", seeds=seeds))]
            for n, seeds in enumerate([(1,), (0, 1, 2), (3, 4, 1, 5, 6)])]
  cfg, spec, out = tmp_path / "c.json", tmp_path / "spec.json", tmp_path / "out.json"
  cfg.write_text(json.dumps(config_lib.validate(config).to_dict()))
  spec.write_text(json.dumps({"stage": "pretrain", "groups": groups}))
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, SCRIPT, str(cfg), str(spec), str(out)], env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  alone, *grouped = [next(r for r in results if r["name"] == "s1") for results in json.loads(out.read_text())]
  assert alone["mesh"] == [devices, 1, 1] and len(alone["losses"]) == 300
  for other in grouped:
    assert other["mesh"] == alone["mesh"] and other["group_size"] != alone["group_size"]
    for field in ("losses", "eval_error", "eval_loss", "subset_hash"):
      assert other[field] == alone[field], field
