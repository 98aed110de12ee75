"""Simulated decisions: the study's verdict rule on paired differences drawn from a known truth.

No training: per-seed paired differences ΔE at every point (cell x Dp) are drawn from a stated
effect curve plus a stated spread, and judged by THE decision code of the report
(`jaxscale.study.verdicts.judge_points`, `judge_cell`; tests/study/test_analysis.py
checks that the report's path calls these same functions). The study's shape is the default's:
16 cells (4 models x (3 Df + the pretraining task)) x 4 Dp = 64 points, one comparison.

Printed, one table:
  1. false claims at zero effect: the share of points with a verdict other than "no practical
     difference" or "undecided", fixed design and with adaptive rounds (target <= 5%);
  2. coverage of the ΔE interval for n = 3 ... 32 pairs, at the per-point 95% level and at the
     study-wide level, normal and heavy-tailed (t, 3 degrees of freedom) spread (target >= 93%);
  3. adaptive rounds against the fixed grid on a default-like truth (ΔE = +0.10, +0.05, 0, −0.03
     at the four Dp): runs and the share of the fixed grid's decisions reached (target: at most
     half the runs);
  4. whole-study (16 cells) any-wrong-verdict rate at zero effect (target <= 5%).

The adaptive policy is `jaxscale.study.adaptive.next_pairs` (what `jaxscale suggest` prints): round
1 the design's pairs at every point; then each undecided point moves to the next allowed pair
count (n0 · 2^k, k < rounds); after every round all points are judged again as one family,
Benjamini-Hochberg at FAMILY_ALPHA / rounds (`verdicts.study_levels`).

  python benchmarks/sim_decisions.py [--sims 1000] [--spread 0.04] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from jaxscale.study import adaptive as adaptive_lib
from jaxscale.study.verdicts import (DEFAULT_MARGIN, FAMILY_ALPHA, FamilyRule, judge_cell, judge_points,
                                     point_alpha, t_interval)

CELLS, DPS = 16, 4
DEFAULT_TRUTH = (0.10, 0.05, 0.0, -0.03)   # ΔE at the four Dp: helps at small Dp, falls through 0
WRONG = {"helps": lambda t, m: t <= 0, "hurts": lambda t, m: t >= 0,
         "no_practical_difference": lambda t, m: abs(t) > m, "undecided": lambda t, m: False}


def draw(rng: np.random.Generator, n: int, spread: float, tails: str = "normal") -> np.ndarray:
  """n noise values with SD `spread`: normal, or Student t with 3 df rescaled to that SD."""
  if tails == "normal":
    return spread * rng.normal(size=n)
  return spread * rng.standard_t(3, size=n) / np.sqrt(3.0)


def judge_study(deltas: list[list[np.ndarray]], margin: float, rule: FamilyRule):
  """Point verdicts [cells][dps] (mean, CI, verdict, pairs needed), cell verdicts and the levels,
  by the report's functions: every point of the study judged as one family."""
  levels, flat = judge_points([d for cell in deltas for d in cell], margin, rule)
  points = [flat[i * DPS:(i + 1) * DPS] for i in range(len(deltas))]
  cells = [judge_cell([p[2] for p in cell])[0] for cell in points]
  return points, cells, levels


def run_study(rng, truth, spread, margin, n0, rounds, adaptive):
  """One simulated study: returns (point verdicts [cells][dps], cell verdicts, pairs used, levels)."""
  rule = FamilyRule(CELLS * DPS, rounds if adaptive else 1)
  sizes = adaptive_lib.sample_sizes(n0, rounds)
  deltas = [[truth[j] + draw(rng, n0, spread) for j in range(DPS)] for _ in range(CELLS)]
  points, cells, levels = judge_study(deltas, margin, rule)
  for _ in range(1, rounds if adaptive else 1):
    grew = False
    for i in range(CELLS):
      for j in range(DPS):
        add = adaptive_lib.next_pairs(len(deltas[i][j]), points[i][j][2], sizes)
        if add:
          deltas[i][j] = np.concatenate([deltas[i][j], truth[j] + draw(rng, add, spread)])
          grew = True
    if not grew:
      break
    points, cells, levels = judge_study(deltas, margin, rule)
  return points, cells, sum(len(d) for cell in deltas for d in cell), levels


def false_claims(args, rng) -> list[tuple[str, str, str]]:
  rows = []
  for name, adaptive in (("fixed design", False), ("adaptive rounds", True)):
    claims, studies = 0, 0
    for _ in range(args.sims):
      points, cells, _, _ = run_study(rng, (0.0,) * DPS, args.spread, args.margin, args.n0,
                                   max(args.rounds), adaptive)
      wrong = sum(p[2] in ("helps", "hurts") for cell in points for p in cell)
      claims += wrong
      studies += wrong > 0 or any(c not in ("no_practical_difference", "cannot_tell") for c in cells)
    rows.append((f"zero effect, {name}: points with a false claim", f"{claims / (args.sims * CELLS * DPS):.2%}",
                 "<= 5%"))
    rows.append((f"zero effect, {name}: studies (16 cells) with any wrong verdict",
                 f"{studies / args.sims:.2%}", "<= 5%"))
  return rows


