"""The floor of the train step's shapes: its matmuls alone, timed the way the engine runs them.

  python benchmarks/bench_floor.py [--ladders vit_tiny] [--models ...] [--runs 8] [--batch 32]
                                   [--cpu-devices 2] [--steps 30] [--k 10] [--rounds 3]

``bench_train.py`` reports a train step's FLOP/s as a share of a large (2048^3) float32 matmul's. The
step's FLOPs are its matmuls' (``jaxscale.models.flops_per_image`` counts nothing else), but a tiny
ViT's matmuls are tiny: [B*N, D] x [D, 3D] with B*N = 512 and D = 16 to 48, attention products of
16 x 16 per head. Such shapes cannot reach a 2048^3 matmul's FLOP/s however the rest of the step is
written, so the share of that peak mixes two things: what the shapes allow, and what the step adds
around them (gathers, elementwise ops, softmax, layer norms, the optimizer, loops). This benchmark
separates them. "If the profile shows a floor that this machine cannot go under (for example the
matmuls of these shapes measured alone), show that measurement and how close the engine is to it."

Per model rung:

1. The engine's train program (``bench_train.make_chunk``: R runs, K scanned steps per dispatch,
   images gathered on the device, the runs placed as a study places them) is traced to its jaxpr,
   and every ``dot_general`` and ``conv_general_dilated`` in it is collected with its operand shapes
   and dtypes and all its parameters (dimension numbers, precision, output type). The jaxpr is
   walked into every sub-jaxpr; a ``scan`` multiplies the count of what it holds by its length and a
   ``shard_map`` by its mesh's device count (its body holds one device's shapes). So with the
   engine's CPU layout, ``shard_map`` (G devices) > ``lax.map`` (R/G runs) > ``scan`` (K steps) > step,
   each matmul of a step counts G * R/G * K times per dispatch, i.e. R times per train step. The jaxpr
   (not the compiled HLO) is read because it holds exactly the ops the model asked for, with their
   parameters, so each can be re-issued as it is (``primitive.bind(lhs, rhs, **params)``). For
   vit_tiny_xxs the compiled HLO of both programs holds 41 dot ops (the jaxpr's 41 per run and step);
   the test checks the copy's are all inside its innermost (step) loop.
2. A matmul-only program re-issues those ops and nothing else, placed like the engine: a
   ``shard_map`` over the same mesh, each device running its R/G runs one after the other
   (``lax.map``), each run K steps in a ``lax.scan``, one dispatch per K steps. Operands are random,
   one pair per op and run, made once and kept on the device. So that XLA can neither drop an op nor
   hoist it out of the step loop, each op's smaller operand gets the loop's scalar carry added
   (``a + c``) and its output is summed into the next carry (``c' = c + 1e-9 * sum(out)``): one
   elementwise pass over the smaller operand and one reduction over the output per op, so the floor
   is slightly above the matmuls' own time (XLA's CPU backend fuses some of those reductions into
   the matmul's kernel; a variant that instead carried operands and outputs through the loop, one
   operand element rewritten per step and no reduction, ran within 4% of it on vit_tiny_xxs). The
   operands come in the layouts the jaxpr names: transposes and copies XLA adds around the engine's
   matmuls (to lay out a weight gradient's operands, say) count as the rest of the step.
3. Both are timed as ``bench_train.step_seconds`` times them (``--steps / K`` dispatches), in turn,
   ``--rounds`` times; the table gives medians and, beside the ratio, its range over the rounds.

Columns: ``ops/step`` = matmul ops per train step (all runs); ``engine ms`` per train step and its
GFLOP/s (step FLOPs = 3 x forward FLOPs per image x batch x runs, as ``bench_train``); ``mm ms`` per
step and GFLOP/s of the matmul-only program (FLOPs = sum over ops of 2 x output elements x contracted
size, times the op's count per step); ``mm share`` = matmul FLOPs / step FLOPs (below 1 because
the patch embedding's input gradient is never computed);
``engine/mm`` = engine ms / matmul ms, how far the engine is above the floor of its own matmuls;
``% peak`` of each against the 2048^3 float32 matmul measured in the same run
(``bench_train.matmul_peak``, ``peak GF/s``), once at the start of every round, so that other work
on a shared machine slows a round's peak and its timings alike; ``ms @30%`` = the step time at which
the engine would reach 30% of that peak (step FLOPs / (0.3 x peak)). Every figure is the median over
the rounds of the round's own value. If ``mm ms`` is above ``ms @30%`` the shapes alone rule
30% out on this machine. ``gap: shapes`` = (mm ms - ms @30%) / (engine ms - ms @30%), clipped to
[0, 1]: the part of the engine's distance from 30% of peak that its matmuls alone already have; the
rest of that distance is the rest of the step (gathers, elementwise ops, softmax, layer norms, the
optimizer, the loops).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train import make_chunk, matmul_peak, step_seconds  # noqa: E402

from jaxscale import models  # noqa: E402
from jaxscale.train import sharding  # noqa: E402

MATMUL_PRIMITIVES = ("dot_general", "conv_general_dilated")


@dataclasses.dataclass(frozen=True)
class Matmul:
  """One matmul op of the train program.

  Attributes:
    primitive: the JAX primitive (``dot_general`` or ``conv_general_dilated``).
    params: its parameters as the jaxpr holds them (dimension numbers, precision, output type, ...).
    lhs, rhs: operand shapes and dtypes, as one device sees them (``jax.ShapeDtypeStruct``).
    out_shape: the output's shape.
    count: how many times it runs per train step, over all devices.
    devices: the devices those runs are spread over (the enclosing ``shard_map``'s mesh size; 1 if none).
  """
  primitive: Any
  params: dict
  lhs: jax.ShapeDtypeStruct
  rhs: jax.ShapeDtypeStruct
  out_shape: tuple
  count: float
  devices: int

  @property
  def flops(self) -> float:
    """FLOPs of one call: 2 x output elements x the size each output element sums over.

    dot_general: the product of the lhs contracting dims. conv: the kernel's elements per output
    feature (input features per group x window), i.e. prod(rhs shape) / rhs output features."""
    out = math.prod(self.out_shape)
    if self.primitive.name == "dot_general":
      (contract, _), _ = self.params["dimension_numbers"]
      return 2.0 * out * math.prod(self.lhs.shape[i] for i in contract)
    rhs_out_feature = self.params["dimension_numbers"].rhs_spec[0]
    return 2.0 * out * math.prod(self.rhs.shape) / self.rhs.shape[rhs_out_feature]

  def describe(self) -> str:
    """``lhs x rhs -> out`` with the dimension numbers, for printing."""
    dims = self.params.get("dimension_numbers")
    return (f"{self.primitive.name} {self.lhs.dtype}{list(self.lhs.shape)} x {self.rhs.dtype}{list(self.rhs.shape)}"
            f" -> {list(self.out_shape)} {dims}")


def _sub_jaxprs(params: dict):
  """The jaxprs an equation's parameters hold (a scan's body, a jit's callee, a cond's branches...)."""
  for value in params.values():
    for v in (value if isinstance(value, (tuple, list)) else (value,)):
      if isinstance(v, jax.extend.core.ClosedJaxpr):
        yield v.jaxpr
      elif isinstance(v, jax.extend.core.Jaxpr):
        yield v


def _walk(jaxpr, times: float, devices: int, found: list, meshes: list) -> None:
  """Appends (eqn, times it runs per dispatch, devices) for every matmul under `jaxpr`.

  A ``scan`` multiplies by its length, a ``shard_map`` by its mesh's size (its body is one device's
  program, run on each); other sub-jaxprs (jit, custom_jvp/vjp calls, remat) run once. Of a ``cond``
  the branch with the most matmuls counts (the engine's: a run trains its dispatch, or, past its own
  last step, skips it; the floor is that of a run that trains). A ``while`` (unknown trip count) is
  refused: the engine's train program has none."""
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name in MATMUL_PRIMITIVES:
      found.append((eqn, times, devices))
      continue
    if name == "while":
      raise ValueError(f"a {name} in the train program: its matmuls' counts are not known statically")
    if name == "cond":
      branches = []
      for sub in _sub_jaxprs(eqn.params):
        branches.append([])
        _walk(sub, times, devices, branches[-1], meshes)
      found.extend(max(branches, key=len))
      continue
    inner_times, inner_devices = times, devices
    if name == "scan":
      inner_times = times * eqn.params["length"]
    elif name == "shard_map":
      mesh = eqn.params["mesh"]
      meshes.append(mesh)
      inner_times, inner_devices = times * mesh.size, devices * mesh.size
    for sub in _sub_jaxprs(eqn.params):
      _walk(sub, inner_times, inner_devices, found, meshes)


