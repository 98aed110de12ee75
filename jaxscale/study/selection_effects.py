"""How the choice of the Dp images moves the error: each selection against random, paired.

:func:`selection_effects` takes a study's records and returns, per selection (``random`` and the
prototype rules of :mod:`jaxscale.data.subsets`), the mean error at each Dp, the paired difference
to random at each Dp with its 95% interval and a verdict, and the selection's fitted Dp exponent
with a bootstrap interval. It is pure (records in, numbers out) and reads nothing else.

Pairs: a unit is one (model, seed): it fixes the init, the data order and, for a fine-tune, the Df
subset in every selection, so ``E_selection - E_random`` is taken per unit and Dp, averaged over
the unit's Df values first (the fine-tunes of one pretraining are not independent), and the
interval is Student's t over the units, Bonferroni-adjusted over every (selection, Dp) comparison of
the summary (level ``1 - 0.05 / m``), so the chance that any verdict of the summary is wrong stays
below 5%. The verdict at a Dp is "better" or "worse" than random when the interval excludes 0, else
"cannot tell". The exponent: ``E(Dp) = A * Dp^(-a)`` fitted by least
squares on log error against log Dp to the per-Dp means over the units (an effective exponent over
the Dp range studied: no irreducible-error term, which few Dp values cannot identify), its interval
the 2.5-97.5% percentiles of refits to units resampled with replacement.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Mapping

import numpy as np
from scipy import stats

RANDOM = "random"


def _cells(records: Iterable[Mapping[str, Any]], stage: str, arm: str) -> dict:
  """{selection: {(model, seed): {dp: mean error over the unit's Df values}}} of the students."""
  acc: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
  for r in records:
    if r.get("stage") != stage or str(r.get("cell_id", "")).startswith("teacher-"):
      continue
    if r.get("arm", "distilled" if r.get("distilled") else "plain") != arm:
      continue
    acc[r.get("selection", RANDOM)][(r["model"], int(r["seed"]))][int(r["dp"])].append(float(r["eval_error"]))
  return {sel: {u: {dp: float(np.mean(v)) for dp, v in dps.items()} for u, dps in units.items()}
          for sel, units in acc.items()}


def _t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
  if len(values) < 2:
    return float("nan"), float("nan")
  half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
  return float(values.mean() - half), float(values.mean() + half)


def dp_exponent(dp: np.ndarray, error: np.ndarray) -> float:
  """``a`` of ``E = A * Dp^(-a)``: minus the least-squares slope of log error on log Dp (NaN below 2 Dp)."""
  dp, error = np.asarray(dp, float), np.asarray(error, float)
  ok = error > 0
  if ok.sum() < 2:
    return float("nan")
  return float(-np.polyfit(np.log(dp[ok]), np.log(error[ok]), 1)[0])


def _exponent(units: dict, dps: list[int], bootstrap: int, seed: int) -> dict[str, float]:
  """The fitted exponent of the unit means and its bootstrap interval over units."""
  table = np.array([[units[u].get(dp, np.nan) for dp in dps] for u in sorted(units)])
  value = dp_exponent(np.array(dps), np.nanmean(table, axis=0))
  rng = np.random.default_rng(seed)
  draws = []
  for _ in range(bootstrap if len(table) > 1 else 0):
    sample = table[rng.integers(0, len(table), len(table))]
    with np.errstate(all="ignore"):
      draws.append(dp_exponent(np.array(dps), np.nanmean(sample, axis=0)))
  draws = np.array([d for d in draws if np.isfinite(d)])
  low, high = (np.percentile(draws, [2.5, 97.5]) if len(draws) else (np.nan, np.nan))
  return {"value": value, "ci_low": float(low), "ci_high": float(high)}


def _versus_random(units: dict, baseline: dict, dp: int, level: float) -> dict[str, Any]:
  """The paired difference E_selection - E_random at `dp` over the units both have."""
  diffs = np.array([units[u][dp] - baseline[u][dp] for u in sorted(units)
                    if dp in units[u] and u in baseline and dp in baseline[u]])
  low, high = _t_interval(diffs, level)
  verdict = "better" if high < 0 else "worse" if low > 0 else "cannot tell"
  return {"dp": dp, "diff": float(diffs.mean()) if len(diffs) else float("nan"), "ci_low": low,
          "ci_high": high, "level": level, "pairs": int(len(diffs)), "verdict": verdict}


def selection_effects(records: Iterable[Mapping[str, Any]], *, stage: str = "finetune", arm: str = "plain",
                      bootstrap: int = 200, seed: int = 0) -> dict[str, dict[str, Any]]:
  """Per selection of `arm`'s `stage` records: the error against Dp, paired against random.

  Returns ``{selection: {"dp": [Dp...], "mean": [mean error...], "units": [(model, seed) units
  per Dp...], "exponent": {"value", "ci_low", "ci_high"}, "vs_random": [{"dp", "diff", "ci_low",
  "ci_high", "level" (of the interval, Bonferroni-adjusted), "pairs", "verdict"}...]}}``,
  ``vs_random`` empty for random itself (or when the records have no random selection). Selections
  in the order random first, then by name.
  """
  cells = _cells(list(records), stage, arm)
  compared = [sel for sel in cells if sel != RANDOM] if RANDOM in cells else []
  m = sum(len({dp for per in cells[sel].values() for dp in per}) for sel in compared)
  level = 1 - 0.05 / max(m, 1)
  out = {}
  for sel in sorted(cells, key=lambda s: (s != RANDOM, s)):
    units = cells[sel]
    dps = sorted({dp for per in units.values() for dp in per})
    out[sel] = {
        "dp": dps,
        "mean": [float(np.mean([per[dp] for per in units.values() if dp in per])) for dp in dps],
        "units": [sum(dp in per for per in units.values()) for dp in dps],
        "exponent": _exponent(units, dps, bootstrap, seed),
        "vs_random": ([] if sel == RANDOM or RANDOM not in cells
                      else [_versus_random(units, cells[RANDOM], dp, level) for dp in dps]),
    }
  return out