def coverage(args, rng) -> list[tuple[str, str, str]]:
  rows = []
  study = point_alpha(CELLS * DPS)
  for tails in ("normal", "t3"):
    for alpha, label in ((0.05, "95% per point"), (study, f"study level 1 - {study:.2g}")):
      cov = []
      for n in (3, 4, 6, 8, 12, 16, 24, 32):
        hits = 0
        for _ in range(args.coverage_sims):
          lo, hi = t_interval(draw(rng, n, args.spread, tails), alpha)
          hits += lo <= 0.0 <= hi
        cov.append(f"n={n}: {hits / args.coverage_sims:.1%}")
      target = ">= 93%" if alpha == 0.05 else f">= {1 - alpha:.2%} nominal"
      rows.append((f"coverage of the ΔE interval, {label}, {tails} spread", "; ".join(cov), target))
  return rows


def adaptive_vs_fixed(args, rng) -> list[tuple[str, str, str]]:
  return [row for rounds in args.rounds for row in _adaptive_vs_fixed(args, rng, rounds)]


def _adaptive_vs_fixed(args, rng, rounds: int) -> list[tuple[str, str, str]]:
  cap = adaptive_lib.sample_sizes(args.n0, rounds)[-1]
  truth = DEFAULT_TRUTH
  fixed_runs = adaptive_runs = reached = fixed_decided = wrong_fixed = wrong_adaptive = 0
  level_fixed, level_adaptive = [], []
  for _ in range(args.sims):
    fp, _, fn, flv = run_study(rng, truth, args.spread, args.margin, cap, 1, False)
    ap, _, an, alv = run_study(rng, truth, args.spread, args.margin, args.n0, rounds, True)
    level_fixed.append(flv.diff)
    level_adaptive.append(alv.diff)
    fixed_runs += 2 * fn
    adaptive_runs += 2 * an
    for i in range(CELLS):
      for j in range(DPS):
        fv, av = fp[i][j][2], ap[i][j][2]
        wrong_fixed += WRONG[fv](truth[j], args.margin)
        wrong_adaptive += WRONG[av](truth[j], args.margin)
        if fv != "undecided":
          fixed_decided += 1
          reached += av == fv
  points = args.sims * CELLS * DPS
  return [
      (f"default-like truth {truth}, cap {cap}: runs, adaptive (start {args.n0} pairs, <= {rounds} rounds) "
       f"vs fixed grid ({cap} pairs everywhere)",
       f"{adaptive_runs / args.sims:,.0f} vs {fixed_runs / args.sims:,.0f} per study "
       f"({adaptive_runs / fixed_runs:.0%})", "<= 50%"),
      (f"default-like truth, cap {cap}: the fixed grid's decided points the adaptive study decides the same way",
       f"{reached / max(fixed_decided, 1):.1%} ({fixed_decided / points:.1%} of points decided by the fixed grid, "
       f"helps/hurts at a median level 1 - {np.median(level_fixed):.2g}; adaptive 1 - "
       f"{np.median(level_adaptive):.2g})",
       "report"),
      (f"default-like truth, cap {cap}: points with a wrong verdict, fixed / adaptive",
       f"{wrong_fixed / points:.2%} / {wrong_adaptive / points:.2%}", "<= 5%"),
  ]


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--sims", type=int, default=400, help="simulated studies per row")
  ap.add_argument("--coverage-sims", type=int, default=4000, help="intervals per n in the coverage rows")
  ap.add_argument("--spread", type=float, default=0.04,
                  help="SD of one pair's ΔE (the default's 4-pair CI half-widths 0.03-0.11 mean 0.02-0.07)")
  ap.add_argument("--margin", type=float, default=DEFAULT_MARGIN)
  ap.add_argument("--n0", type=int, default=4, help="pairs per point in round 1 (the default's seeds)")
  ap.add_argument("--rounds", type=int, nargs="+", default=[4, 5],
                  help="the adaptive study's most looks (its pair counts: n0 · 2^k, k < rounds); the fixed "
                       "grid compared with has the largest count everywhere")
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args(argv)
  rng = np.random.default_rng(args.seed)
  start = time.time()
  rows = false_claims(args, rng) + coverage(args, rng) + adaptive_vs_fixed(args, rng)
  print(f"decision rule: t-interval per point at the levels of Benjamini-Hochberg over {CELLS * DPS} points "
        f"per family (FDR {FAMILY_ALPHA} per study, split over the rounds when adaptive), margin {args.margin}, spread SD {args.spread}, "
        f"{args.sims} studies per row")
  width = max(len(r[0]) for r in rows)
  print(f"{'quantity':<{width}} | {'measured':<40} | target")
  for name, value, target in rows:
    print(f"{name:<{width}} | {value:<40} | {target}")
  print(f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
  main()
