"""Which seed design decides the default study: designs compared by simulation, before any is run.

The default study's done-when asks for a decided verdict (distilled vs plain) in at least 10 of its 12
downstream (model, Df) cells and in every pretraining-task cell, and for the same verdict in at least
10 of 12 cells from a disjoint seed set. How many seed pairs that takes depends on the effects and the
spread, which the pilot study measured (configs/default.py states them). This script draws per-seed
paired differences from that truth and judges them by THE decision code of the report
(`verdicts.judge_points`, `verdicts.judge_cell`, `adaptive.next_pairs`; no training), for each design:

* round 1 with n0 seeds at every point, then, if the design has an adaptive round, every undecided
  point of the (model, Dp) the run budget pays for (cheapest first, ties in (model, Dp) order, as
  `jaxscale.study.rounds.plan_round` orders them) one pair count up;
* the family is the default's: 2 comparisons (distilled vs plain, distilled vs smoothed) x 4 models
  x 4 Dp x (3 Df + the pretraining task) = 128 points, Benjamini-Hochberg at 0.05 split over the
  design's looks.

The truth, ΔE = E_plain - E_distilled per Dp (160, 800, 4,000, 16,000), and the SD of one pair:

* fine-tunes: +0.03, +0.20, +0.03, -0.01; SD 0.07, 0.07, 0.03, 0.03 (the pilot study: +0.15 to +0.34
  at Dp 800, -0.05 to +0.04 at 16,000; pair SD 0.02-0.07, largest at small Dp);
* the pretraining task: +0.05, +0.25, 0.00, -0.03; SD 0.01, 0.01, 0.005, 0.005 (pair SD about 0.004;
  distillation helps below Dp* about 4,000 and hurts above on the largest model);
* distilled vs smoothed: the same (an assumption: it sets how many points the family decides).

Printed per design: runs, downstream cells decided (mean of 12, and the share of studies with >= 10),
pretraining-task cells decided (of 4), and the cells with the same verdict in two independent studies
(two seed sets). The truth is a stated guess shaped by the pilot, not a measurement of each cell: use
the table to rank designs, not to promise a count.

  python benchmarks/sim_designs.py [--sims 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from jaxscale.study import adaptive as adaptive_lib
from jaxscale.study.verdicts import DEFAULT_MARGIN, FamilyRule, judge_cell, judge_points

MODELS, DPS, KINDS, COMPARISONS = 4, 4, 4, 2   # kind 0: the pretraining task; 1-3: the Df
ARMS = 3
FINETUNE = ((0.03, 0.20, 0.03, -0.01), (0.07, 0.07, 0.03, 0.03))
PRETRAIN = ((0.05, 0.25, 0.00, -0.03), (0.01, 0.01, 0.005, 0.005))
# (name, seeds in round 1, looks, run budget after round 1)
DESIGNS = (("3 seeds + 1 adaptive round (the earlier default)", 3, 2, 144),
           ("3 seeds, one look", 3, 1, 0),
           ("4 seeds, one look", 4, 1, 0),
           ("4 seeds + 1 adaptive round of 144 runs", 4, 2, 144),
           ("5 seeds, one look", 5, 1, 0),
           ("6 seeds, one look", 6, 1, 0))
# The criterion, stated before any design was run: the cheapest design that decides at least
# TARGET_CELLS of the 12 downstream cells in at least TARGET_SHARE of simulated studies.
TARGET_CELLS, TARGET_SHARE = 10, 0.9


def truth(kind: int, j: int) -> tuple[float, float]:
  """(ΔE, pair SD) at Dp index j of a cell of `kind` (0: the pretraining task)."""
  mean, sd = PRETRAIN if kind == 0 else FINETUNE
  return mean[j], sd[j]


def runs_per_pair() -> int:
  """One more seed at one (model, Dp): a pretraining run and its 3 fine-tunes, in every arm."""
  return ARMS * KINDS


def _draw(rng, key, n: int) -> list[float]:
  mean, sd = truth(key[2], key[3])
  return list(mean + sd * rng.normal(size=n))


def study(rng, n0: int, looks: int, budget: int) -> tuple[dict[tuple[int, int], str], int]:
  """One simulated study of a design: ({(model, kind): cell verdict of distilled vs plain}, runs)."""
  keys = [(c, m, k, j) for c in range(COMPARISONS) for m in range(MODELS) for k in range(KINDS) for j in range(DPS)]
  pts = {key: _draw(rng, key, n0) for key in keys}
  rule = FamilyRule(len(keys), looks)
  _, res = judge_points([pts[k] for k in keys], DEFAULT_MARGIN, rule)
  runs = MODELS * DPS * n0 * runs_per_pair() + 1
  if looks > 1:
    sizes = adaptive_lib.sample_sizes(n0, looks)
    add = {k: adaptive_lib.next_pairs(len(pts[k]), r[2], sizes) for k, r in zip(keys, res)}
    spent = 0
    for md in sorted({(k[1], k[3]) for k, a in add.items() if a}):
      cost = max(a for k, a in add.items() if (k[1], k[3]) == md) * runs_per_pair()
      if spent + cost > budget:
        continue
      spent += cost
      for k in (k for k in keys if (k[1], k[3]) == md and add[k]):
        pts[k] += _draw(rng, k, add[k])
    runs += spent
    _, res = judge_points([pts[k] for k in keys], DEFAULT_MARGIN, rule)
  verdict = {k: r[2] for k, r in zip(keys, res)}
  return {(m, k): judge_cell([verdict[(0, m, k, j)] for j in range(DPS)])[0]
          for m in range(MODELS) for k in range(KINDS)}, runs


def compare(rng, sims: int) -> list[dict]:
  """Per design: {name, n0, looks, budget, runs, decided, share, pretraining, same}."""
  rows = []
  for name, n0, looks, budget in DESIGNS:
    decided, ten, pre, same, runs = [], 0, [], [], 0
    for _ in range(sims):
      a, runs = study(rng, n0, looks, budget)
      b, _ = study(rng, n0, looks, budget)
      for cells in (a, b):
        n = sum(cells[(m, k)] != "cannot_tell" for m in range(MODELS) for k in range(1, KINDS))
        decided.append(n)
        ten += n >= TARGET_CELLS
        pre.append(sum(cells[(m, 0)] != "cannot_tell" for m in range(MODELS)))
      same.append(sum(a[(m, k)] == b[(m, k)] for m in range(MODELS) for k in range(1, KINDS)))
    rows.append(dict(name=name, n0=n0, looks=looks, budget=budget, runs=runs, decided=float(np.mean(decided)),
                     share=ten / (2 * sims), pretraining=float(np.mean(pre)), same=float(np.mean(same))))
  return rows


def choose(rows: list[dict]) -> dict | None:
  """The cheapest design (fewest runs) meeting the criterion (TARGET_CELLS, TARGET_SHARE), or None."""
  ok = [r for r in rows if r["share"] >= TARGET_SHARE]
  return min(ok, key=lambda r: r["runs"]) if ok else None


def table(rows: list[dict]) -> list[str]:
  lines = [f"{'design':<50} {'runs':>5} {'downstream decided':>19} {f'>= {TARGET_CELLS} of 12':>12} "
           f"{'pretraining':>12} {'same in 2 seed sets':>20}"]
  for r in rows:
    lines.append(f"{r['name']:<50} {r['runs']:>5} {r['decided']:>16.1f}/12 {r['share']:>12.0%} "
                 f"{r['pretraining']:>10.1f}/4 {r['same']:>17.1f}/12")
  best = choose(rows)
  lines.append(f"cheapest design deciding >= {TARGET_CELLS} of 12 cells in >= {TARGET_SHARE:.0%} of studies: "
               + (best["name"] if best else "none"))
  return lines


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--sims", type=int, default=200, help="pairs of simulated studies per design")
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args(argv)
  start = time.time()
  print(f"default-shaped family ({COMPARISONS * MODELS * DPS * KINDS} points), margin {DEFAULT_MARGIN}, "
        f"{args.sims} pairs of studies per design; truth and spread in the docstring")
  for line in table(compare(np.random.default_rng(args.seed), args.sims)):
    print(line)
  print(f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
  main()
