"""`jaxscale plan`: its numbers are those of a direct ahead-of-time compile of the train program,
the batch search finds the largest batch that fits, and a grid that cannot fit is refused."""

import os

import jax
import numpy as np
import pytest
from flax import nnx

from jaxscale import cli, models
from jaxscale.config import load
from jaxscale.errors import JaxscaleError
from jaxscale.study import plan
from jaxscale.train import sharding, steps as steps_lib
from jaxscale.train.steps import num_train_steps

SMOKE = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "smoke.py")
ONE_MODEL = ["--config.study.models=('vit_tiny_xs',)"]


def direct_compile(config, stage, batch, runs=1):
  """The train program of `runs` runs as `jaxscale.train.loop.train_group` builds it, compiled."""
  s, o = config[stage], config[stage].optim
  mesh = sharding.make_mesh(config.mesh)
  classes = plan.stage_classes(config, stage)
  abstract_model = nnx.eval_shape(lambda: models.create(config.model.name, classes, 16, rngs=nnx.Rngs(0)))
  graphdef, one = nnx.split(abstract_model, nnx.Param)
  params = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct((runs, *x.shape), x.dtype), one.to_pure_dict())
  param_sh = sharding.with_runs_axis(sharding.param_shardings(one, mesh).to_pure_dict())
  settings = steps_lib.optimizer_settings(o)
  state = jax.eval_shape(lambda p: steps_lib.create_state(p, settings), params)
  state_sh = steps_lib.state_shardings(state, settings, param_sh, mesh)
  spec = steps_lib.StepSpec(graphdef=graphdef, settings=settings, batch_size=batch,
                            crop_padding=int(s.crop_padding), flip=False,
                            label_smoothing=float(o.label_smoothing), on_device=False)
  chunk = steps_lib.make_train_chunk(spec, mesh, state_sh, None)
  sds = jax.ShapeDtypeStruct
  consts = {"alpha": sds((runs,), np.float32), "key": sds((runs, 2), np.uint32), "uniform": sds((runs,), np.bool_)}
  return chunk.lower(state, consts, None,
                     {"images": sds((1, runs, batch, 16, 16, 3), np.uint8), "labels": sds((1, runs, batch), np.int32)},
                     sds((1, runs), np.float32), sds((1, runs), np.bool_)).compile()


def test_plan_numbers_equal_a_direct_compile():
  config = load(SMOKE, ONE_MODEL)
  rows = plan.capacity_table(config, search=False)
  assert [(r["model"], r["stage"], r["teacher"]) for r in rows] == [
      ("vit_tiny_xs", "pretrain", ""), ("vit_tiny_xs", "pretrain", "vit_tiny_xs"), ("vit_tiny_xs", "finetune", "")]
  plain, distilled, finetune = rows
  config.model.name = "vit_tiny_xs"
  compiled = direct_compile(config, "pretrain", 64, runs=3)
  m = compiled.memory_analysis()
  assert plain["memory_bytes"] == (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                                   - m.alias_size_in_bytes + m.generated_code_size_in_bytes)
  assert plain["memory_bytes"] > 0 and plain["fits"] is None and plain["max_batch"] is None
  # one run of the three: on a CPU each device loops over its runs, and XLA counts a loop's body once
  looped = steps_lib.runs_one_by_one(sharding.make_mesh(config.mesh, num_runs=3))
  assert plain["flops_per_step"] == compiled.cost_analysis()["flops"] / (1 if looped else 3)
  analytic = 3 * models.flops_per_image("vit_tiny_xs", 52, 16) * 64   # one run: fwd + bwd, batch 64
  assert 0.8 < plain["flops_per_step"] / analytic < 1.3
  assert distilled["flops_per_step"] > plain["flops_per_step"]          # + the teacher's forward
  # Rows follow the engine's groups: the plain runs of both Dp (8 steps each) and the teacher (16 steps)
  # in one program (R = 3; the students' steps past their 8th are masked); the distilled runs in one program
  # that carries the teacher (R = 2); all 2 Dp x 2 Df x 2 arms fine-tunes (6 steps each) together (R = 8).
  steps = [num_train_steps(config.pretrain.optim, dp) for dp in config.study.dp]
  assert plain["cells"] == 3 and plain["group_runs"] == 3
  assert plain["steps"] == sum(steps) + num_train_steps(config.pretrain.optim, config.study.teacher_dp)
  assert distilled["cells"] == 2 and distilled["group_runs"] == 2
  assert distilled["grid_flops"] == sum(steps) * distilled["flops_per_step"]
  assert finetune["cells"] == 8 and finetune["group_runs"] == 8 and finetune["batch"] == 32


