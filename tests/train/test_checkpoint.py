"""Group checkpoints (resumable state, keep-N, asynchronous saves) and finished runs' parameters."""

import os
import sys

import jax
import numpy as np
import pytest

from jaxscale.errors import JaxscaleError
from jaxscale.train import checkpoint as ckpt_lib

sys.path.insert(0, os.path.dirname(__file__))
import standin  # noqa: E402


def _step(chunk, state, consts, images, labels, i):
  return chunk(state, consts, None, {"images": images[i:i + 1], "labels": labels[i:i + 1]},
               np.full((1, 2), 1e-2, np.float32), np.ones((1, 2), bool))[0]


def test_round_trip_keep_and_identical_continuation(tmp_path):
  _, _, state, state_sh, chunk, consts, _ = standin.group(runs=2)
  abstract = jax.eval_shape(lambda s: s, state)
  images, labels = standin.make_images(6, 16, 2)
  with ckpt_lib.GroupCheckpoints(str(tmp_path / "g"), keep=2) as ck:
    for i in range(4):
      state = _step(chunk, state, consts, images, labels, i)
      ck.save(i + 1, state, {"runs": ["a", "b"], "i": i})
    ck.save(4, state, {"runs": ["a", "b"], "i": "again"})  # an existing step is kept, not rewritten
  assert sorted(int(p) for p in os.listdir(tmp_path / "g") if p.isdigit()) == [3, 4]
  with ckpt_lib.GroupCheckpoints(str(tmp_path / "g")) as ck:
    assert ck.latest_step() == 4
    resumed, meta = ck.restore(abstract, state_sh)
  assert meta == {"runs": ["a", "b"], "i": 3} and list(np.asarray(resumed.step)) == [4, 4]
  for i in (4, 5):
    state = _step(chunk, state, consts, images, labels, i)
    resumed = _step(chunk, resumed, consts, images, labels, i)
  for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(resumed)):
    np.testing.assert_array_equal(a, b)


def test_a_meta_changed_after_save_is_saved_as_it_was(tmp_path):
  """The trainer appends to its losses right after a save returns; the asynchronous writer must not
  see that (a resumed group would start at len(losses) with the state of an earlier step)."""
  _, _, state, state_sh, _, _, _ = standin.group(runs=2)
  abstract = jax.eval_shape(lambda s: s, state)
  losses = [[1.0, 2.0], [3.0, 4.0]]
  with ckpt_lib.GroupCheckpoints(str(tmp_path / "g")) as ck:
    for step in (2, 4):
      ck.save(step, state, {"runs": ["a", "b"], "losses": losses, "step": step})
      for run in losses:  # what the train loop does next, while the writer may still be running
        run.extend([9.0] * 50)
  with ckpt_lib.GroupCheckpoints(str(tmp_path / "g")) as ck:
    _, meta = ck.restore(abstract, state_sh)
  assert meta["step"] == 4 and meta["losses"] == [[1.0, 2.0] + [9.0] * 50, [3.0, 4.0] + [9.0] * 50]


def test_finished_run_round_trip_and_errors(tmp_path):
  _, _, state, _, _, _, _ = standin.group(runs=2)
  one = jax.tree_util.tree_map(lambda x: np.asarray(x[1]), jax.device_get(state.params))
  with pytest.raises(JaxscaleError, match="is not a finished run"):
    ckpt_lib.open_finished(str(tmp_path / "run"), "teacher checkpoint")
  ckpt_lib.save_run(str(tmp_path / "run"), one, {"model": "standin", "dp": 5})
  assert ckpt_lib.open_finished(str(tmp_path / "run"), "teacher checkpoint") == {"model": "standin", "dp": 5}
  got = ckpt_lib.load_params(str(tmp_path / "run"), one)
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(one)):
    np.testing.assert_array_equal(a, b)
  ckpt_lib.save_run(str(tmp_path / "run"), one, {"model": "standin", "dp": 6})  # a rerun rewrites it whole
  assert ckpt_lib.run_meta(str(tmp_path / "run"))["dp"] == 6


def test_shared_directory_check_is_noop_on_one_process(tmp_path):
  ckpt_lib.check_shared_directory(str(tmp_path / "x"))
  assert not (tmp_path / "x").exists()
