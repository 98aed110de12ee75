"""Train-step throughput: images/s and achieved FLOP/s per model rung, against the machine's peak.

The peak is measured in the same run as the FLOP/s of a large matmul (float32 on CPU; bfloat16 on a
GPU), so the ratio says how much of the practical peak a train step reaches. On a GPU the
``vit_paper`` ladder is also run in bfloat16 at 224 px and the ratio is reported as MFU.

  python benchmarks/bench_train.py [--ladders vit_tiny resnet_tiny] [--batch 128] [--steps 20]
                                   [--runs 1] [--cpu-devices 1]

``--compare-ways N`` times the looped (each device's runs one after the other, the engine's way on a
CPU) and the vmapped train program in turn, N rounds, in one process. ``--runs R`` trains R runs as one group; ``--cpu-devices N`` splits a CPU into N devices and the
group's runs are spread over them as a study spreads them (``config.mesh.runs = 0``). Compare e.g.
``--runs 4 --cpu-devices 1`` with ``--runs 4 --cpu-devices 2`` (two processes: the device count is
fixed when JAX starts).

FLOPs per train step = 3 x forward FLOPs per image (``jaxscale.models.flops_per_image``) x batch.
Steps run as the study's engine runs them: K = 10 scanned steps per call, images gathered on the device.
"""

from __future__ import annotations

import argparse
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxscale import models
from jaxscale.train import sharding, steps as steps_lib

SETTINGS = ("adamw", 0.9, 1e-4, 1.0, True)