def test_largest_batch_search_on_an_affine_memory():
  calls = []

  def cost_at(b):
    calls.append(b)
    extra = 3_000 if b > 700 else 0  # XLA picks another layout past 700: the line over-promises
    return plan.StepCost(memory_bytes=10_000 + 100 * b + extra, flops=0.0, memory={})

  assert plan.largest_batch(cost_at, limit_bytes=10_000 + 100 * 500, start=64) == 500
  assert plan.largest_batch(cost_at, limit_bytes=10_000 + 100 * 750, start=64) <= 720
  assert cost_at(plan.largest_batch(cost_at, 10_000 + 100 * 750, 64)).memory_bytes <= 10_000 + 100 * 750
  assert plan.largest_batch(cost_at, limit_bytes=5_000, start=64) == 0
  assert len(calls) < 30


def test_a_grid_that_does_not_fit_is_refused_in_one_line(capsys):
  code = cli.main(["plan", "--config", SMOKE, *ONE_MODEL, "--config.study.arms=('plain',)",
                   "--device-memory", "1MB", "--no-search"])
  lines = capsys.readouterr().err.strip().splitlines()
  assert all(line.startswith("[jaxscale] compiling ") for line in lines[:-1]), lines   # progress: one per row
  err = lines[-1]
  assert code == 2 and err.startswith("jaxscale: error: "), lines
  assert "vit_tiny_xs (pretrain) at batch 64 (64 per device)" in err
  assert "more than the 1.0 MB of device memory; lower config.pretrain.optim.batch_size" in err


def test_the_refusal_names_the_batch_that_fits_or_says_none_does():
  row = {"model": "vit_paper_xl", "stage": "pretrain", "teacher": "vit_paper_xs", "batch": 1024,
         "device_batch": 512, "replicas": 2, "devices": 2, "memory_bytes": 95e9, "limit_bytes": 80e9,
         "fits": False, "max_batch": 430}
  with pytest.raises(JaxscaleError, match=r"vit_paper_xl \(pretrain distilled from vit_paper_xs\) at batch 1024 "
                     r"\(512 per device\) needs 95.00 GB per device, more than the 80.00 GB of device memory; "
                     r"lower config.pretrain.optim.batch_size to 860 or less"):
    plan.check_fits([dict(row, fits=True), row])
  with pytest.raises(JaxscaleError, match="not even 1 example per device fits"):
    plan.check_fits([dict(row, max_batch=0)])
  plan.check_fits([dict(row, fits=None), dict(row, fits=True)])   # no limit known / fits: no refusal


def test_the_plan_table_says_which_backend_it_measured(capsys):
  assert cli.main(["plan", "--config", SMOKE, *ONE_MODEL, "--config.study.arms=('plain',)", "--no-search",
                   "--flops-per-s", "1e12"]) == 0
  out = capsys.readouterr().out
  assert "XLA's CPU backend" in out and "at 1 TFLOP/s (stated" in out and "vit_tiny_xs" in out


def test_memory_sizes_parse():
  assert plan.parse_bytes("80GB") == 80_000_000_000 and plan.parse_bytes("16GiB") == 16 * 2**30
  assert plan.parse_bytes("512 MB") == 512_000_000 and plan.parse_bytes("1234") == 1234
  with pytest.raises(JaxscaleError, match="cannot read the memory size"):
    plan.parse_bytes("eighty gigs")
