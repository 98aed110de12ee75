"""Where a study's wall time goes: compile, input preparation, train dispatches, evaluation,
checkpoint writes, records/analysis/report and the host gaps between dispatches, per model rung.

  python benchmarks/profile_study.py [--config configs/default.py:quick] [--workdir DIR]
                                     [--cache off|DIR] [--matmul 2048]

Runs ``jaxscale study`` in this process (the CPU split as the study splits it) with timers wrapped
around the engine's functions; nothing in the package changes. To time the device's work each train
dispatch is waited for before the loop goes on (the study itself queues the next dispatch first, so
there the host gaps partly overlap the device's work: they are an upper bound of what it loses).
Compile time is what XLA and JAX report (``jax.monitoring``), split into the main thread's (on the
critical path) and the background thread's (the next group compiled while one trains; overlapped),
and subtracted from the phase it happened in. Train FLOPs are the records' ``flops`` (3x the student's
forward plus the teacher's, per image); their FLOP/s is over the dispatches' seconds, against a float32
matmul's measured in the same process afterwards (``bench_train.matmul_peak``).

The compilation cache is off by default (``--cache off``), as on a first run.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

T = collections.defaultdict(float)      # (phase, model) -> seconds
COMPILE = collections.defaultdict(float)  # "main" | "background" -> seconds
CURRENT = {"model": "-"}
PHASES = ("compile (main thread)", "wait for background compile", "input preparation", "train dispatches",
          "host gaps", "evaluation", "checkpoint writes", "group other", "plan and ETA", "records and runner",
          "analysis and report")
_COMPILE_EVENTS = ("/jax/core/compile/backend_compile_duration", "/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration")


def _on_event(event: str, seconds: float, **_) -> None:
  if event in _COMPILE_EVENTS:
    COMPILE["main" if threading.current_thread() is threading.main_thread() else "background"] += seconds


_STACK: list[dict] = []   # the phases open in the main thread, innermost last


@contextlib.contextmanager
def phase(name: str):
  """Adds the block's own seconds (less its nested phases and the main thread's compiles in it) to
  (name, current model), and those compiles to ("compile (main thread)", current model). Other
  threads (the next group's compile ahead) are not timed: their work overlaps the main thread's."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  frame = {"t": time.perf_counter(), "c": COMPILE["main"], "child_t": 0.0, "child_c": 0.0}
  _STACK.append(frame)
  try:
    yield
  finally:
    _STACK.pop()
    total, compiled = time.perf_counter() - frame["t"], COMPILE["main"] - frame["c"]
    own_c = compiled - frame["child_c"]
    T[name, CURRENT["model"]] += total - frame["child_t"] - own_c
    T["compile (main thread)", CURRENT["model"]] += own_c
    if _STACK:
      _STACK[-1]["child_t"] += total
      _STACK[-1]["child_c"] += compiled


def wrap(obj, attr: str, name: str, before=None) -> None:
  fn = getattr(obj, attr)

  @functools.wraps(fn)
  def timed(*a, **k):
    if before is not None:
      before(*a, **k)
    with phase(name):
      return fn(*a, **k)
  setattr(obj, attr, timed)


def _set_model(config, stage, *_, **__) -> None:
  CURRENT["model"] = f"{config.model.name} {stage}"


def instrument() -> None:
  import jax
  from jaxscale.study import console, runner
  from jaxscale.train import checkpoint, loop, steps
  jax.monitoring.register_event_duration_secs_listener(_on_event)
  chunk_fn = steps.make_train_chunk

  def make_train_chunk(*a, **k):
    chunk = chunk_fn(*a, **k)

    def timed(*args):
      with phase("train dispatches"):
        out = chunk(*args)
        jax.block_until_ready(out)
      return out
    timed.lower = chunk.lower   # compile_ahead lowers it
    return timed
  steps.make_train_chunk = make_train_chunk
  wrap(loop, "train_group", "group other", before=_set_model)
  for obj, attr, name in [(loop, "prepare_inputs", "input preparation"), (loop, "build_program", "input preparation"),
                          (loop, "_restore_or_init", "input preparation"), (loop, "evaluate", "evaluation"),
                          (loop, "_train_loop", "host gaps"),
                          (checkpoint.GroupCheckpoints, "save", "checkpoint writes"),
                          (checkpoint.GroupCheckpoints, "__exit__", "checkpoint writes"),
                          (checkpoint, "save_run", "checkpoint writes"), (console, "print_plan", "plan and ETA")]:
    wrap(obj, attr, name)
  ahead_fn = runner._compile_ahead

  def compile_ahead(*a, **k):
    thread = ahead_fn(*a, **k)
    join = thread.join

    def timed_join(*x):
      CURRENT["model"] = "-"
      with phase("wait for background compile"):
        join(*x)
    thread.join = timed_join
    return thread
  runner._compile_ahead = compile_ahead
  wrap(runner, "run_cells", "records and runner", before=lambda *a, **k: CURRENT.update(model="-"))


def flops_by_model(records_path: str) -> dict[str, float]:
  out = collections.defaultdict(float)
  with open(records_path, encoding="utf-8") as f:
    for line in f:
      if line.strip():
        r = json.loads(line)
        out[f"{r['model']} {r['stage']}"] += float(r["flops"])
  return out


def print_table(total: float, peak: float, flops: dict[str, float]) -> None:
  T["other (config, startup)", "-"] += total - sum(T.values())
  models = sorted({m for _, m in T})
  print(f"\nwall {total:.1f} s; compile: main thread {COMPILE['main']:.1f} s, background thread "
        f"{COMPILE['background']:.1f} s (overlapped with training); float32 matmul peak {peak / 1e9:.1f} GFLOP/s")
  print(f"{'phase':<30} {'seconds':>8} {'share':>6}   " + "  ".join(f"{m:>21}" for m in models))
  for p in PHASES + ("other (config, startup)",):
    row = [T.get((p, m), 0.0) for m in models]
    print(f"{p:<30} {sum(row):>8.1f} {sum(row) / total:>6.1%}   " + "  ".join(f"{v:>21.1f}" for v in row))
  print(f"\n{'model, stage':<24} {'train TFLOPs':>12} {'dispatch s':>10} {'GFLOP/s':>8} {'of peak':>8}")
  for m in models:
    sec = T.get(("train dispatches", m), 0.0)
    if sec > 0 and m in flops:
      print(f"{m:<24} {flops[m] / 1e12:>12.3f} {sec:>10.1f} {flops[m] / sec / 1e9:>8.1f} {flops[m] / sec / peak:>8.1%}")
  all_f, all_s = sum(flops.values()), sum(v for (p, _), v in T.items() if p == "train dispatches")
  print(f"{'all':<24} {all_f / 1e12:>12.3f} {all_s:>10.1f} {all_f / all_s / 1e9:>8.1f} {all_f / all_s / peak:>8.1%}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/default.py:quick")
  parser.add_argument("--workdir", default="", help="study directory ('' = a fresh temporary one)")
  parser.add_argument("--cache", default="off", help="JAXSCALE_COMPILATION_CACHE for the study (off = none)")
  parser.add_argument("--matmul", type=int, default=2048, help="side of the peak-FLOP/s matmul")
  args, overrides = parser.parse_known_args()
  os.environ["JAXSCALE_COMPILATION_CACHE"] = args.cache
  instrument()
  from bench_train import matmul_peak
  from jaxscale import cli
  from jaxscale.report import command as report_command
  from jaxscale.study import runner
  import jax.numpy as jnp

  build = report_command.build

  def timed_build(*a, **k):
    CURRENT["model"] = "-"
    with phase("analysis and report"):
      return build(*a, **k)
  report_command.build = timed_build
  with tempfile.TemporaryDirectory() as tmp:
    workdir = args.workdir or os.path.join(tmp, "study")
    t0 = time.perf_counter()
    code = cli.main(["study", "--config", args.config, "--workdir", workdir, "--no-progress", *overrides])
    total = time.perf_counter() - t0
    if code:
      sys.exit(code)
    flops = flops_by_model(runner.paths(workdir)["records"])
  print_table(total, matmul_peak(args.matmul, jnp.float32), flops)


if __name__ == "__main__":
  main()