def extract(closed_jaxpr, k: int) -> tuple[list[Matmul], Any]:
  """(matmuls, mesh) of a train program's jaxpr that runs `k` steps per call.

  Each op's count per train step = its runs per call / k (an error if k does not divide it); the
  mesh is the ``shard_map``'s (None if there is none)."""
  found, meshes = [], []
  _walk(closed_jaxpr.jaxpr, 1, 1, found, meshes)
  if len({id(m) for m in meshes}) > 1:
    raise ValueError("more than one shard_map in the train program")
  out = []
  for eqn, times, devices in found:
    if times % k:
      raise ValueError(f"{eqn.primitive.name} runs {times} times per call, not a multiple of K = {k}")
    lhs, rhs = (jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars)
    out.append(Matmul(eqn.primitive, dict(eqn.params), lhs, rhs, tuple(eqn.outvars[0].aval.shape),
                      times / k, devices))
  return out, (meshes[0] if meshes else None)


def engine_program(name: str, batch: int, runs: int, k: int):
  """(dispatch, compile seconds, matmuls, mesh) of the engine's train program for `name` (52 classes,
  16 px, float32), built by ``bench_train.make_chunk``; its jitted chunk and arguments
  (``dispatch.chunk``, ``dispatch.arguments()``) are traced (tracing runs nothing and consumes no
  donated buffer)."""
  dispatch, compile_s = make_chunk(name, 52, 16, batch, jnp.float32, runs, k)
  traced = dispatch.chunk.trace(*dispatch.arguments())
  matmuls, mesh = extract(traced.jaxpr, k)
  return dispatch, compile_s, matmuls, mesh


