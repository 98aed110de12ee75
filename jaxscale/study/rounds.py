"""An adaptive study's rounds: train the config's grid, then the seed pairs `adaptive.next_round`
asks for, round after round, into the same records.jsonl.

Round 1 is the config's grid (its seeds). Each later round is planned from the records as they are
when it starts (`adaptive.next_round`, a pure function of them), written to ``rounds.json`` before
any of its cells trains, then trained (its groups under ``groups/round<k>/``: a group's id names
its cells only within one grid). A resumed study reuses every round already planned, so it trains
the same rounds and seeds. The rounds stop when no point gets a pair (every point is decided, or at
the most pairs it may get), after ``config.study.max_rounds`` rounds, or when the run budget
(`max_runs`, runs added after round 1) cannot pay for any open (model, Dp): a round takes the
additions cheapest first (fewest runs: the points closest to a verdict), each one that still fits.

``rounds.json``: ``{"max_runs", "rounds": [{"round", "runs", "why" (round 1) | "additions":
[{"model", "dp", "seeds", "finetunes": [[df, n]], "runs", "why"}], "left_out"}], "stopped"}``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from ml_collections import ConfigDict

from jaxscale.errors import JaxscaleError
from jaxscale.fileio import atomic_write_text
from jaxscale.study import adaptive, grid, records, runner

ROUNDS_FILE = "rounds.json"


def path(workdir: str) -> str:
  return os.path.join(workdir, ROUNDS_FILE)


def check(config: ConfigDict, max_runs: Any) -> int | None:
  """The run budget as an int (None: no budget); a one-line error for a budget that is not a
  positive integer or a study whose arms adaptive rounds cannot compare."""
  arms = tuple(config.study.arms)
  if "plain" not in arms or "distilled" not in arms:
    raise JaxscaleError(f"config.study.arms is {arms}: adaptive rounds add pairs where the distilled arm's "
                        "verdict is open, so the study needs both 'plain' and 'distilled'")
  if max_runs is None:
    return None
  text = str(max_runs).strip()
  if not text.isdigit() or int(text) < 1:
    raise JaxscaleError(f"--max-runs must be a positive integer (runs added after round 1), got {max_runs!r}")
  return int(text)


def cells_of(config: ConfigDict, addition: adaptive.Addition) -> list[grid.Cell]:
  """The cells of one addition, in `grid.expand`'s order: per selection, arm and new seed its
  pretraining and the fine-tunes its Df points ask for (the first n seeds at a Df that wants n)."""
  out = []
  for selection in config.study.selection:
    for arm in config.study.arms:
      for i, seed in enumerate(addition.seeds):
        pre = grid.Cell(grid.PRETRAIN, addition.model, int(addition.dp), arm, int(seed), selection=selection)
        out.append(pre)
        out += [dataclasses.replace(pre, kind=grid.FINETUNE, df=int(df))
                for df, n in sorted(addition.finetunes.items()) if df and i < n]
  return out


def _entry(a: adaptive.Addition, runs: int) -> dict[str, Any]:
  return {"model": a.model, "dp": int(a.dp), "seeds": [int(s) for s in a.seeds],
          "finetunes": [[int(df), int(n)] for df, n in sorted(a.finetunes.items())], "runs": runs,
          "why": list(a.why), "undecided": [[c, int(df)] for c, df in a.undecided]}


def _addition(e: dict[str, Any]) -> adaptive.Addition:
  return adaptive.Addition(e["model"], int(e["dp"]), tuple(e["seeds"]),
                           {int(df): int(n) for df, n in e["finetunes"]}, tuple(e["why"]),
                           tuple((str(c), int(df)) for c, df in e.get("undecided", ())))


def round_cells(config: ConfigDict, entry: dict[str, Any]) -> list[grid.Cell]:
  """The cells a planned round (an entry of rounds.json) trains."""
  return [c for e in entry["additions"] for c in cells_of(config, _addition(e))]


def plan_round(config: ConfigDict, rows: list[dict[str, Any]], k: int, budget: int | None
               ) -> tuple[dict[str, Any] | None, str]:
  """Round `k` from the records `rows` within `budget` runs (None: any): (its rounds.json entry,
  or None with the reason the rounds stop)."""
  additions, cells, _ = adaptive.next_round(config, rows)
  if not additions:
    return None, "every point is decided or has the most pairs a point may get"
  costs = sorted((len(cells_of(config, a)), a.model, a.dp, a) for a in additions)  # cheapest first
  taken, runs = [], 0
  for n, _, _, a in costs:
    if budget is None or runs + n <= budget:
      taken.append(_entry(a, n))
      runs += n
  if not taken:
    return None, (f"the run budget is spent: {budget} runs left, the cheapest (model, Dp) still open "
                  f"needs {costs[0][0]}")
  undecided = sum(p.verdict == "undecided" for c in cells for p in c.points)
  return {"round": k, "runs": runs, "undecided": undecided, "additions": taken,
          "left_out": len(additions) - len(taken)}, ""


def read_log(workdir: str) -> dict[str, Any] | None:
  """The rounds log of `workdir`, or None when the study has none."""
  if not os.path.exists(path(workdir)):
    return None
  try:
    with open(path(workdir), encoding="utf-8") as f:
      log = json.load(f)
  except (ValueError, UnicodeDecodeError):
    log = None
  if not isinstance(log, dict) or not isinstance(log.get("rounds"), list):
    raise JaxscaleError(f"{path(workdir)} is not a rounds log (truncated or edited?); restore it, or pass "
                        "--force-new to start the study again")
  return log


def _write(workdir: str, log: dict[str, Any]) -> None:
  import jax
  if jax.process_index() == 0:  # the other processes plan the same rounds from the same records
    atomic_write_text(path(workdir), json.dumps(log, indent=2, sort_keys=True))


def run(config: ConfigDict, workdir: str, max_runs: int | None, show_progress: bool = True) -> dict[str, Any]:
  """Trains round 1 and then the adaptive rounds (resuming planned ones); returns the rounds log."""
  first = {"round": 1, "runs": len(grid.expand(config)),
           "why": f"the config's seeds: {', '.join(str(s) for s in config.study.seeds)}"}
  log = read_log(workdir) or {"rounds": [first]}
  log["max_runs"] = max_runs
  _write(workdir, log)
  runner.run_cells(config, workdir, show_progress=show_progress)
  planned = {int(e["round"]): e for e in log["rounds"]}
  spent, stopped = 0, f"all {int(config.study.max_rounds)} rounds (config.study.max_rounds) are run"
  for k in range(2, int(config.study.max_rounds) + 1):
    entry = planned.get(k)
    if entry is None:
      rows = records.read(runner.paths(workdir)["records"])
      entry, why = plan_round(config, rows, k, None if max_runs is None else max(0, max_runs - spent))
      if entry is None:
        stopped = why
        break
      log["rounds"].append(entry)
      log.pop("stopped", None)
      _write(workdir, log)  # the plan first: a resumed study trains this same round
    runner.run_cells(config, workdir, show_progress=show_progress, cells=round_cells(config, entry),
                     groups_dir=os.path.join(runner.paths(workdir)["groups"], f"round{k}"))
    spent += int(entry["runs"])
  log["stopped"] = stopped
  _write(workdir, log)
  return log


def describe_first(config: ConfigDict, max_runs: int | None) -> str:
  """What `--dry-run` says of the rounds after the plan of round 1."""
  budget = "no run budget" if max_runs is None else f"at most {max_runs:,} runs added"
  return (f"Adaptive: the plan above is round 1 (the config's seeds). Up to {int(config.study.max_rounds) - 1} "
          f"later rounds ({budget}) add seed pairs where the verdict is still open; which ones depends on "
          "round 1's results (`jaxscale suggest --workdir W` prints the next round once it has run).")

