"""The compiled group programs on a stand-in model: schedule, learning, KD limits, divergence masks,
eval masking, and equality across device meshes."""

import json
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from flax import nnx

from jaxscale.train import steps as steps_lib

sys.path.insert(0, os.path.dirname(__file__))
import standin  # noqa: E402


def _optim(**kw):
  base = dict(optimizer="adamw", lr=1e-3, weight_decay=1e-4, momentum=0.9, warmup_frac=0.1,
              grad_clip=1.0, batch_size=32, epochs=10.0, min_steps=100, max_steps=0)
  base.update(kw)
  return types.SimpleNamespace(**base)


@pytest.mark.parametrize("size,kw,want", [
    (200, {}, 100),                                   # ceil(10 * 200 / 32) = 63 < min_steps
    (1000, {}, 313),                                  # ceil(10 * 1000 / 32)
    (1000, {"max_steps": 250}, 250),                  # capped
    (64, {"epochs": 1.0, "min_steps": 1}, 2),
    (64, {"min_steps": 400, "max_steps": 400}, 400),  # a fixed budget whatever the subset
    (30000, {"min_steps": 400, "max_steps": 400}, 400),
])
def test_num_train_steps_rule(size, kw, want):
  assert steps_lib.num_train_steps(_optim(**kw), size) == want


def test_learning_rate_warmup_then_cosine_and_its_table():
  o = _optim(lr=1.0, warmup_frac=0.1)
  lrs = [steps_lib.learning_rate(o, s, 100) for s in range(100)]
  assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
  assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
  assert 0 < lrs[-1] < 1e-2
  table = steps_lib.learning_rate_table(o, 100, peak=0.5)
  assert table.dtype == np.float32 and table.shape == (100,)
  np.testing.assert_array_equal(table, np.float32([0.5 * x for x in lrs]))


def _train(chunk, state, consts, teacher, images, labels, k, lr=3e-3, valid=None):
  losses = []
  for d in range(len(images) // k):
    sl = slice(d * k, (d + 1) * k)
    state, loss = chunk(state, consts, teacher, {"images": images[sl], "labels": labels[sl]},
                        np.full((k, images.shape[1]), lr, np.float32),
                        np.ones((k, images.shape[1]), bool) if valid is None else valid[sl])
    losses.append(np.asarray(loss))
  return state, np.concatenate(losses)


def test_group_learns_and_is_deterministic():
  images, labels = standin.make_images(15, 16, 2)
  runs = []
  for _ in range(2):
    _, _, state, _, chunk, consts, _ = standin.group(runs=2)
    state, losses = _train(chunk, state, consts, None, images, labels, k=5)
    assert list(np.asarray(state.step)) == [15, 15] and losses.shape == (15, 2)
    runs.append((losses, jax.tree_util.tree_leaves(jax.device_get(state.params))))
  assert (runs[0][0][-1] < 0.5 * runs[0][0][0]).all()
  for a, b in zip(runs[0][1], runs[1][1]):
    np.testing.assert_array_equal(a, b)


def test_padding_steps_change_nothing():
  images, labels = standin.make_images(4, 16, 2)
  _, _, state, _, chunk, consts, _ = standin.group(runs=2)
  before = jax.device_get(state.params)
  state, _ = _train(chunk, state, consts, None, images, labels, k=4, valid=np.zeros((4, 2), bool))
  assert list(np.asarray(state.step)) == [0, 0]
  for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(jax.device_get(state.params))):
    np.testing.assert_array_equal(a, b)


def test_a_runs_steps_past_its_own_last_one_change_nothing():
  """The mask is per run: run 1 stops after 2 of the 4 steps, and its state is the one 2 steps give it."""
  images, labels = standin.make_images(4, 16, 2)
  _, _, state, _, chunk, consts, _ = standin.group(runs=2)
  valid = np.stack([np.ones(4, bool), np.arange(4) < 2], axis=1)   # [K, R]
  state, _ = _train(chunk, state, consts, None, images, labels, k=4, valid=valid)
  _, _, short, _, chunk, consts, _ = standin.group(runs=2)
  short, _ = _train(chunk, short, consts, None, images[:2], labels[:2], k=2)
  assert list(np.asarray(state.step)) == [4, 2]
  pairs = list(zip(jax.tree_util.tree_leaves(jax.device_get(state.params)),
                   jax.tree_util.tree_leaves(jax.device_get(short.params))))
  for a, b in pairs:
    np.testing.assert_allclose(a[1], b[1], rtol=0, atol=1e-6)
  assert not all(np.allclose(a[0], b[0], rtol=0, atol=1e-6) for a, b in pairs)   # run 0 trained on


def test_kd_gradient_vanishes_with_alpha_one_and_identical_teacher():
  """With SGD (no Adam normalisation) the update is -lr * grad: ~0 when the teacher is the student."""
  sgd = ("sgd", 0.0, 0.0, 0.0, True)
  images, labels = standin.make_images(1, 16, 1)
  for same, expect_small in ((True, True), (False, False)):
    _, _, state, _, chunk, consts, t_params = standin.group(runs=1, teacher=True, settings=sgd, alpha=1.0)
    if same:  # the teacher's parameters are the student's own
      t_params = jax.tree_util.tree_map(lambda x: x[0], jax.device_get(state.params))
    before = jax.device_get(state.params)
    state, _ = _train(chunk, state, consts, t_params, images, labels, k=1, lr=1.0)
    change = max(float(np.abs(a - b).max()) for a, b in
                 zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(jax.device_get(state.params))))
    assert (change < 1e-6) == expect_small, change


