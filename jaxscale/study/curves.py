"""Learning curves of a study for its report: seed-mean error against examples seen, and whether the
budget binds.

:func:`figure_curves` gives, per model, the curves of the smallest and the largest Dp for each arm
(the mean over seeds with a 95% t band); :func:`budget_check` says in words how much the plain arm's
error fell over the last part of the budget at the largest Dp, from paired within-seed drops with a
95% t interval, and flags a curve still falling by more than the margin (the budget binds) or flat,
within the margin, since 30% of the budget (the budget is far longer than needed). Both are pure
functions of curves.jsonl lines (:func:`jaxscale.study.records.curve`).

A curve's points before its end are measured on a fixed subset of the eval split, its last on the
whole split: each is an unbiased estimate of the same error, the earlier ones noisier (``eval_count``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import stats

LAST = 0.3       # the budget check's "last 30% of the budget"
EARLY = 0.3      # "flat since early": since this fraction of the budget


def _select(curves: Sequence[dict], stage: str, df: int | None) -> list[dict]:
  rows = [c for c in curves if c.get("stage") == stage and c.get("points")]
  if stage == "finetune" and rows:
    want = df if df is not None else max(int(c["df"]) for c in rows)
    rows = [c for c in rows if int(c["df"]) == want]
  return rows


def _t_band(values: np.ndarray) -> tuple[float, float, float]:
  """(mean, low, high) of a 95% t interval over the first axis (low = high = mean for one value)."""
  mean = float(np.mean(values))
  if len(values) < 2:
    return mean, mean, mean
  half = float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values)))
  return mean, mean - half, mean + half


def _mean_curve(runs: Sequence[dict]) -> dict[str, Any]:
  """The seed mean at the examples every run has, with its band and the seed count."""
  common = sorted(set.intersection(*[{p["examples"] for p in r["points"]} for r in runs]))
  by_run = [{p["examples"]: p["eval_error"] for p in r["points"]} for r in runs]
  bands = [_t_band(np.array([b[x] for b in by_run], np.float64)) for x in common]
  return {"examples": common, "mean": [b[0] for b in bands], "low": [b[1] for b in bands],
          "high": [b[2] for b in bands], "seeds": len(runs)}


def figure_curves(curves: Sequence[dict], stage: str = "pretrain", df: int | None = None) -> dict[str, dict]:
  """Per model: ``{"dp": [smallest, largest], "curves": {(dp, arm): mean curve}}``; a mean curve is
  ``examples, mean, low, high`` (95% t band over seeds; low = high = mean for one seed) and ``seeds``.
  Fine-tune curves are those of `df` (default: the largest Df)."""
  rows = _select(curves, stage, df)
  out: dict[str, dict] = {}
  for model in sorted({c["model"] for c in rows}):
    mine = [c for c in rows if c["model"] == model]
    dps = sorted({int(c["dp"]) for c in mine})
    ends = sorted({dps[0], dps[-1]})
    groups = {}
    for dp in ends:
      for arm in sorted({c["arm"] for c in mine if int(c["dp"]) == dp}):
        groups[(dp, arm)] = _mean_curve([c for c in mine if int(c["dp"]) == dp and c["arm"] == arm])
    out[model] = {"dp": [dps[0], dps[-1]], "curves": groups}
  return out


def _error_at(run: dict, frac: float) -> tuple[float, float] | None:
  """(fraction, error) of the run's point before its end nearest to `frac` of its budget (points
  sit at dispatch boundaries, so 0.7 may be measured at 0.703), or None without such a point."""
  pts = [p for p in run["points"] if p["step"] < run["steps"]]
  if not pts:
    return None
  p = min(pts, key=lambda p: (abs(p["step"] / run["steps"] - frac), p["step"]))
  return p["step"] / run["steps"], p["eval_error"]


def budget_check(curves: Sequence[dict], margin: float, stage: str = "pretrain", df: int | None = None,
                 arm: str = "plain") -> dict[str, dict]:
  """Per model, at its largest Dp: the `arm`'s error drop over the last `LAST` of the budget (paired
  within seeds; measured from the point nearest to 1 - LAST), its 95% t interval, a flag and
  a sentence. Flags: ``"binds"`` (the interval lies above `margin`: still falling steeply),
  ``"flat"`` (the drop since `EARLY` of the budget lies inside ±margin), ``""`` (neither), or
  ``"no points"`` (no run has a point early enough)."""
  out = {}
  rows = [c for c in _select(curves, stage, df) if c["arm"] == arm]
  for model in sorted({c["model"] for c in rows}):
    mine = [c for c in rows if c["model"] == model]
    dp = max(int(c["dp"]) for c in mine)
    runs = [c for c in mine if int(c["dp"]) == dp]
    late = [(_error_at(r, 1 - LAST), r["points"][-1]["eval_error"]) for r in runs]
    late = [(a, end) for a, end in late if a is not None and a[0] < 1]
    if not late:
      out[model] = {"dp": dp, "flag": "no points", "text": f"{model}: no point before the last {LAST:.0%} of "
                    f"the budget at Dp={dp} (add a fraction <= {1 - LAST:g} to eval_at)"}
      continue
    drop = _t_band(np.array([a[1] - end for a, end in late]))
    since = 1 - min(a[0] for a, _ in late)
    early = [(_error_at(r, EARLY), r["points"][-1]["eval_error"]) for r in runs]
    early = [a[1] - end for a, end in early if a is not None and a[0] < 1]
    flat = _t_band(np.array(early)) if early else None
    flag = ("binds" if drop[1] > margin else
            "flat" if flat is not None and -margin < flat[1] and flat[2] < margin else "")
    text = (f"{model}: at the largest Dp ({dp}) the {arm} error fell by {drop[0]:.3f} (95% CI "
            f"[{drop[1]:.3f}, {drop[2]:.3f}], {len(late)} seeds) over the last {since:.0%} of the budget")
    text += {"binds": f", more than the margin {margin:g}: the budget binds (longer training would still help)",
             "flat": f"; flat within ±{margin:g} since {EARLY:.0%} of the budget: the budget is far longer than "
                     "needed", "": ""}[flag]
    out[model] = {"dp": dp, "drop": drop[0], "ci": [drop[1], drop[2]], "seeds": len(late),
                  "over": since, "flag": flag, "text": text}
  return out
