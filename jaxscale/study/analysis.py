"""From a study's records to its results: fitted laws, paired differences, verdicts, fits.json.

`analyze_records(config, rows)` returns a `StudyAnalysis` (dataclasses, no side effects);
`analyze_study(config, workdir)` reads records.jsonl, analyses it and writes fits.json. The report
(`jaxscale.report`) reads that result; nothing here knows about figures or pages.

What is computed
----------------
* Measured means: for every cell (stage, model, Dp, Df, arm) the mean error over its seeds with a
  95% bootstrap CI over seeds (`Measured`). Pretraining cells are evaluated on the
  pretraining task's test split, fine-tune cells on the downstream test split.
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
* Laws: the study's joint law per arm on the fine-tune records (`jaxscale.laws`), every seed a
  row. `config.study.law` names one form, or is "auto": then both forms of `LAW_FORMS` are fitted
  and backtested and the one with the lower mean backtest log-RMSE over both arms and every
  held-out input is reported (`choose_law` states the rule). Backtests (`backtests`) hold out the
  largest value of each input that has at least `MIN_BACKTEST_VALUES` values. The chosen form alone
  is bootstrapped; its boundary Dp* along Dp at every (M, Df) of the grid, its figures and tables
  use its fit. 1-D laws E(Dp) per (arm, model, Df).
* The law check (`law_checks`, per arm): R² (log) of the law against the seed-averaged cell means
  (`cell_r2`: a cell is (arm, M, Dp, Df); the law describes the expected error, and seed noise caps
  the R² of single runs, which is reported too) >= `R2_MIN`; the best start converged with more
  than one start in the best basin; every exponent in `EXPONENT_RANGE`; backtest log-RMSE <=
  `BACKTEST_MAX` with the largest Dp and with the largest M held out (an input that could not be
  backtested fails). A backtest fits every run below the held-out value and compares its
  predictions with the held-out cells' seed means, as the R² check does; the log-RMSE against
  the single runs is reported beside it. A law that fails is reported as failed: the report shows measured means
  instead of its curves, and lists each check with its value.

M is the parameter count as fitted: the `params` field of the fine-tune record (backbone and the
downstream head).

fits.json of a study is the content of `laws.analyze` (schema in docs/laws.md) plus::

  "schema_version": 2,
  "paired": [{"model", "params", "df" (0: pretraining task), "stage": "finetune" | "pretrain",
              "points": [{"dp", "n_pairs", "mean_delta", "ci": [lo, hi] | null}],
              "crossing": {"dp_star", "ci": [lo, hi] | null, "fraction_crossing"} | null,
              "fraction_crossing": share of resamples with a crossing | null,
              "verdict": one of VERDICTS, "verdict_text"}],
  "law_selection": {"mode": "auto" | "given", "rule", "reason", "chosen": FORM,
                    "backtest_max_log_rmse",
                    "forms": {FORM: {"formula", "chosen": bool, "mean_log_rmse": float | null,
                                     "arms": {ARM: {"r2_log_rows", "r2_log_cells", "n_rows",
                                                    "n_cells", "converged", "n_best_basin",
                                                    "params": {NAME: VALUE}}},
                                     "backtests": [{"arm", "input", "value", "n_test" (runs),
                                                    "n_points" (cells), "log_rmse" (cell means),
                                                    "log_rmse_rows" (single runs), "passed"}
                                                   | {..., "error"}]}}},
  "law_check": {ARM: {"passed", "reasons": [TEXT], "r2_log_cells", "r2_log_rows",
                      "exponent_range": [LO, HI],
                      "checks": [{"check", "value", "rule", "passed", "reason"}]}},
  "boundaries": [{"M", "Df", "roots", "boot_crossing_frac", "verdict", "text", "sign_below"}],
  "backtests": `laws.validate.backtest` output of the chosen form, "exponents": [{"arm", "model", "df", "alpha",
  "E_inf", "r2_log"}]
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.stats
from ml_collections import ConfigDict

from jaxscale import laws
from jaxscale.errors import JaxscaleError
from jaxscale.laws import fit as fit_lib
from jaxscale.study import records

logger = logging.getLogger("jaxscale")

SCHEMA_VERSION = 2
INPUTS = {"Dp": "dp", "M": "params", "Df": "df"}
TARGET = "eval_error"
ERROR_FLOOR = 1e-3       # errors of exactly 0 are clipped up to this before taking logs
ARMS = {"false": "plain", "true": "distilled"}
LEVEL = 0.95
N_BOOT = 2000            # seed resamples for measured means and paired differences
MIN_PAIRS = 3            # pairs needed at every Dp before a verdict is stated
R2_MIN = 0.9             # a joint law with a lower R² (log) is reported as failed
AUTO = "auto"            # config.study.law: fit every form of LAW_FORMS, report the one chosen
LAW_FORMS = ("transfer_additive", "transfer_multiplicative")
BACKTEST_MAX = 0.15      # a law holds when each checked holdout's log-RMSE is at most this
CHECKED_HOLDOUTS = ("Dp", "M")   # inputs whose largest-value backtest the law check requires
MIN_BACKTEST_VALUES = 3  # an input is backtested only with at least this many distinct values
# Plausible exponents: below 0.01 a term changes by < 5% over a 100x span of its input (no
# measurable effect); above 2 it falls > 100x over a 10x span, a step inside the grid rather than a
# power law (fitted data, model and transfer exponents in the literature lie in 0.05-1).
EXPONENT_RANGE = (0.01, 2.0)
CELL_COLUMNS = ("distilled", "params", "dp", "df")
SELECTION_RULE = (
    "with config.study.law = 'auto' both transfer forms are fitted per arm and each is backtested "
    "(fit without the largest value of an input, predict the rows at it; every input with at "
    "least 3 values); the form with the lower mean log-RMSE over both arms and every held-out "
    "input is reported (ties: transfer_additive; no backtest possible: the higher mean R² (log) "
    "of the cell means)")
EXPONENTS = ("alpha", "beta", "gamma", "c", "c0", "c1")
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


@dataclasses.dataclass(frozen=True)
class ArmFit:
  """The joint law of one arm: best parameters, bootstrap samples (name -> [B]) and its check."""
  arm: str
  params: dict[str, float]
  boot: dict[str, np.ndarray] | None
  statistics: dict[str, Any]
  warnings: tuple[str, ...]
  failed: tuple[str, ...]   # why the law fails the checks; () when it passes
  checks: tuple[dict[str, Any], ...] = ()   # `law_checks`, each with its value and rule
  r2_cells: float | None = None   # R² (log) against the seed-averaged cell means


@dataclasses.dataclass(frozen=True)
class StudyAnalysis:
  """Everything a study's records support; `fits` is the fits.json content."""
  config: ConfigDict
  rows: tuple[dict[str, Any], ...]
  law: str
  formula: str
  arms: dict[str, ArmFit]
  measured: tuple[Measured, ...]
  paired: tuple[PairedCell, ...]
  fits: dict[str, Any]


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


