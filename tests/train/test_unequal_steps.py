"""Runs of one group with different step counts (a budget set in epochs: every subset size its own): each
run trains its own steps with its own schedule, and its record (losses, curve, evaluation, parameters)
is bit for bit the one it gets trained alone; a group stopped after its shortest run ended resumes to
the same results."""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import standin  # noqa: E402
from jaxscale import config as config_lib
from jaxscale.train import checkpoint as ckpt_lib, evals, loop, sharding, steps as steps_lib

SIZES = (208, 312, 416)   # 4, 6 and 8 images per class
STEPS = (33, 49, 65)      # 5 epochs of batch 32: ceil(5 * size / 32)
K = 10                    # none of the step counts is a whole number of dispatches


def _config(data_dir, make_config):
  c = make_config(data_dir)
  c.model.name = "vit_tiny_xxs"
  c.pretrain.optim.update(epochs=5.0, min_steps=1, max_steps=0)
  c.engine.steps_per_dispatch = K
  return config_lib.validate(c)


def _runs(root):
  return [loop.Run(f"s{seed}", seed, size, out_dir=os.path.join(str(root), f"s{seed}"), meta=(("dp", size),))
          for seed, size in enumerate(SIZES)]


def _assert_same_runs(got, want, got_dir, want_dir):
  """Bit for bit (==): every field a record or curve reads, and the saved parameters."""
  for a, b in zip(got, want, strict=True):
    for field in ("name", "steps", "losses", "eval_error", "eval_loss", "eval_count", "subset_hash",
                  "diverged_at", "curve"):
      assert a[field] == b[field], (a["name"], field)
    pa = standin.run_params(os.path.join(str(got_dir), a["name"]))
    pb = standin.run_params(os.path.join(str(want_dir), b["name"]))
    assert pa.keys() == pb.keys()
    for key in pa:
      np.testing.assert_array_equal(pa[key], pb[key], err_msg=f"{a['name']} {key}")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir, make_config):
  """The three runs trained as one group and each alone; tests must not modify them."""
  root = tmp_path_factory.mktemp("unequal")
  config = _config(data_dir, make_config)
  group = loop.train_group(config, "pretrain", _runs(root / "group"), str(root / "group" / "g"),
                           show_progress=False)
  alone = [loop.train_group(config, "pretrain", [run], str(root / "alone" / run.name / "g"), show_progress=False)[0]
           for run in _runs(root / "alone")]
  return root, group, alone


def test_each_runs_tables_are_its_own(data_dir, make_config):
  """Each run's learning-rate table is its own schedule over its own steps, then 0; its steps are
  valid up to its own count; the group is as long as its longest run."""
  config = _config(data_dir, make_config)
  runs = _runs("")
  inputs = loop.prepare_inputs(config, "pretrain", runs, sharding.make_mesh(config.mesh, num_runs=len(runs)))
  assert inputs.steps == list(STEPS) and inputs.total_steps == max(STEPS)
  assert inputs.valid.shape == (70, 3) and inputs.lr.shape == (3, 70)
  peak = steps_lib.peak_lr(config.pretrain.optim, config.model.name)
  for i, n in enumerate(STEPS):
    assert steps_lib.num_train_steps(config.pretrain.optim, SIZES[i]) == n
    np.testing.assert_array_equal(inputs.valid[:, i], np.arange(70) < n)
    np.testing.assert_array_equal(inputs.lr[i, :n], steps_lib.learning_rate_table(config.pretrain.optim, n, peak))
    assert not inputs.lr[i, n:].any()


def test_each_run_of_a_group_trains_its_own_steps_as_alone(trained):
  root, group, alone = trained
  assert [r["steps"] for r in group] == list(STEPS)
  assert [r["group_size"] for r in group] == [3] * 3 and [r["group_size"] for r in alone] == [1] * 3
  for r in group:   # the curve at the run's own fractions of its own budget, ending at its own last step
    at = evals.eval_steps(config_lib.base_config().pretrain.eval_at, r["steps"], K)
    assert [p["step"] for p in r["curve"]] == at + [r["steps"]] and len(r["losses"]) == r["steps"]
  assert [p["step"] for p in group[0]["curve"]] != [p["step"] for p in group[2]["curve"]]
  _assert_same_runs(group, alone, root / "group", root / "alone")


def test_a_group_stopped_after_its_shortest_run_resumes_to_the_same_results(trained, data_dir, make_config,
                                                                            tmp_path):
  """SIGTERM after dispatch 3 saves the group at its step 40, when the 33-step run has ended (its
  losses stop at 33): the resume goes on from the group's step, not from a run's loss count."""
  root, group, _ = trained
  config = _config(data_dir, make_config)
  config.checkpoint.every_steps = K
  runs, g = _runs(tmp_path / "w"), tmp_path / "w" / "g"
  proc, _ = standin.run_group_script(tmp_path, config, runs, g, 3, "TERM")
  assert proc.returncode == 143, proc.stderr[-2000:]
  assert loop.finished(str(g)) is None and ckpt_lib.GroupCheckpoints(str(g)).latest_step() == 40
  meta = json.loads((g / "40" / "meta" / "metadata").read_text())
  assert meta["step"] == 40 and [len(run) for run in meta["losses"]] == [33, 40, 40]
  proc, again = standin.run_group_script(tmp_path, config, runs, g)
  assert proc.returncode == 0, proc.stderr[-2000:]
  _assert_same_runs(again, group, tmp_path / "w", root / "group")
