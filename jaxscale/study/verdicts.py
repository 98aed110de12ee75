"""Paired differences of the two arms and the verdicts they support (numpy and scipy only).

* Measured means (`Measured`): for every cell (stage, model, Dp, Df, arm) the mean error over its
  seeds with a 95% bootstrap CI over seeds. Pretraining cells are evaluated on the pretraining
  task's test split, fine-tune cells on the downstream test split.
* Paired differences (`PairedCell`): ΔE = E_plain − E_distilled of the two arms of the same
  (model, Dp, Df, seed) — positive means distillation lowers the error. Per Dp: the mean over
  seeds and its 95% CI from `N_BOOT` resamples of the seeds (one resample of seed indices is used
  at every Dp, so a seed's pairs move together). Fine-tune cells give one `PairedCell` per
  (model, Df); pretraining records (stage "pretrain", the teacher left out) give one per model with
  df = 0: the verdict on the pretraining task.
* The crossing Dp*: where the mean ΔE changes sign between two neighbouring measured Dp, linear in
  log Dp; its CI is the percentile interval of the same crossing in the bootstrap resamples that
  have one, and `fraction_crossing` is the share of resamples whose mean ΔE changes sign at all.
* The verdict of a `PairedCell` (the rule, `verdict`):
    - every Dp needs at least `MIN_PAIRS` pairs and a CI, else "cannot_tell";
    - "helps_throughout" / "hurts_throughout": the CI lies above / below 0 at every measured Dp;
    - "helps_below_dp_star" ("hurts_below_dp_star"): the mean ΔE crosses 0 from + to − (− to +)
      between two Dp, at least one Dp below Dp* has a CI on the one side of 0 and at least one Dp
      above Dp* a CI on the other side, and no Dp has a CI on the wrong side for where it lies;
    - anything else is "cannot_tell" (the text says at which Dp the CI excludes 0, if any).
  The CIs of means and of ΔE are percentile intervals of the seed resamples widened for small
  samples (`small_sample_ci`: a plain percentile interval from 4 seeds covers about 80%, not 95%).

M is the parameter count as fitted: the `params` field of the fine-tune record (backbone and the
downstream head).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.stats

from jaxscale.laws.uncertainty import percentile_ci

TARGET = "eval_error"
LEVEL = 0.95
N_BOOT = 2000            # seed resamples for measured means and paired differences
MIN_PAIRS = 3            # pairs needed at every Dp before a verdict is stated
VERDICTS = ("helps_below_dp_star", "hurts_below_dp_star", "helps_throughout", "hurts_throughout",
            "cannot_tell")


# ----------------------------------------------------------------------------- typed results

@dataclasses.dataclass(frozen=True)
class Measured:
  """Mean error of one cell over its seeds. ci: (lo, hi) or None with fewer than 2 seeds."""
  stage: str
  model: str
  params: int
  dp: int
  df: int
  arm: str
  n: int
  mean: float
  ci: tuple[float, float] | None
  values: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class PairedPoint:
  """ΔE at one Dp: mean over n_pairs seeds, its CI (None below 2 pairs), the per-seed values."""
  dp: int
  n_pairs: int
  mean_delta: float
  ci: tuple[float, float] | None
  deltas: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Crossing:
  """Where the mean ΔE changes sign (log-linear between neighbouring Dp)."""
  dp_star: float
  ci: tuple[float, float] | None
  fraction_crossing: float | None
  helps_below: bool


@dataclasses.dataclass(frozen=True)
class PairedCell:
  """Paired differences of one (stage, model, Df) along Dp and the verdict they support."""
  stage: str
  model: str
  params: int
  df: int
  points: tuple[PairedPoint, ...]
  crossing: Crossing | None
  fraction_crossing: float | None
  verdict: str
  verdict_text: str


# ----------------------------------------------------------------------------- records

def is_teacher(row: Mapping[str, Any]) -> bool:
  """The teacher's record (stage "pretrain" too) is told apart by its kind or cell id."""
  return row.get("kind") == "teacher" or str(row.get("cell_id", "")).startswith("teacher-")