def runs_per_device(matmuls: list[Matmul]) -> int:
  """How many copies of each op one device runs per step (its runs, in the engine's looped layout);
  the same for every op, or an error."""
  per = {mm.count / mm.devices for mm in matmuls}
  if len(per) != 1 or not float(next(iter(per))).is_integer():
    raise ValueError(f"the ops run different or fractional numbers of times per device per step: {per}")
  return int(next(iter(per)))


def _one_run(matmuls: list[Matmul], k: int, operands: list) -> jax.Array:
  """K steps of one run: each step re-issues every op once on this run's operands; returns the carry.

  The carry c (a float32 scalar, 0 at the start) is added to each op's smaller operand and
  c' = c + 1e-9 * sum(all outputs), so no op can be dropped or hoisted out of the loop."""
  def step(c, _):
    total = jnp.zeros((), jnp.float32)
    for mm, (a, b) in zip(matmuls, operands):
      if a.size <= b.size:
        a = a + c.astype(a.dtype)
      else:
        b = b + c.astype(b.dtype)
      total = total + jnp.sum(mm.primitive.bind(a, b, **mm.params), dtype=jnp.float32)
    return c + 1e-9 * total, None

  c, _ = jax.lax.scan(step, jnp.zeros((), jnp.float32), None, length=k)
  return c


def make_floor(matmuls: list[Matmul], mesh, k: int, seed: int = 0):
  """(dispatch, compile seconds, jitted program, operands) of the matmul-only program: on each of the
  mesh's G devices, its r = count / G runs one after the other (``lax.map``), each K steps of every
  op (:func:`_one_run`).
  Operands [G * r, *shape] are random normal, split over the devices along their first axis."""
  if mesh is None:
    raise ValueError("expected the engine's looped program (a shard_map over the devices)")
  r = runs_per_device(matmuls)
  spec = P(tuple(mesh.axis_names))
  where = NamedSharding(mesh, spec)
  rng = np.random.default_rng(seed)
  operands = [tuple(jax.device_put(rng.standard_normal((mesh.size * r,) + s.shape, np.float32).astype(s.dtype),
                                   where) for s in (mm.lhs, mm.rhs)) for mm in matmuls]

  def device(ops):
    return jax.lax.map(lambda run_ops: _one_run(matmuls, k, run_ops), ops)

  program = jax.jit(jax.shard_map(device, mesh=mesh, in_specs=(spec,), out_specs=spec, check_vma=False))

  def dispatch():
    return program(operands)

  t = time.perf_counter()
  jax.block_until_ready(dispatch())
  return dispatch, time.perf_counter() - t, program, operands


