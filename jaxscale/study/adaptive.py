"""Adaptive rounds: which points get more seed pairs next, and how many.

Why the rounds stay valid: a point is only ever judged at one of a fixed set of pair counts,
`sample_sizes(n0, rounds)` = n0, 2·n0, 4·n0, ... (rounds of them; n0 the config's seeds), and each
look judges all points as one family at false discovery rate 0.05 / rounds
(`verdicts.study_levels`), so the rate is split evenly over the looks. (Letting the observed need
set the pair count directly inflated false claims: in benchmarks/sim_decisions.py, under the
earlier Bonferroni rule, it gave 8% of no-effect studies a wrong verdict.)

The next round moves every undecided point one size up (n -> 2n, or to the first size with
`verdicts.MIN_PAIRS`; a point at the largest size, or decided, gets none). The rounds stop when no point gets a pair, the run budget is spent, or after
`rounds` looks. Why one size at a time and not straight to the size its estimated need
(`verdicts.pairs_needed`) asks for: the need is estimated from the point's own few pairs, whose
spread is itself noisy, so jumping to it often overshoots; the looks are fixed in advance
(`rounds`), so stepping costs no error rate, only more rounds of wall time.

Measured with benchmarks/sim_decisions.py --sims 400 (64 points, pair SD 0.04, 4 pairs in round 1,
on a default-like truth ΔE +0.10, +0.05, 0, −0.03 along Dp): with at most 5 rounds (4 … 64 pairs)
the adaptive study uses 38% of the runs of a fixed grid of 64 pairs everywhere and reaches 98.4% of
its decisions (jumping straight to the estimated need used 54%); with at most 4 rounds (a cap of 32
pairs) it uses 59% and reaches 87.5%, because the fixed grid, deciding most points at once, is
judged at a far looser Benjamini-Hochberg level (1 − 0.038 against 1 − 0.009). The points with no
true difference need about 16 pairs to show equivalence within the margin: that is where the saving
is made or lost.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from ml_collections import ConfigDict

from jaxscale.errors import JaxscaleError
from jaxscale.study import verdicts

def sample_sizes(n0: int, rounds: int) -> tuple[int, ...]:
  """The pair counts a point may be judged at: n0 · 2^k for k < rounds."""
  return tuple(int(n0) * 2 ** k for k in range(int(rounds)))


def next_pairs(n_pairs: int, verdict: str, sizes: Sequence[int]) -> int:
  """Pairs the next round adds at one point (0: none): an undecided point below the largest size
  moves to the next size of `sizes` (the first with at least `verdicts.MIN_PAIRS`, the fewest a
  verdict can rest on); a decided point, or one at the largest size, stays."""
  if verdict != "undecided" or n_pairs >= sizes[-1]:
    return 0
  return next((s for s in sizes if s > n_pairs and s >= verdicts.MIN_PAIRS), sizes[-1]) - n_pairs


@dataclasses.dataclass(frozen=True)
class Addition:
  """New seed pairs at one (model, Dp): `seeds` pretrained in every arm, each fine-tuned at the Df
  of `finetunes` {df: how many of the seeds} (0: the pretraining task's own point); `why` per point
  in words; `undecided` the same points as (comparison, df), for the report's short form
  (`short_why`)."""
  model: str
  dp: int
  seeds: tuple[int, ...]
  finetunes: dict[int, int]
  why: tuple[str, ...]
  undecided: tuple[tuple[str, int], ...] = ()


def short_why(undecided: Sequence[Sequence[Any]]) -> str:
  """The undecided points of one addition in a few words, per comparison: e.g. "distilled vs
  plain: pretraining task, Df 100, 1,000; distilled vs smoothed: Df 300 undecided"."""
  by: dict[str, list[int]] = {}
  for comparison, df in undecided:
    by.setdefault(str(comparison), []).append(int(df))
  parts = [f"{c.replace('_', ' ')}: " + ", ".join(
      ["pretraining task"] * (0 in dfs) + [f"Df {d:,}" for d in sorted(dfs) if d])
      for c, dfs in by.items()]
  return "; ".join(parts) + " undecided"


def next_round(config: ConfigDict, rows: Sequence[Mapping[str, Any]]
               ) -> tuple[list[Addition], list[verdicts.PairedCell], float]:
  """The next round of an adaptive study from its records: (additions, the cells as judged now,
  the level used). Points are judged at the adaptive level (alpha spent over max_rounds looks);
  diverged runs are left out. New seeds continue after the largest student seed in the records
  (the teacher's own seed, `study.teacher_seed`, is not in that sequence)."""
  arms = tuple(config.study.arms)
  if len(verdicts.comparisons(arms)) == 0:
    raise JaxscaleError(f"config.study.arms is {arms}: adaptive rounds compare arms, so the study needs "
                        "'plain' and 'distilled'")
  s = config.study
  rule = verdicts.FamilyRule(verdicts.family_size(arms, s.models, s.dp, s.df), int(s.max_rounds))
  ok = [r for r in rows if r.get("diverged_at") is None]
  diverged = [r for r in rows if r.get("diverged_at") is not None]
  cells = verdicts.paired_cells(ok, int(config.seed), float(s.margin), rule, arms, diverged)
  lv = verdicts.levels_of(cells)
  alpha = lv.diff if lv else verdicts.point_alpha(rule.points, rule.rounds)
  sizes = sample_sizes(len(s.seeds), int(s.max_rounds))
  want: dict[tuple[str, int], dict[int, int]] = {}
  why: dict[tuple[str, int], list[str]] = {}
  where: dict[tuple[str, int], list[tuple[str, int]]] = {}
  for c in cells:
    if c.verdict == "cannot_be_judged":
      continue
    for p in c.points:
      add = next_pairs(p.n_pairs, p.verdict, sizes)
      if add:
        key = (c.model, p.dp)
        df = c.df if c.stage == "finetune" else 0
        want.setdefault(key, {})[df] = max(want.get(key, {}).get(df, 0), add)
        ci = f" [{p.ci[0]:+.3f}, {p.ci[1]:+.3f}]" if p.ci else ""
        reason = (f"a verdict needs at least {verdicts.MIN_PAIRS} pairs" if p.n_pairs < 2 else
                  f"{p.pairs_needed} more expected to decide it" if p.pairs_needed is not None else
                  f"over {verdicts.MAX_PAIRS_NEEDED} more expected to decide it")
        where.setdefault(key, []).append((c.comparison, df))
        why.setdefault(key, []).append(
            f"{c.comparison.replace('_', ' ')}, {'pretraining task' if df == 0 else f'Df = {df:,}'}: "
            f"ΔE {p.mean_delta:+.3f}{ci} from {p.n_pairs} pair{'s' * (p.n_pairs > 1)} is undecided; "
            f"{reason}; to {p.n_pairs + add} pairs")
  last = max([int(r["seed"]) for r in rows if "seed" in r and not verdicts.is_teacher(r)] + list(s.seeds))
  out = []
  for (model, dp), by_df in sorted(want.items()):
    k = max(by_df.values())
    out.append(Addition(model, dp, tuple(range(last + 1, last + 1 + k)), by_df, tuple(why[(model, dp)]),
                          tuple(where[(model, dp)])))
  return out, cells, alpha


def round_runs(additions: Sequence[Addition], arms: Sequence[str]) -> int:
  """Runs a round trains: per (model, Dp) its new seeds' pretraining in every arm and, per Df, the
  fine-tunes of as many of them as that Df's point asks for, in every arm."""
  return sum(len(arms) * (len(a.seeds) + sum(n for df, n in a.finetunes.items() if df)) for a in additions)


def describe(additions: Sequence[Addition], cells: Sequence[verdicts.PairedCell], alpha: float,
             arms: Sequence[str]) -> str:
  """What the next round would run, and why (the text of `jaxscale suggest`)."""
  open_ = sum(p.verdict == "undecided" for c in cells for p in c.points)
  head = (f"{sum(len(c.points) for c in cells)} points judged at level 1 - {alpha:.3g} (false discovery rate spent "
          f"over the study's rounds); {open_} undecided.")
  if not additions:
    return head + " Next round: nothing to add (every point is decided or has the most pairs a point may get)."
  lines = [head, f"Next round (not run): {len(additions)} (model, Dp) get new seed pairs, "
                 f"{round_runs(additions, arms):,} runs:"]
  for a in additions:
    dfs = ", ".join(f"Df = {df:,}: {n}" for df, n in sorted(a.finetunes.items()) if df)
    seeds = f"seed {a.seeds[0]}" if len(a.seeds) == 1 else f"seeds {a.seeds[0]}-{a.seeds[-1]}"
    lines.append(f"  {a.model} Dp = {a.dp:,}: {seeds} ({len(a.seeds)} pair{'s' * (len(a.seeds) > 1)} "
                 f"pretrained in each arm; fine-tunes {dfs or 'none'})")
    lines += [f"    {w}" for w in a.why]
  return "\n".join(lines)