def arm_of(row: Mapping[str, Any]) -> str:
  return "distilled" if row.get("distilled") else "plain"


def student_rows(rows: Sequence[Mapping[str, Any]], stage: str) -> list[Mapping[str, Any]]:
  """Records of `stage` ("pretrain" | "finetune") without the teacher."""
  return [r for r in rows if r.get("stage") == stage and not is_teacher(r)]


def fitted_params(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
  """M per model: the `params` of its fine-tune records (a model with none: its own record's)."""
  out = {r["model"]: int(r["params"]) for r in rows if r.get("params") is not None}
  out.update({r["model"]: int(r["params"]) for r in student_rows(rows, "finetune")})
  return out


# ----------------------------------------------------------------------------- measured means

def _seed_resamples(n: int, seed: int) -> np.ndarray:
  """int [N_BOOT, n]: indices of n seeds drawn with replacement, N_BOOT times."""
  return np.random.default_rng(seed).integers(0, n, size=(N_BOOT, n))


def small_sample_ci(samples: np.ndarray, center: float, n: int) -> tuple[float, float]:
  """The percentile interval of bootstrap means `samples` [B] of n values, widened about `center`.

  A percentile bootstrap of a mean of n values is too narrow for small n: its spread is
  sqrt((n−1)/n) of the standard error and it uses normal instead of t quantiles (with 4 seeds a
  nominal 95% interval covers about 80%). Both sides are scaled by k = t_{n−1}/z · sqrt(n/(n−1)),
  which for normal data gives back the t interval and keeps the bootstrap's asymmetry otherwise.
  """
  lo, hi = percentile_ci(samples, LEVEL)
  q = 1 - (1 - LEVEL) / 2
  k = scipy.stats.t.ppf(q, n - 1) / scipy.stats.norm.ppf(q) * np.sqrt(n / (n - 1))
  return float(center - k * (center - lo)), float(center + k * (hi - center))


def mean_ci(values: Sequence[float], seed: int = 0) -> tuple[float, tuple[float, float] | None]:
  """Mean of `values` [n] and its percentile bootstrap CI (None for n < 2)."""
  v = np.asarray(values, np.float64)
  if len(v) < 2:
    return float(v.mean()), None
  boot = v[_seed_resamples(len(v), seed)].mean(axis=1)
  return float(v.mean()), small_sample_ci(boot, float(v.mean()), len(v))


def measured_means(rows: Sequence[Mapping[str, Any]], seed: int = 0) -> list[Measured]:
  """One `Measured` per (stage, model, Dp, Df, arm) of the students, the teacher as its own arm."""
  cells: dict[tuple, list[Mapping[str, Any]]] = {}
  m_of = fitted_params(rows)
  for r in rows:
    if r.get("stage") not in ("pretrain", "finetune") or r.get(TARGET) is None:
      continue
    arm = "teacher" if is_teacher(r) else arm_of(r)
    key = (r["stage"], r["model"], int(r["dp"]), int(r.get("df") or 0), arm)
    cells.setdefault(key, []).append(r)
  out = []
  for (stage, model, dp, df, arm), rs in sorted(cells.items()):
    values = [float(r[TARGET]) for r in sorted(rs, key=lambda r: r.get("seed", 0))]
    mean, ci = mean_ci(values, seed)
    out.append(Measured(stage, model, m_of[model], dp, df, arm, len(values), mean,
                        ci, tuple(values)))
  return out


# ----------------------------------------------------------------------------- paired differences

def paired_deltas(rows: Sequence[Mapping[str, Any]], stage: str) -> dict[tuple, dict[int, dict]]:
  """{(model, params, df): {dp: {seed: E_plain − E_distilled}}} over the pairs present in both arms."""
  by_arm: dict[tuple, float] = {}
  params = fitted_params(rows)
  for r in student_rows(rows, stage):
    key = (r["model"], int(r.get("df") or 0), int(r["dp"]), int(r["seed"]), arm_of(r))
    by_arm[key] = float(r[TARGET])
  out: dict[tuple, dict[int, dict]] = {}
  for (model, df, dp, seed, arm), e in by_arm.items():
    other = by_arm.get((model, df, dp, seed, "distilled"))
    if arm == "plain" and other is not None:
      out.setdefault((model, params[model], df), {}).setdefault(dp, {})[seed] = e - other
  return out


def _boot_means(by_dp: Mapping[int, Mapping[int, float]], seed: int) -> tuple[list[int], np.ndarray]:
  """Sorted Dp and float [N_BOOT, n_dp]: mean ΔE per Dp of each seed resample (NaN: no pair)."""
  dps = sorted(by_dp)
  seeds = sorted({s for d in by_dp.values() for s in d})
  table = np.array([[by_dp[dp].get(s, np.nan) for dp in dps] for s in seeds])  # [S, n_dp]
  sample = table[_seed_resamples(len(seeds), seed)]                            # [B, S, n_dp]
  present = ~np.isnan(sample)
  with np.errstate(invalid="ignore", divide="ignore"):
    means = np.where(present, sample, 0.0).sum(axis=1) / present.sum(axis=1)
  return dps, means


def paired_points(by_dp: Mapping[int, Mapping[int, float]], boot: np.ndarray) -> list[PairedPoint]:
  out = []
  for j, dp in enumerate(sorted(by_dp)):
    deltas = tuple(by_dp[dp][s] for s in sorted(by_dp[dp]))
    col = boot[:, j][np.isfinite(boot[:, j])]
    mean = float(np.mean(deltas))
    ci = small_sample_ci(col, mean, len(deltas)) if len(deltas) >= 2 and len(col) else None
    out.append(PairedPoint(dp, len(deltas), mean, ci, deltas))
  return out


def first_crossing(dps: Sequence[int], means: np.ndarray) -> tuple[float, bool] | None:
  """(Dp*, ΔE > 0 below it) where means [n_dp] first change sign, log-linear; None without one."""
  for j in range(len(dps) - 1):
    a, b = means[j], means[j + 1]
    if np.isfinite(a) and np.isfinite(b) and a * b < 0:
      t = a / (a - b)
      return float(np.exp(np.log(dps[j]) + t * (np.log(dps[j + 1]) - np.log(dps[j])))), a > 0
  return None


def crossing(dps: Sequence[int], points: Sequence[PairedPoint], boot: np.ndarray
             ) -> tuple[Crossing | None, float | None]:
  """The crossing of the measured mean ΔE with its bootstrap CI, and the share of resamples that
  cross (both None when no Dp has two pairs: resampling one seed says nothing)."""
  mid = first_crossing(dps, np.array([p.mean_delta for p in points]))
  if max(p.n_pairs for p in points) < 2:
    return (None if mid is None else Crossing(mid[0], None, None, mid[1])), None
  found = [first_crossing(dps, row) for row in boot]
  fraction = float(np.mean([f is not None for f in found]))
  if mid is None:
    return None, fraction
  same = np.array([f[0] for f in found if f is not None and f[1] == mid[1]])
  ci = percentile_ci(same, LEVEL) if len(same) >= 2 else None
  return Crossing(mid[0], ci, fraction, mid[1]), fraction


def verdict(points: Sequence[PairedPoint], cross: Crossing | None) -> str:
  """The verdict the paired CIs support (the rule is in the module docstring)."""
  if any(p.ci is None or p.n_pairs < MIN_PAIRS for p in points):
    return "cannot_tell"
  above = [p.ci[0] > 0 for p in points]   # distillation lowers the error, CI excludes 0
  below = [p.ci[1] < 0 for p in points]   # distillation raises the error, CI excludes 0
  if all(above):
    return "helps_throughout"
  if all(below):
    return "hurts_throughout"
  if cross is None:
    return "cannot_tell"
  low = [i for i, p in enumerate(points) if p.dp < cross.dp_star]
  high = [i for i, p in enumerate(points) if p.dp > cross.dp_star]
  first, then = (above, below) if cross.helps_below else (below, above)
  consistent = not any(then[i] for i in low) and not any(first[i] for i in high)
  if consistent and any(first[i] for i in low) and any(then[i] for i in high):
    return "helps_below_dp_star" if cross.helps_below else "hurts_below_dp_star"
  return "cannot_tell"


def _signed(v: float) -> str:
  return f"{v:+.3f}"


def verdict_text(cell_name: str, verdict_: str, points: Sequence[PairedPoint],
                 cross: Crossing | None, fraction: float | None) -> str:
  """One sentence a reader can check against the table of paired differences."""
  ci = (f" (95% CI {cross.ci[0]:,.0f} to {cross.ci[1]:,.0f})" if cross and cross.ci else "")
  frac = f"; {fraction:.0%} of seed resamples cross" if fraction is not None else ""
  if verdict_ == "helps_throughout":
    return f"{cell_name}: distillation lowers the error at every measured Dp (CI excludes 0 at each)."
  if verdict_ == "hurts_throughout":
    return f"{cell_name}: distillation raises the error at every measured Dp (CI excludes 0 at each)."
  if verdict_ in ("helps_below_dp_star", "hurts_below_dp_star"):
    first, then = (("lowers", "raises") if verdict_ == "helps_below_dp_star" else ("raises", "lowers"))
    return (f"{cell_name}: distillation {first} the error below Dp* ≈ {cross.dp_star:,.0f}{ci} and "
            f"{then} it above (CI excludes 0 on both sides{frac}).")
  few = [p.dp for p in points if p.n_pairs < MIN_PAIRS]
  if few:
    return (f"{cell_name}: cannot tell: fewer than {MIN_PAIRS} paired seeds at Dp = "
            f"{', '.join(f'{d:,}' for d in few)}.")
  sig = [f"{p.dp:,} ({_signed(p.mean_delta)})" for p in points if p.ci and (p.ci[0] > 0 or p.ci[1] < 0)]
  where = (f"the CI excludes 0 only at Dp = {', '.join(sig)}" if sig
           else "the CI includes 0 at every measured Dp")
  at = f"; the means cross at Dp ≈ {cross.dp_star:,.0f}{ci}" if cross else ""
  return f"{cell_name}: cannot tell: {where}{at}{frac}."


def cell_name(stage: str, model: str, params: int, df: int) -> str:
  task = "pretraining task" if stage == "pretrain" else f"downstream, Df = {df:,}"
  return f"{model} (M = {params:,}), {task}"


def paired_cells(rows: Sequence[Mapping[str, Any]], seed: int = 0) -> list[PairedCell]:
  """Paired differences and verdicts: fine-tune per (model, Df), then pretraining per model."""
  out = []
  for stage in ("finetune", "pretrain"):
    for (model, params, df), by_dp in sorted(paired_deltas(rows, stage).items(), key=lambda kv: (kv[0][1], kv[0][2])):
      dps, boot = _boot_means(by_dp, seed)
      points = paired_points(by_dp, boot)
      cross, fraction = crossing(dps, points, boot) if len(dps) > 1 else (None, None)
      v = verdict(points, cross)
      text = verdict_text(cell_name(stage, model, params, df), v, points, cross, fraction)
      out.append(PairedCell(stage, model, params, df, tuple(points), cross, fraction, v, text))
  return out


def paired_json(cells: Sequence[PairedCell]) -> list[dict[str, Any]]:
  """The "paired" section of fits.json (schema version 2)."""
  out = []
  for c in cells:
    cross = None
    if c.crossing is not None:
      cross = {"dp_star": c.crossing.dp_star, "ci": list(c.crossing.ci) if c.crossing.ci else None,
               "fraction_crossing": c.crossing.fraction_crossing}
    out.append({"model": c.model, "params": c.params, "df": c.df, "stage": c.stage,
                "points": [{"dp": p.dp, "n_pairs": p.n_pairs, "mean_delta": p.mean_delta,
                            "ci": list(p.ci) if p.ci else None} for p in c.points],
                "crossing": cross, "fraction_crossing": c.fraction_crossing,
                "verdict": c.verdict, "verdict_text": c.verdict_text})
  return out