def bench_model(name: str, batch: int, runs: int, k: int, steps: int, rounds: int, side: int) -> dict:
  """Per round: the peak (``matmul_peak(side)``), then the engine's and the matmul-only program's
  step seconds of `name`, timed in turn; and the step's and its matmuls' FLOPs."""
  engine, engine_compile, matmuls, mesh = engine_program(name, batch, runs, k)
  floor, floor_compile, _, _ = make_floor(matmuls, mesh, k)
  calls = max(1, steps // k)
  timed = [(matmul_peak(side, jnp.float32), step_seconds(engine, calls, k), step_seconds(floor, calls, k))
           for _ in range(rounds)]
  return {"model": name, "peak": [t[0] for t in timed], "engine_s": [t[1] for t in timed],
          "floor_s": [t[2] for t in timed],
          "step_flops": 3.0 * models.flops_per_image(name, 52, 16) * batch * runs,
          "mm_flops": sum(mm.flops * mm.count for mm in matmuls),
          "ops": sum(mm.count for mm in matmuls), "compile_s": (engine_compile, floor_compile),
          "matmuls": matmuls}


def figures(r: dict) -> dict:
  """A row's figures, each the median over its rounds of the round's own value (a round's shares of
  peak use that round's peak): e, f = engine and matmul-only seconds per step, t30 = step FLOPs /
  (0.3 x peak), gap = (f - t30) / (e - t30) clipped to [0, 1] (rounds where e > t30 only)."""
  e, f, peak = (np.asarray(r[key]) for key in ("engine_s", "floor_s", "peak"))
  t30 = r["step_flops"] / (0.3 * peak)
  open_gap = e > t30
  gap = np.clip((f - t30)[open_gap] / (e - t30)[open_gap], 0.0, 1.0)
  return {"e": np.median(e), "f": np.median(f), "peak": np.median(peak), "t30": np.median(t30),
          "e_peak": np.median(r["step_flops"] / e / peak), "f_peak": np.median(r["mm_flops"] / f / peak),
          "ratio": np.sort(e / f), "gap": np.median(gap) if gap.size else None}


def table(rows: list[dict]) -> None:
  """Prints one line per rung: medians over the rounds, the ratio's range over the rounds beside it."""
  print(f"{'model':<14} {'ops/step':>8} {'mm share':>8} {'peak GF/s':>9} {'engine ms':>9} {'GFLOP/s':>8} "
        f"{'% peak':>7} {'mm ms':>7} {'GFLOP/s':>8} {'% peak':>7} {'engine/mm':>19} {'ms @30%':>8} "
        f"{'gap: shapes':>11}")
  for r in rows:
    g = figures(r)
    ratio, gap = g["ratio"], ("-" if g["gap"] is None else f"{g['gap']:.0%}")
    print(f"{r['model']:<14} {r['ops']:>8.0f} {r['mm_flops'] / r['step_flops']:>8.1%} {g['peak'] / 1e9:>9.1f} "
          f"{g['e'] * 1e3:>9.2f} {r['step_flops'] / g['e'] / 1e9:>8.2f} {g['e_peak']:>7.1%} "
          f"{g['f'] * 1e3:>7.2f} {r['mm_flops'] / g['f'] / 1e9:>8.2f} {g['f_peak']:>7.1%} "
          f"{np.median(ratio):>7.2f}x ({ratio[0]:.2f}-{ratio[-1]:.2f}) {g['t30'] * 1e3:>8.2f} {gap:>11}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--ladders", nargs="+", default=["vit_tiny"])
  parser.add_argument("--models", nargs="+", default=[], help="these models instead of the ladders")
  parser.add_argument("--runs", type=int, default=8, help="runs trained as one group")
  parser.add_argument("--batch", type=int, default=32, help="images per run per step")
  parser.add_argument("--cpu-devices", type=int, default=2, help="devices a CPU is split into (0 = one per core)")
  parser.add_argument("--steps", type=int, default=30, help="train steps timed per round (steps / K dispatches)")
  parser.add_argument("--k", type=int, default=10, help="scanned steps per call")
  parser.add_argument("--rounds", type=int, default=3, help="rounds, engine and matmuls timed in turn")
  parser.add_argument("--matmul", type=int, default=2048, help="side of the peak-FLOP/s matmul")
  parser.add_argument("--show-ops", action="store_true", help="list each rung's matmul ops")
  args = parser.parse_args()
  sharding.use_cpu_devices(args.cpu_devices)   # before JAX starts
  names = args.models or [m for lad in args.ladders for m in models.ladder(lad)]

  print(f"jax {jax.__version__}, backend {jax.default_backend()}, "
        f"{jax.device_count()} x {jax.devices()[0].device_kind}")
  rows = []
  for name in names:
    rows.append(bench_model(name, args.batch, args.runs, args.k, args.steps, args.rounds, args.matmul))
    if args.show_ops:
      for mm in rows[-1]["matmuls"]:
        print(f"  {mm.count:>4.0f} x {mm.describe()}")
  peaks = sorted(p for r in rows for p in r["peak"])
  print(f"practical peak: {args.matmul}^3 float32 matmul, measured at the start of every round: median "
        f"{np.median(peaks) / 1e9:.1f} GFLOP/s, range {peaks[0] / 1e9:.1f}-{peaks[-1] / 1e9:.1f}\n")
  print(f"train step, float32, 16 px, 52 classes, batch {args.batch} per run, {args.runs} runs on "
        f"{jax.device_count()} device(s), K = {args.k}, {args.steps // args.k} dispatches per round, "
        f"median of {args.rounds} rounds; engine = bench_train's train program, mm = its matmuls alone")
  table(rows)


if __name__ == "__main__":
  main()