@pytest.mark.parametrize("rule", [("adamw", 0.9), ("sgd", 0.9)])
def test_flat_optimizer_state_gives_the_tree_layouts_update(rule):
  """The raveled layout (one moment vector per run) is the same update rule as the per-parameter
  one: with clipping active and decay masked per parameter, 10 steps agree to float32 rounding.
  A clip-free run must differ, or the test would not be testing the clip."""
  images, labels = standin.make_images(10, 16, 2)
  finals = {}
  for flat, clip in ((True, 0.05), (False, 0.05), (True, 0.0)):
    _, _, state, _, chunk, consts, _ = standin.group(runs=2, settings=(*rule, 1e-2, clip, flat))
    state, _ = _train(chunk, state, consts, None, images, labels, k=5)
    finals[flat, clip] = jax.tree_util.tree_leaves(jax.device_get(state.params))
  for a, b in zip(finals[True, 0.05], finals[False, 0.05]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert max(float(np.abs(a - b).max()) for a, b in zip(finals[True, 0.05], finals[True, 0.0])) > 1e-3


@pytest.mark.parametrize("settings", [(*s, flat) for flat in (True, False) for s in (
    ("adamw", 0.9, 1e-4, 1.0), ("sgd", 0.9, 1e-4, 0.0), ("sgd", 0.0, 0.0, 0.0))])
def test_init_from_zeros_is_the_optimizers_own_init(settings):
  """make_init builds the state from zeros on the host; it must equal optax's init, leaf for leaf."""
  mesh, _, state, state_sh, _, _, _ = standin.group(settings=settings)
  want = jax.device_get(steps_lib.create_state(jax.device_get(state.params), settings))
  got = jax.device_get(state)
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)
  moments = jax.tree_util.tree_leaves(state.opt_state)
  assert bool(moments) == (settings[0] == "adamw" or settings[1] > 0)
  for x, sh in zip(moments, jax.tree_util.tree_leaves(state_sh.opt_state)):
    assert x.sharding.is_equivalent_to(sh, x.ndim)


@pytest.mark.parametrize("one_by_one", [False, True], ids=["vmapped", "looped"])
def test_eval_chunk_masks_padding(one_by_one, monkeypatch):
  """Either way of mapping the runs (see `runs_one_by_one`) gives each run's own sums."""
  monkeypatch.setattr(steps_lib, "runs_one_by_one", lambda mesh: one_by_one)
  mesh, graphdef, state, state_sh, _, _, _ = standin.group(runs=2)
  ev = steps_lib.make_eval_chunk(graphdef, mesh, state_sh.params)
  images, labels = standin.make_images(1, 8, 1)
  chunk = {"image": images[0, 0], "label": labels[0, 0], "mask": np.array([1, 1, 1, 1, 1, 0, 0, 0], bool)}
  assert ("while" in ev.lower(state.params, chunk).as_text()) == one_by_one  # lax.map is a loop
  sums = jax.device_get(ev(state.params, chunk))
  assert float(sums["count"]) == 5 and sums["errors"].shape == (2,)
  for r in range(2):
    params = jax.tree_util.tree_map(lambda x: x[r], jax.device_get(state.params))
    x = images[0, 0].astype(np.float32) * np.float32(2 / 255) - 1
    logits = np.asarray(nnx.merge(graphdef, params)(x))
    wrong = (logits.argmax(-1) != labels[0, 0])[:5].sum()
    assert float(sums["errors"][r]) == wrong
    ref = -jax.nn.log_softmax(logits)[np.arange(8), labels[0, 0]][:5].sum()
    np.testing.assert_allclose(float(sums["loss"][r]), float(ref), rtol=1e-5)


def test_one_device_vs_eight_simulated_devices(tmp_path):
  """runs=2 x data=4 and runs=1 x data=2 x fsdp=4 give the 1-device loss curves (and shard the big kernel
  on fsdp)."""
  out = tmp_path / "out.json"
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "standin.py"), str(out),
                  "1x1x1", "2x4x1", "1x2x4"], check=True, env=env, timeout=300)
  r = json.loads(out.read_text())
  assert r["1x1x1"]["devices"] == 8
  assert "fsdp" in r["1x2x4"]["spec"] and "fsdp" not in r["2x4x1"]["spec"] and "runs" in r["2x4x1"]["spec"]
  for mesh in ("2x4x1", "1x2x4"):
    np.testing.assert_allclose(r[mesh]["losses"], r["1x1x1"]["losses"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(r[mesh]["kernel"], r["1x1x1"]["kernel"], rtol=0, atol=1e-5)
  assert (np.asarray(r["1x1x1"]["losses"][-1]) < np.asarray(r["1x1x1"]["losses"][0])).all()
