"""Stage checkpoints: round trip of state and data-iterator position, keep-N, finished stages."""

import os
import sys
import types

import grain
import jax
import numpy as np
import pytest
from flax import nnx

from jaxscale.errors import JaxscaleError
from jaxscale.train import checkpoint as ckpt_lib, sharding, steps as steps_lib

sys.path.insert(0, os.path.dirname(__file__))
import standin  # noqa: E402


def _iterator():
  return iter(grain.MapDataset.range(1000).shuffle(seed=3).batch(4).to_iter_dataset())


def _state():
  mesh = sharding.make_mesh(types.SimpleNamespace(data=1, fsdp=1), devices=jax.devices()[:1])
  graphdef, params = nnx.split(standin.StandIn(5, nnx.Rngs(0)), nnx.Param)
  rng = jax.random.key(0)
  abstract = jax.eval_shape(lambda p: steps_lib.create_state(p, standin.SETTINGS, rng), params)
  sh = steps_lib.state_shardings(abstract, standin.SETTINGS, mesh)
  state = steps_lib.create_state(params, standin.SETTINGS, rng)
  step = steps_lib.make_train_step(graphdef, standin.SETTINGS, state_sharding=sh, mesh=mesh)
  return mesh, abstract, sh, state, step


def test_round_trip_and_keep(tmp_path):
  mesh, abstract, sh, state, step = _state()
  it = _iterator()
  batches = standin.make_batches(5, 8)
  with ckpt_lib.StageCheckpoints(str(tmp_path / "s"), keep=2, every_steps=2) as ck:
    seen = []
    for i, b in enumerate(batches):
      seen.append(next(it))
      state, _ = step(state, sharding.shard_batch(b, mesh), None, np.float32(1e-2))
      ck.save(state, it, {"i": i, "finished": False})
    assert ck.latest_step() == 4
    saved_steps = sorted(int(p) for p in os.listdir(tmp_path / "s") if p.isdigit())
  assert saved_steps == [2, 4]  # every 2 steps, the last 2 kept

  fresh = _iterator()
  with ckpt_lib.StageCheckpoints(str(tmp_path / "s"), keep=2, every_steps=2) as ck:
    restored, meta = ck.restore(abstract, sh, fresh)
  assert meta == {"i": 3, "finished": False}
  assert int(restored.step) == 4
  np.testing.assert_array_equal(next(fresh), seen[4])  # resumes right after the 4th batch
  # Step 5 was not saved; the state at step 4 differs from the final one but restores exactly.
  for a, b in zip(jax.tree_util.tree_leaves(restored.opt_state), jax.tree_util.tree_leaves(abstract.opt_state)):
    assert a.shape == b.shape and a.dtype == b.dtype
  with ckpt_lib.StageCheckpoints(str(tmp_path / "s")) as ck:
    params = ck.restore_params(abstract.params, sh.params)
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(restored.params)):
    np.testing.assert_array_equal(a, b)


def test_restored_training_continues_identically(tmp_path):
  mesh, abstract, sh, state, step = _state()
  batches = standin.make_batches(6, 8)
  it = _iterator()
  with ckpt_lib.StageCheckpoints(str(tmp_path / "s"), every_steps=3) as ck:
    for b in batches[:3]:
      state, _ = step(state, sharding.shard_batch(b, mesh), None, np.float32(1e-2))
    ck.save(state, it, {})
  for b in batches[3:]:
    state, _ = step(state, sharding.shard_batch(b, mesh), None, np.float32(1e-2))
  with ckpt_lib.StageCheckpoints(str(tmp_path / "s")) as ck:
    resumed, _ = ck.restore(abstract, sh, _iterator())
  for b in batches[3:]:
    resumed, _ = step(resumed, sharding.shard_batch(b, mesh), None, np.float32(1e-2))
  for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(resumed)):
    np.testing.assert_array_equal(a, b)


def test_open_finished_errors(tmp_path):
  with pytest.raises(JaxscaleError, match="has no checkpoint"):
    ckpt_lib.open_finished(str(tmp_path / "missing"), "teacher checkpoint")
  _, _, _, state, _ = _state()
  with ckpt_lib.StageCheckpoints(str(tmp_path / "s")) as ck:
    ck.save(state, _iterator(), {"finished": False}, force=True)
  with pytest.raises(JaxscaleError, match="is not a finished stage"):
    ckpt_lib.open_finished(str(tmp_path / "s"), "teacher checkpoint")


def test_shared_directory_check_is_noop_on_one_process(tmp_path):
  ckpt_lib.check_shared_directory(str(tmp_path / "x"))
  assert not (tmp_path / "x").exists()
