"""What the evaluations along the budget cost: one group of the default study's pretraining trained
with its ``eval_at`` and with ``eval_at = (1.0,)`` (the final evaluation only), in turn, in one process.

  python benchmarks/bench_evals.py [--model vit_tiny_xxs] [--runs 4] [--steps 800] [--rounds 2]
  python benchmarks/bench_evals.py --study configs/default.py:quick [--rounds 2]

Each variant trains the same runs from scratch in a fresh group directory (no checkpoints, the same
compiled programs: the first, untimed warm-up round compiles them). Prints each round's wall time, the
median per variant and the overhead (with / without - 1), and the host time spent waiting for the
points' results (each fetched one dispatch after it was queued; timed around each fetch). The default config's evaluation settings are
used (its eval_batch_size, eval_subset and eval_at), so the points cost what they cost in the study.

``--study CONFIG``: whole ``jaxscale study`` processes instead of one group, the config as it is and
with ``eval_at = (1.0,)`` in both stages, in turn, each in a fresh workdir with an empty compilation
cache (``bench_study.study_process``); wall times include compiles, the fits and the report: what the
points cost a user of that study.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from jaxscale import config as config_lib  # noqa: E402
from jaxscale.train import evals, loop  # noqa: E402


def _config(model: str, steps: int, eval_at):
  c = config_lib.load(os.path.join(os.path.dirname(__file__), "..", "configs", "default.py"))
  c.model.name = model
  c.pretrain.optim.update(min_steps=steps, max_steps=steps)
  c.pretrain.eval_at = eval_at
  c.checkpoint.every_steps = 10 ** 6
  return config_lib.validate(c)


SPENT = {"s": 0.0, "n": 0}   # host seconds waiting for the points' evaluations (AlongBudget.flush), and calls
_flush = evals.AlongBudget.flush


def _timed_flush(self):
  t0, pending = time.perf_counter(), self._pending is not None
  _flush(self)
  if pending:
    SPENT["s"] += time.perf_counter() - t0
    SPENT["n"] += 1


evals.AlongBudget.flush = _timed_flush


def _train(config, runs) -> float:
  with tempfile.TemporaryDirectory() as d:
    t0 = time.perf_counter()
    loop.train_group(config, "pretrain", runs, os.path.join(d, "g"), show_progress=False)
    return time.perf_counter() - t0


def whole_study(config_path: str, rounds: int) -> None:
  """The study in `config_path` with and without its points along the budget, `rounds` times in turn."""
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from bench_study import study_process
  repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
  final = ("--config.pretrain.eval_at=(1.0,)", "--config.finetune.eval_at=(1.0,)")
  times: dict[str, list[float]] = {"with eval_at": [], "final only": []}
  for r in range(rounds):
    for name, extra in (("with eval_at", ()), ("final only", final)):
      row = study_process(repo, config_path, "full", "", extra)
      times[name].append(row["wall"])
      print(f"round {r + 1}: {name:>12}  {row['wall']:.1f} s ({row['runs']} runs)", flush=True)
  ratios = sorted(a / b - 1 for a, b in zip(times["with eval_at"], times["final only"]))
  print(f"median: with eval_at {statistics.median(times['with eval_at']):.1f} s, final only "
        f"{statistics.median(times['final only']):.1f} s; overhead per round {', '.join(f'{x:+.1%}' for x in ratios)}, "
        f"median {statistics.median(ratios):+.1%}")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="vit_tiny_xxs")
  p.add_argument("--runs", type=int, default=4)
  p.add_argument("--steps", type=int, default=800)
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--study", default="", metavar="CONFIG", help="time whole studies of this config instead")
  a = p.parse_args()
  if a.study:
    whole_study(a.study, a.rounds)
    return
  with_at = tuple(config_lib.base_config().pretrain.eval_at)
  configs = {"with eval_at": _config(a.model, a.steps, with_at), "final only": _config(a.model, a.steps, (1.0,))}
  c = configs["with eval_at"]
  k = int(c.engine.steps_per_dispatch)
  print(f"{a.model}, {a.runs} runs x {a.steps} steps of batch {c.pretrain.optim.batch_size}, K={k}; "
        f"eval_at={with_at} -> points at steps {evals.eval_steps(with_at, a.steps, k)} on "
        f"{c.pretrain.eval_subset} images, final on the whole split")
  runs = [loop.Run(f"s{s}", s, 1000) for s in range(a.runs)]
  for cfg in configs.values():   # warm-up: compiles every program
    _train(cfg, runs)
  times = {name: [] for name in configs}
  SPENT.update(s=0.0, n=0)
  for r in range(a.rounds):
    for name, cfg in configs.items():
      times[name].append(_train(cfg, runs))
      print(f"round {r + 1}: {name:>12}  {times[name][-1]:.2f} s", flush=True)
  med = {name: statistics.median(v) for name, v in times.items()}
  print(f"median: with eval_at {med['with eval_at']:.2f} s, final only {med['final only']:.2f} s, "
        f"overhead {med['with eval_at'] / med['final only'] - 1:+.1%}")
  per_run = SPENT["s"] / a.rounds
  print(f"host time waiting for the points: {SPENT['n']} fetches, {per_run:.3f} s per trained group = "
        f"{per_run / med['with eval_at']:.1%} of its wall time")


if __name__ == "__main__":
  main()