def finetune_table(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
  """Named columns of the fine-tune records: dp, params, df, distilled, eval_error, model, seed."""
  ft = student_rows(rows, "finetune")
  cols = ("dp", "params", "df", "distilled", "eval_error", "model", "seed")
  return {c: np.asarray([r[c] for r in ft]) for c in cols}


# ----------------------------------------------------------------------------- measured means

def _seed_resamples(n: int, seed: int) -> np.ndarray:
  """int [N_BOOT, n]: indices of n seeds drawn with replacement, N_BOOT times."""
  return np.random.default_rng(seed).integers(0, n, size=(N_BOOT, n))


def _percentile_ci(samples: np.ndarray) -> tuple[float, float]:
  q = 100 * (1 - LEVEL) / 2
  lo, hi = np.percentile(samples, [q, 100 - q])
  return float(lo), float(hi)


def small_sample_ci(samples: np.ndarray, center: float, n: int) -> tuple[float, float]:
  """The percentile interval of bootstrap means `samples` [B] of n values, widened about `center`.

  A percentile bootstrap of a mean of n values is too narrow for small n: its spread is
  sqrt((n−1)/n) of the standard error and it uses normal instead of t quantiles (with 4 seeds a
  nominal 95% interval covers about 80%). Both sides are scaled by k = t_{n−1}/z · sqrt(n/(n−1)),
  which for normal data gives back the t interval and keeps the bootstrap's asymmetry otherwise.
  """
  lo, hi = _percentile_ci(samples)
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
  ci = _percentile_ci(same) if len(same) >= 2 else None
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


# ----------------------------------------------------------------------------- laws

def law_candidates(law: str) -> tuple[str, ...]:
  """The forms a study fits: both transfer forms for "auto", else the one form named."""
  if law == AUTO:
    return LAW_FORMS
  if law not in laws.names():
    raise JaxscaleError(f"config.study.law is '{law}'; use '{AUTO}' (fit {' and '.join(LAW_FORMS)} "
                        f"and report the one the backtests favour) or one of: {', '.join(laws.names())}")
  return (law,)


def _arm_mask(table: Mapping[str, np.ndarray], arm: str) -> np.ndarray:
  return table["distilled"].astype(bool) == (arm == "distilled")


def _law_inputs(t: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {name: np.asarray(t[col], np.float64) for name, col in INPUTS.items()}


def cell_means(table: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """One row per (arm, M, Dp, Df) cell, sorted: its columns (float64), the mean error over its
  seeds (each value clipped up to ERROR_FLOOR first, as the fit sees it) and n, the seeds averaged."""
  y = np.maximum(np.asarray(table[TARGET], np.float64), ERROR_FLOOR)
  points, means, counts = laws.validate.replicate_means({c: table[c] for c in CELL_COLUMNS}, y)
  return {**points, TARGET: means, "n": counts}


def r2_log(y: np.ndarray, pred: np.ndarray) -> float:
  """R² in log space: 1 − Σ(log y − log pred)² / Σ(log y − mean(log y))² over y, pred [n] (> 0);
  NaN when log y is constant."""
  ly, lp = np.log(np.asarray(y, np.float64)), np.log(np.asarray(pred, np.float64))
  ss_tot = float(np.sum((ly - ly.mean()) ** 2))
  return 1.0 - float(np.sum((ly - lp) ** 2)) / ss_tot if ss_tot > 0 else float("nan")


def cell_r2(law: str, params: Mapping[str, float], table: Mapping[str, np.ndarray]) -> tuple[float, int]:
  """(R² (log) of the law at `params` against the seed-averaged cell means of `table`, cells).

  The law describes the expected error of a cell; one run's error adds seed noise (SD up to 0.06
  per cell in the default study) that no law can explain, so the law is judged on the cell means.
  """
  cells = cell_means(table)
  pred = laws.predict(law, params, _law_inputs(cells))
  return r2_log(cells[TARGET], pred), len(cells[TARGET])


def backtest_inputs(table: Mapping[str, np.ndarray]) -> tuple[str, ...]:
  """Inputs with at least MIN_BACKTEST_VALUES distinct values: holding out the largest leaves at
  least two to fit (with one left, the law's term in that input is not identified)."""
  return tuple(n for n, c in INPUTS.items() if len(np.unique(table[c])) >= MIN_BACKTEST_VALUES)


def backtests(config: ConfigDict, table: Mapping[str, np.ndarray], law: str) -> dict[str, Any]:
  """Largest-value holdouts of each input with >= MIN_BACKTEST_VALUES values, per arm
  (`laws.validate.backtest`; each row gains "passed": log-RMSE <= BACKTEST_MAX)."""
  two_arms = len({bool(v) for v in table["distilled"]}) == 2
  out = laws.validate.backtest(table, law=law, inputs=INPUTS, target=TARGET,
                               split_by="distilled" if two_arms else None,
                               by=backtest_inputs(table), floor=ERROR_FLOOR, leave_one_out=False,
                               seed=int(config.seed), means=True)
  for r in out["rows"]:
    r["arm"] = _arm_name(r["group"], table)
    if r.get("error") is None:
      r["passed"] = r["log_rmse"] is not None and r["log_rmse"] <= BACKTEST_MAX
  return out


def _arm_name(key: str, table: Mapping[str, np.ndarray]) -> str:
  """The arm of a group key ("true"/"false"; "all" when the table holds one arm)."""
  return ARMS.get(key, "distilled" if bool(table["distilled"][0]) else "plain")


def _scores(bt: Mapping[str, Any]) -> dict[tuple[str, str], float]:
  """{(arm, input): log-RMSE} of the holdouts that ran."""
  return {(r["arm"], r["input"]): float(r["log_rmse"]) for r in bt["rows"]
          if r.get("error") is None and r.get("log_rmse") is not None}


def choose_law(scores: Mapping[str, Mapping[tuple[str, str], float]],
               r2_cells: Mapping[str, Mapping[str, float]]) -> tuple[str, dict[str, float | None], str]:
  """The form a study reports, by this rule:

  the form with the lowest mean backtest log-RMSE, the mean taken over both arms and every
  held-out input (largest Dp, largest M, largest Df where that input has >= 3 values) that ran for
  every form, so each form is scored on the same cases; ties go to the earlier form of
  `LAW_FORMS`. When no holdout ran (every input has fewer than 3 values) the form with the higher
  mean R² (log) of the cell means over the arms is chosen instead.

  scores: form -> {(arm, input): log-RMSE}; r2_cells: form -> {arm: R² of the cell means}.
  Returns (chosen form, {form: its mean log-RMSE or None}, the reason in words).
  """
  forms = list(scores)
  common = set.intersection(*(set(s) for s in scores.values())) if forms else set()
  means = {f: (float(np.mean([scores[f][k] for k in sorted(common)])) if common else None) for f in forms}
  if len(forms) == 1:
    return forms[0], means, "the law named by config.study.law (no selection)"
  if common:
    chosen = min(forms, key=lambda f: (means[f], forms.index(f)))
    others = ", ".join(f"{means[f]:.3f} for {f}" for f in forms if f != chosen)
    return chosen, means, (f"mean backtest log-RMSE {means[chosen]:.3f} against {others}, over "
                           f"{len(common)} held-out cases")
  r2 = {f: np.nanmean([v if v is not None else np.nan for v in r2_cells[f].values()]) for f in forms}
  chosen = max(forms, key=lambda f: (np.nan_to_num(r2[f], nan=-np.inf), -forms.index(f)))
  return chosen, means, ("no input has 3 values, so no backtest ran: the higher mean R² (log) of "
                         f"the cell means, {r2[chosen]:.3f}")


def law_checks(statistics: Mapping[str, Any], params: Mapping[str, float], r2_cells: float | None,
               holdouts: Mapping[str, float | None]) -> list[dict[str, Any]]:
  """The checks of one arm's joint law, each {"check", "value", "rule", "passed", "reason"}:

  * R² (log) of the seed-averaged cell means >= R2_MIN (`cell_r2`);
  * the best start converged, and more than one start ended in the best basin (`n_best_basin`:
    refined starts within 1e-6 of the best objective), so the optimum is not a lucky start;
  * every exponent (EXPONENTS present in `params`) in EXPONENT_RANGE;
  * backtest log-RMSE <= BACKTEST_MAX with the largest value of each of CHECKED_HOLDOUTS held out;
    holdouts: input -> its log-RMSE, or None when it could not be backtested (fewer than
    MIN_BACKTEST_VALUES values, or the fit failed): an untested extrapolation fails the check.
  """
  lo, hi = EXPONENT_RANGE
  out = []

  def add(check, value, rule, passed, reason):
    out.append({"check": check, "value": value, "rule": rule, "passed": bool(passed),
                "reason": None if passed else reason})

  ok = r2_cells is not None and r2_cells == r2_cells and r2_cells >= R2_MIN
  add("R² (log) of the cell means", r2_cells, f"≥ {R2_MIN}", ok,
      f"R² (log) of the cell means {r2_cells:.2f} < {R2_MIN}" if r2_cells is not None
      and r2_cells == r2_cells else "no R² of the cell means")
  conv = bool(statistics.get("converged", False))
  add("converged", conv, "the best start converged", conv, "the best fit did not converge")
  basin = statistics.get("n_best_basin")
  add("starts in the best basin", basin, "> 1", basin is not None and basin > 1,
      f"only {basin} start(s) reached the best objective")
  for name in (n for n in EXPONENTS if n in params):
    v = params[name]
    inside = v is not None and v == v and lo <= v <= hi
    add(f"exponent {name}", v, f"in [{lo:g}, {hi:g}]", inside,
        f"exponent {name} = {v:.3g} outside [{lo:g}, {hi:g}]" if v is not None else f"no exponent {name}")
  for name in CHECKED_HOLDOUTS:
    v = holdouts.get(name)
    add(f"backtest, largest {name} held out", v, f"log-RMSE ≤ {BACKTEST_MAX}",
        v is not None and v <= BACKTEST_MAX,
        f"backtest with the largest {name} held out: log-RMSE {v:.3f} > {BACKTEST_MAX}" if v is not None
        else f"the largest {name} was not backtested (fewer than {MIN_BACKTEST_VALUES} values or the fit failed)")
  return out


def law_check(statistics: Mapping[str, Any], params: Mapping[str, float], r2_cells: float | None = None,
              holdouts: Mapping[str, float | None] | None = None) -> tuple[str, ...]:
  """Why a fitted joint law fails `law_checks`; () if it passes. Without `r2_cells` the R² of
  the fit's rows is used; without `holdouts` the backtest checks are left out."""
  if r2_cells is None:
    r2_cells = statistics.get("r2_log")
  checks = law_checks(statistics, params, r2_cells, holdouts or {})
  if holdouts is None:
    checks = [c for c in checks if not c["check"].startswith("backtest")]
  return tuple(c["reason"] for c in checks if not c["passed"])


def _grid_points(table: Mapping[str, np.ndarray]) -> list[dict[str, float]]:
  """Every (M, Df) of the grid, the headline one (largest M, smallest Df) first."""
  ms = sorted({float(v) for v in table["params"]}, reverse=True)
  dfs = sorted({float(v) for v in table["df"]})
  return [{"M": m, "Df": df} for m in ms for df in dfs]


def fit_law(config: ConfigDict, table: Mapping[str, np.ndarray], law: str, bootstrap: int,
            boundaries: bool, progress: bool) -> laws.Analysis:
  """`laws.analyze` of one form per arm; with `boundaries`, its crossing along Dp at every (M, Df)."""
  two_arms = len({bool(v) for v in table["distilled"]}) == 2
  cross = boundaries and two_arms
  points = _grid_points(table)
  return laws.analyze(table, law=law, inputs=INPUTS, target=TARGET,
                      split_by="distilled" if two_arms else None, bootstrap=bootstrap,
                      boundary="Dp" if cross else None, at=points[0] if cross else None,
                      boundary_at=points[1:] if cross else (), floor=ERROR_FLOOR,
                      seed=int(config.seed), progress=progress)


def _form_summary(law: str, result: laws.Analysis, table: Mapping[str, np.ndarray],
                  bt: Mapping[str, Any]) -> dict[str, Any]:
  """One form's entry of "law_selection": per arm R² (rows, cell means), backtest rows."""
  arms = {}
  for key, group in result.content["groups"].items():
    arm = _arm_name(key, table)
    params = {n: p["value"] for n, p in group["params"].items()}
    r2c, n_cells = cell_r2(law, params, table_select(table, _arm_mask(table, arm)))
    st = group["statistics"]
    arms[arm] = {"r2_log_rows": st.get("r2_log"), "r2_log_cells": r2c, "n_rows": st.get("n"),
                 "n_cells": n_cells, "converged": st.get("converged"),
                 "n_best_basin": st.get("n_best_basin"), "params": params}
  rows = [{k: r.get(k) for k in ("arm", "input", "value", "n_test", "n_points", "log_rmse", "log_rmse_rows",
                                 "passed", "error")
           if k in r} for r in bt["rows"]]
  return {"formula": laws.get(law).formula, "arms": arms, "backtests": rows}


def table_select(table: Mapping[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
  return {k: np.asarray(v)[mask] for k, v in table.items()}


def select_law(config: ConfigDict, table: Mapping[str, np.ndarray], progress: bool
               ) -> tuple[str, dict[str, Any], dict[str, dict[str, Any]]]:
  """Fits every candidate form (no bootstrap) and backtests it; chooses one by `choose_law`.

  Returns (chosen form, the "law_selection" block of fits.json, {form: its backtests}).
  """
  forms = law_candidates(str(config.study.law))
  summaries, bts = {}, {}
  for law in forms:
    bts[law] = backtests(config, table, law)
    summaries[law] = _form_summary(law, fit_law(config, table, law, 0, False, progress), table, bts[law])
  r2c = {f: {a: s["r2_log_cells"] for a, s in summaries[f]["arms"].items()} for f in forms}
  chosen, means, why = choose_law({f: _scores(bts[f]) for f in forms}, r2c)
  for f in forms:
    summaries[f].update(mean_log_rmse=means[f], chosen=f == chosen)
  block = {"mode": "auto" if len(forms) > 1 else "given", "rule": SELECTION_RULE,
           "backtest_max_log_rmse": BACKTEST_MAX, "chosen": chosen, "reason": why, "forms": summaries}
  return chosen, block, bts


def fit_arms(config: ConfigDict, table: Mapping[str, np.ndarray], law: str,
             selection: Mapping[str, Any], progress: bool) -> tuple[dict[str, Any], dict[str, ArmFit]]:
  """The chosen joint law per arm (with its bootstrap) and its crossing along Dp at every (M, Df)
  of the grid, each solved once; every arm checked by `law_checks`.

  Returns (fits.json content of `laws.analyze` with "boundaries" added, {arm: ArmFit}).
  """
  result = fit_law(config, table, law, int(config.study.bootstrap), True, progress)
  content = dict(result.content)
  content["boundaries"] = [_boundary_row(b) for b in
                           ([result.boundary] if result.boundary else []) + list(result.boundaries)]
  summary = selection["forms"][law]
  arms = {}
  for key, group in content["groups"].items():
    arm = _arm_name(key, table)
    params = {n: p["value"] for n, p in group["params"].items()}
    r2c = cell_r2(law, params, table_select(table, _arm_mask(table, arm)))[0]
    holdouts = {r["input"]: r.get("log_rmse") for r in summary["backtests"]
                if r["arm"] == arm and r.get("error") is None}
    checks = law_checks(group["statistics"], params, r2c, holdouts)
    boot = result.groups[key].bootstrap
    arms[arm] = ArmFit(arm, params, None if boot is None else dict(boot.params), group["statistics"],
                       tuple(group["warnings"]), tuple(c["reason"] for c in checks if not c["passed"]),
                       tuple(checks), r2c)
  return content, arms


def _boundary_row(b: Mapping[str, Any]) -> dict[str, Any]:
  """The fitted laws' crossing at one (M, Df): what the report's law table shows."""
  return {"M": b["at"]["M"], "Df": b["at"]["Df"], "roots": b["roots"],
          "boot_crossing_frac": b.get("boot_crossing_frac"), "verdict": b.get("verdict"),
          "text": b.get("text"),
          "sign_below": {1: "distillation helps", -1: "distillation hurts", 0: "equal"}[b["sign_below"]]}


def exponents(config: ConfigDict, table: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
  """1-D laws E(Dp) = E_inf + A·Dp^-alpha per (arm, model, Df) with at least 4 distinct Dp."""
  out = []
  keys = sorted({(bool(d), str(m), int(p), int(f)) for d, m, p, f in
                 zip(table["distilled"], table["model"], table["params"], table["df"])},
                key=lambda k: (k[0], k[2], k[3]))
  for distilled, model, params, df in keys:
    mask = ((table["distilled"].astype(bool) == distilled) & (table["params"] == params)
            & (table["df"] == df))
    dps = table["dp"][mask].astype(float)
    if len(np.unique(dps)) < 4:  # 3 parameters need at least 4 distinct Dp
      continue
    y = np.maximum(table[TARGET][mask].astype(float), ERROR_FLOOR)
    arm = "distilled" if distilled else "plain"
    try:
      r = fit_lib.fit("power", {"x": dps}, y, max_starts=256, seed=int(config.seed))
    except JaxscaleError as e:
      logger.warning("1-D fit %s %s Df=%d skipped: %s", arm, model, df, e)
      continue
    out.append({"arm": arm, "model": model, "df": df, "alpha": r.params["alpha"],
                "E_inf": r.params["E_inf"], "r2_log": r.r2_log})
  return out


# ----------------------------------------------------------------------------- the study

def analyze_records(config: ConfigDict, rows: Sequence[Mapping[str, Any]],
                    progress: bool = True) -> StudyAnalysis:
  """Everything the records of a study support (see the module docstring)."""
  # The smoothed control (arm "smoothed", distilled False) is not analysed here yet: its rows must
  # not join the plain arm's means, pairs and law.
  rows = [r for r in rows if r.get("arm") != "smoothed"]
  table = finetune_table(rows)
  forms = [laws.get(f) for f in law_candidates(str(config.study.law))]
  need = max(len(f.params) for f in forms)
  if len(table["dp"]) < need + 1:
    raise JaxscaleError(f"only {len(table['dp'])} fine-tune records; the law "
                        f"'{'/'.join(f.name for f in forms)}' needs more than {need} per arm: run "
                        f"more cells or use a smaller law")
  law, selection, bts = select_law(config, table, progress)
  content, arms = fit_arms(config, table, law, selection, progress)
  measured = measured_means(rows, int(config.seed))
  paired = paired_cells(rows, int(config.seed))
  content.update(
      schema_version=SCHEMA_VERSION, paired=paired_json(paired), law_selection=selection,
      law_check={a.arm: {"passed": not a.failed, "reasons": list(a.failed),
                         "r2_log_cells": a.r2_cells, "r2_log_rows": a.statistics.get("r2_log"),
                         "exponent_range": list(EXPONENT_RANGE), "checks": list(a.checks)}
                 for a in arms.values()},
      backtests=bts[law], exponents=exponents(config, table))
  form = laws.get(law)
  return StudyAnalysis(config=config, rows=tuple(rows), law=form.name, formula=form.formula,
                       arms=arms, measured=tuple(measured), paired=tuple(paired),
                       fits=laws.api.sanitize(content))


def analyze_study(config: ConfigDict, workdir: str, progress: bool = True) -> StudyAnalysis:
  """Analyses the study in `workdir` (its records.jsonl) and writes its fits.json."""
  path = os.path.join(workdir, "records.jsonl")
  rows = records.read(path)
  if not student_rows(rows, "finetune"):
    raise JaxscaleError(f"{path} has no fine-tune records; run `jaxscale study` on this workdir first")
  result = analyze_records(config, rows, progress=progress)
  # fits.json is derived from the records, so it is rebuilt (atomically) every time.
  laws.write_fits(os.path.join(workdir, "fits.json"), result.fits, force=True)
  return result