def matmul_peak(n: int, dtype, repeats: int = 5) -> float:
  """FLOP/s of an n x n @ n x n matmul (best of `repeats`)."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  f = jax.jit(lambda x, y: x @ y)
  f(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2.0 * n ** 3 / best


def make_chunk(name: str, num_classes: int, image_size: int, batch: int, dtype, runs: int = 1, k: int = 10,
               one_by_one: bool | None = None):
  """(dispatch, compile seconds) of the engine's train program for `name`: `runs` runs, K steps a call;
  ``dispatch()`` runs one call and returns its losses. `one_by_one` forces the looped (True) or the
  vmapped (False) way (None: the engine's choice, :func:`jaxscale.train.steps.runs_one_by_one`).

  The images are uint8 on the device and gathered and augmented inside the step, as in a study."""
  mesh = sharding.make_mesh(types.SimpleNamespace(runs=0, data=-1, fsdp=1), num_runs=runs)
  graphdef, one = nnx.split(models.create(name, num_classes, image_size, rngs=nnx.Rngs(0), dtype=dtype), nnx.Param)
  params = jax.tree_util.tree_map(lambda x: np.stack([np.asarray(x)] * runs), one.to_pure_dict())
  param_sh = sharding.with_runs_axis(sharding.param_shardings(one, mesh).to_pure_dict())
  abstract = jax.eval_shape(lambda p: steps_lib.create_state(p, SETTINGS), params)
  sh = steps_lib.state_shardings(abstract, SETTINGS, param_sh, mesh)
  box = {"state": steps_lib.make_init(SETTINGS, sh)(jax.device_put(params, param_sh))}
  repl = sharding.replicated(mesh)
  spec = steps_lib.StepSpec(graphdef=graphdef, settings=SETTINGS, batch_size=batch, on_device=True)
  chunk = steps_lib.make_train_chunk(spec, mesh, sh, None, one_by_one=one_by_one)
  rs = np.random.default_rng(0)
  n = 4 * batch
  data = {"images": jax.device_put(rs.integers(0, 256, (n, image_size, image_size, 3)).astype(np.uint8), repl),
          "labels": jax.device_put(rs.integers(0, num_classes, n).astype(np.int32), repl),
          "index": rs.integers(0, n, (k, runs, batch)).astype(np.int32)}
  consts = {"alpha": np.zeros(runs, np.float32), "key": np.zeros((runs, 2), np.uint32),
            "uniform": np.zeros(runs, np.bool_)}
  lr, valid = np.full((k, runs), 1e-4, np.float32), np.ones((k, runs), bool)   # per step and run

  def dispatch():
    box["state"], m = chunk(box["state"], consts, None, data, lr, valid)
    return m

  dispatch.chunk = chunk   # the jitted program and its next call's arguments, for tracing it (bench_floor)
  dispatch.arguments = lambda: (box["state"], consts, None, data, lr, valid)

  t = time.perf_counter()
  jax.block_until_ready(dispatch())
  return dispatch, time.perf_counter() - t


def step_seconds(dispatch, calls: int, k: int) -> float:
  """Seconds per train step over `calls` dispatches of `k` steps."""
  t = time.perf_counter()
  for _ in range(calls):
    m = dispatch()
  jax.block_until_ready(m)
  return (time.perf_counter() - t) / (calls * k)


def bench_model(name: str, num_classes: int, image_size: int, batch: int, steps: int, dtype,
                runs: int = 1, k: int = 10) -> dict:
  """Images/s and FLOP/s of the engine's train program for `name`: `runs` runs, K steps a call."""
  dispatch, compile_s = make_chunk(name, num_classes, image_size, batch, dtype, runs, k)
  dt = step_seconds(dispatch, max(1, steps // k), k)
  flops = 3.0 * models.flops_per_image(name, num_classes, image_size) * batch * runs
  return {"model": name, "params": models.param_count(name, num_classes, image_size),
          "img_s": batch * runs / dt, "flop_s": flops / dt, "step_ms": dt * 1e3, "compile_s": compile_s}


def compare_ways(names: list[str], batch: int, steps: int, runs: int, k: int, rounds: int) -> None:
  """Step time of the looped and the vmapped train program, timed in turn in one process, `rounds`
  times; prints each round and the median ratio vmapped / looped (> 1: looping is faster)."""
  print(f"looped vs vmapped runs, float32, 16 px, batch {batch}, {runs} runs on {jax.device_count()} "
        f"device(s), K = {k}, {rounds} rounds")
  print(f"{'model':<16} {'looped ms/step':>15} {'vmapped ms/step':>16} {'compile s (l/v)':>16} {'vmapped/looped':>24}")
  for name in names:
    ways = [make_chunk(name, 52, 16, batch, jnp.float32, runs, k, one_by_one=w) for w in (True, False)]
    times = [[step_seconds(d, max(1, steps // k), k) for d, _ in ways] for _ in range(rounds)]
    ratios = sorted(v / l for l, v in times)
    print(f"{name:<16} {np.median([t[0] for t in times]) * 1e3:>15.2f} {np.median([t[1] for t in times]) * 1e3:>16.2f} "
          f"{ways[0][1]:>7.1f}/{ways[1][1]:<8.1f} {np.median(ratios):>8.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})")


def table(rows: list[dict], peak: float, ratio_name: str) -> None:
  print(f"{'model':<16} {'params':>10} {'step ms':>9} {'img/s':>10} {'GFLOP/s':>9} {ratio_name:>8} {'compile s':>9}")
  for r in rows:
    print(f"{r['model']:<16} {r['params']:>10,} {r['step_ms']:>9.2f} {r['img_s']:>10.0f} "
          f"{r['flop_s'] / 1e9:>9.2f} {r['flop_s'] / peak:>8.1%} {r['compile_s']:>9.2f}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--ladders", nargs="+", default=["vit_tiny", "resnet_tiny"])
  parser.add_argument("--models", nargs="+", default=[], help="these models instead of the ladders")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--matmul", type=int, default=2048, help="side of the peak-FLOP/s matmul")
  parser.add_argument("--runs", type=int, default=1, help="runs trained as one group")
  parser.add_argument("--cpu-devices", type=int, default=1, help="devices a CPU is split into (0 = one per core)")
  parser.add_argument("--k", type=int, default=10, help="scanned steps per call")
  parser.add_argument("--compare-ways", type=int, default=0, metavar="ROUNDS",
                      help="time the looped and the vmapped runs in turn, ROUNDS times, and stop")
  args = parser.parse_args()
  sharding.use_cpu_devices(args.cpu_devices)   # before JAX starts
  names = args.models or [m for lad in args.ladders for m in models.ladder(lad)]
  if args.compare_ways:
    compare_ways(names, args.batch, args.steps, args.runs, args.k, args.compare_ways)
    return

  backend = jax.default_backend()
  print(f"jax {jax.__version__}, backend {backend}, {jax.device_count()} x {jax.devices()[0].device_kind}")
  peak32 = matmul_peak(args.matmul, jnp.float32)
  print(f"practical peak: {args.matmul}^3 float32 matmul = {peak32 / 1e9:.1f} GFLOP/s\n")
  rows = [bench_model(name, 52, 16, args.batch, args.steps, jnp.float32, runs=args.runs, k=args.k)
          for name in names]
  print(f"train step, float32, 16 px, 52 classes, batch {args.batch} per run, {args.runs} run(s) on "
        f"{jax.device_count()} device(s), K = {args.k}; img/s over all runs; ratio = achieved / matmul peak")
  table(rows, peak32, "of peak")

  print()
  if backend != "gpu":
    print("vit_paper ladder, bfloat16, 224 px: MFU not measured (no GPU in this session)")
    return
  peak16 = matmul_peak(8192, jnp.bfloat16)
  print(f"practical peak: 8192^3 bfloat16 matmul = {peak16 / 1e12:.1f} TFLOP/s")
  rows = [bench_model(name, 1000, 224, 256, args.steps, jnp.bfloat16) for name in models.ladder("vit_paper")]
  print("train step, bfloat16 compute, 224 px, 1000 classes, batch 256; MFU = achieved / bf16 matmul peak")
  table(rows, peak16, "MFU")


if __name__ == "__main__":
  main()
