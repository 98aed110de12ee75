"""Paired differences of the study's arms and the verdicts they support (numpy and scipy only).

* Measured means (`Measured`): for every cell (stage, model, Dp, Df, arm) the mean error over its
  seeds with a 95% bootstrap CI over seeds (widened for small samples, `small_sample_ci`).
  Pretraining cells are evaluated on the pretraining task's test split, fine-tune cells on the
  downstream test split.
* Comparisons (`COMPARISONS`, those whose arms the study has): distilled vs plain (what
  distillation does) and distilled vs smoothed (what the teacher's knowledge adds beyond soft
  targets against a uniform teacher). ΔE = E_baseline − E_treatment of the same (model, Dp, Df,
  seed): positive means the treatment lowers the error. Fine-tune cells give one `PairedCell` per
  (comparison, model, Df); pretraining records (the teacher left out) one per (comparison, model)
  with df = 0.
* The decision at a point (`judge_point`): a t-interval of the mean ΔE over the seed pairs; then
  "helps" (CI above 0), "hurts" (CI below 0), "no practical difference" (CI inside
  [−margin, +margin]: the CI-inclusion rule, the same as two one-sided tests at alpha / 2) or
  "undecided" (also below MIN_PAIRS pairs), and for an undecided point the more pairs its observed
  spread says it needs (`pairs_needed`).
* The levels (`study_levels`; `judge_points` applies both, and is what the report's path and the
  simulator in benchmarks/sim_decisions.py call): all the study's points as one family
  (`FamilyRule`: the design's points, its looks), Benjamini-Hochberg at false discovery rate
  FAMILY_ALPHA / looks over "differ" (helps / hurts) and over "differ by more than the margin" (no
  practical difference); with nothing decided, Bonferroni's FAMILY_ALPHA / points.
* The cell (`judge_cell`): its decided points in Dp order read one verdict (helps / hurts / no
  practical difference, over the decided Dp range), or helps then hurts-or-no-difference
  ("helps_below_dp_star"), or hurts then helps-or-no-difference ("hurts_below_dp_star"); anything
  else "cannot_tell"; a cell with more than MAX_DIVERGED_SHARE of its runs diverged "cannot be
  judged". Only a crossing verdict gets a Dp*: where the mean ΔE changes sign (log-linear in Dp)
  between its last point of the first verdict and its first of the second, with the percentile
  CI of the same crossing over seed resamples.

M is the parameter count as fitted: the `params` field of the fine-tune record (backbone and the
downstream head).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.stats

from jaxscale.laws.uncertainty import percentile_ci

TARGET = "eval_error"
LEVEL = 0.95
N_BOOT = 2000            # seed resamples for measured means and paired differences
MIN_PAIRS = 3            # pairs a point needs before it can be decided
FAMILY_ALPHA = 0.05      # the study's false discovery rate (with no effect: the chance of any false claim)
DEFAULT_MARGIN = 0.03    # config.study.margin's default (the reason is in configs/default.py)
MAX_DIVERGED_SHARE = 0.25  # a cell with more of its runs diverged "cannot be judged"
MAX_PAIRS_NEEDED = 1000  # pairs-needed estimates stop here ("over 1000")
T_TABLE = 4096           # t quantiles up to this many degrees of freedom are tabulated per level
# (treatment, baseline): ΔE = E_baseline − E_treatment, > 0 when the treatment lowers the error.
COMPARISONS = (("distilled", "plain"), ("distilled", "smoothed"))
POINT_VERDICTS = ("helps", "hurts", "no_practical_difference", "undecided")
VERDICTS = ("helps", "hurts", "no_practical_difference", "helps_below_dp_star", "hurts_below_dp_star",
            "cannot_tell", "cannot_be_judged")


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
  """ΔE at one Dp: mean over n_pairs seeds, its CI (None below 2 pairs), the per-seed values, the
  point's verdict (POINT_VERDICTS) and, when undecided, the more pairs it needs (None: unknown)."""
  dp: int
  n_pairs: int
  mean_delta: float
  ci: tuple[float, float] | None
  deltas: tuple[float, ...]
  verdict: str = "undecided"
  pairs_needed: int | None = None


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
  comparison: str = "distilled_vs_plain"   # "<treatment>_vs_<baseline>"
  decided: tuple[int, ...] = ()            # the Dp of the decided points
  n_runs: int = 0                          # records of the cell's two arms, diverged ones included
  n_diverged: int = 0
  levels: "Levels | None" = None           # the study-wide levels its points were judged at


# ----------------------------------------------------------------------------- records

def is_teacher(row: Mapping[str, Any]) -> bool:
  """The teacher's record (stage "pretrain" too) is told apart by its kind or cell id."""
  return row.get("kind") == "teacher" or str(row.get("cell_id", "")).startswith("teacher-")


def arm_of(row: Mapping[str, Any]) -> str:
  """The study arm of a record: its "arm" field (older records: from "distilled")."""
  return row.get("arm") or ("distilled" if row.get("distilled") else "plain")


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

def comparisons(arms: Sequence[str]) -> tuple[tuple[str, str], ...]:
  """The (treatment, baseline) arm pairs a study with `arms` compares (see COMPARISONS)."""
  return tuple((t, b) for t, b in COMPARISONS if t in arms and b in arms)


def paired_deltas(rows: Sequence[Mapping[str, Any]], stage: str, treatment: str = "distilled",
                  baseline: str = "plain") -> dict[tuple, dict[int, dict]]:
  """{(model, params, df): {dp: {seed: E_baseline − E_treatment}}} over the seeds present in both
  arms (the default: E_plain − E_distilled)."""
  by_arm: dict[tuple, float] = {}
  params = fitted_params(rows)
  for r in student_rows(rows, stage):
    key = (r["model"], int(r.get("df") or 0), int(r["dp"]), int(r["seed"]), arm_of(r))
    by_arm[key] = float(r[TARGET])
  out: dict[tuple, dict[int, dict]] = {}
  for (model, df, dp, seed, arm), e in by_arm.items():
    other = by_arm.get((model, df, dp, seed, treatment))
    if arm == baseline and other is not None:
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


# ----------------------------------------------------------------------------- the decision rule

def point_alpha(n_points: int, rounds: int = 1) -> float:
  """The Bonferroni level FAMILY_ALPHA / (points x rounds of looks): every point's level when
  nothing is decided, and the floor of the study-wide rule (`study_levels`)."""
  return FAMILY_ALPHA / (max(int(n_points), 1) * max(int(rounds), 1))


@dataclasses.dataclass(frozen=True)
class FamilyRule:
  """What a study's points are judged as one family by: `points`, the points its design judges
  (`family_size`, fixed before any result); `rounds`, the looks the error rate is spent over (1, or
  `study.max_rounds` when adaptive)."""
  points: int
  rounds: int = 1

  @property
  def q(self) -> float:
    """The false discovery rate each look is held to: FAMILY_ALPHA / rounds."""
    return FAMILY_ALPHA / max(int(self.rounds), 1)


@dataclasses.dataclass(frozen=True)
class Levels:
  """The error rates a study's intervals are built at, from `study_levels`: `diff` for "helps" and
  "hurts" (the interval excludes 0), `equiv` for "no practical difference" (the interval inside
  ±margin), and how many points each family decided."""
  diff: float
  equiv: float
  n_diff: int = 0
  n_equiv: int = 0


def point_pvalues(deltas: Sequence[float], margin: float) -> tuple[float, float]:
  """(p_diff, p_equiv) of one point's per-seed differences d [n], n >= 2; t = mean/se, se = s/√n.

  p_diff = 2·P(T_{n−1} > |t|): the t-interval at level 1 − α excludes 0 exactly when p_diff < α.
  p_equiv = 2·P(T_{n−1} > (margin − |mean|)/se): the interval at 1 − α lies inside ±margin exactly
  when p_equiv <= α (two one-sided tests at α/2). Both 1 with fewer than MIN_PAIRS pairs, and a
  spread of 0 gives 0 or 1 by the sign of the statistic."""
  d = np.asarray(deltas, np.float64)
  if len(d) < MIN_PAIRS:
    return 1.0, 1.0
  mean, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))
  if se == 0.0:
    return (0.0 if mean != 0.0 else 1.0), (0.0 if abs(mean) <= margin else 1.0)
  df = len(d) - 1
  return (float(2 * scipy.stats.t.sf(abs(mean) / se, df)),
          float(min(1.0, 2 * scipy.stats.t.sf((margin - abs(mean)) / se, df))))


def bh_level(pvalues: Sequence[float], m: int, q: float) -> tuple[float, int]:
  """Benjamini-Hochberg at false discovery rate q over a family of m hypotheses (m >= the p-values
  given; the ones not yet measured count as not rejected): (q·k/m, k), k the largest with
  p_(k) <= q·k/m; k = 0 gives the Bonferroni level q/m. Every p <= the returned level is rejected."""
  p = np.sort(np.asarray(pvalues, np.float64))
  m = max(int(m), len(p), 1)
  ok = np.nonzero(p <= q * np.arange(1, len(p) + 1) / m)[0]
  k = int(ok[-1]) + 1 if len(ok) else 0
  return q * max(k, 1) / m, k


def study_levels(points: Sequence[Sequence[float]], margin: float, rule: FamilyRule) -> Levels:
  """THE study-wide rule: the levels every point of a study is judged at, from all its points'
  per-seed differences at once (`judge_points` and benchmarks/sim_decisions.py call it).

  Two families of rule.points hypotheses each, both controlled by Benjamini-Hochberg at false
  discovery rate q = FAMILY_ALPHA / rule.rounds per look: "the arms differ" (p_diff; claims helps /
  hurts) and "the arms differ by more than the margin" (p_equiv; claims no practical difference).
  Why the FDR: with no effect anywhere every helps / hurts claim is false, and then BH's FDR is
  the chance of any false claim, so a no-effect study makes one with probability <= q (as
  family-wise Bonferroni would); with real effects BH rejects at q·k/m instead of q/m, so the
  points a study can decide are not decided away by the points it judges. Valid for independent
  points and, for one-sided tests, positively dependent ones (Benjamini & Yekutieli 2001); the
  intervals at the chosen levels are the false-coverage-rate adjusted intervals of Benjamini &
  Yekutieli (2005). Across looks, q is split evenly (Bonferroni over rounds)."""
  pv = [point_pvalues(d, margin) for d in points]
  diff, n_diff = bh_level([p[0] for p in pv], rule.points, rule.q)
  # A point that helps or hurts is not also a candidate for "no practical difference".
  equiv, n_equiv = bh_level([p[1] for p in pv if p[0] >= diff], rule.points, rule.q)
  return Levels(diff, equiv, n_diff, n_equiv)


@functools.lru_cache(maxsize=32)
def _t_table(alpha: float) -> np.ndarray:
  """t_{1−alpha/2, df} at index df = 1 .. T_TABLE (index 0: inf), computed once per alpha."""
  return np.concatenate([[np.inf], scipy.stats.t.ppf(1 - alpha / 2, np.arange(1, T_TABLE + 1))])


def t_quantile(alpha: float, df: np.ndarray | int) -> np.ndarray:
  """t_{1−alpha/2, df} (two-sided critical value), df >= 1."""
  df = np.asarray(df)
  if df.size and df.max() <= T_TABLE:
    return _t_table(float(alpha))[df]
  return scipy.stats.t.ppf(1 - alpha / 2, df)


def family_size(arms: Sequence[str], models: Sequence[str], dps: Sequence[int], dfs: Sequence[int]) -> int:
  """The points a study judges, fixed by its design: comparisons x models x Dp x (Df + the
  pretraining task)."""
  return len(comparisons(tuple(arms))) * len(models) * len(dps) * (len(dfs) + 1)


def t_interval(deltas: Sequence[float], alpha: float) -> tuple[float, float] | None:
  """mean ± t_{1−alpha/2, n−1}·s/√n of the per-seed differences [n]; None below 2 pairs."""
  d = np.asarray(deltas, np.float64)
  if len(d) < 2:
    return None
  h = float(t_quantile(alpha, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
  return float(d.mean() - h), float(d.mean() + h)


def point_verdict(ci: tuple[float, float] | None, n_pairs: int, margin: float,
                  ci_equiv: tuple[float, float] | None = None) -> str:
  """The rule at one point, in this order: "helps" (CI above 0), "hurts" (CI below 0), "no
  practical difference" (`ci_equiv`, the interval at the equivalence level, by default `ci`,
  inside [−margin, +margin], ends included: the CI-inclusion rule, which at level 1 − 2α is the two
  one-sided tests at α), else "undecided" (also below MIN_PAIRS)."""
  if ci is None or n_pairs < MIN_PAIRS:
    return "undecided"
  if ci[0] > 0:
    return "helps"
  if ci[1] < 0:
    return "hurts"
  ce = ci if ci_equiv is None else ci_equiv
  if -margin <= ce[0] and ce[1] <= margin:
    return "no_practical_difference"
  return "undecided"


def pairs_needed(mean: float, sd: float, n: int, margin: float, alpha: float,
                 alpha_equiv: float | None = None) -> int | None:
  """More pairs the observed mean and spread say a point needs before its interval decides it:
  the smallest N > n with |mean| > h(N, alpha) or |mean| + h(N, alpha_equiv) <= margin,
  h(N, a) = t_{1−a/2, N−1}·sd/√N (alpha_equiv defaults to alpha); None when no N up to
  n + MAX_PAIRS_NEEDED does (or n < 2)."""
  if n < 2 or not np.isfinite(sd):
    return None
  ns = np.arange(max(n + 1, MIN_PAIRS), n + MAX_PAIRS_NEEDED + 1)
  h = t_quantile(alpha, ns - 1) * sd / np.sqrt(ns)
  he = h if alpha_equiv is None else t_quantile(alpha_equiv, ns - 1) * sd / np.sqrt(ns)
  ok = (abs(mean) > h) | (abs(mean) + he <= margin)
  return int(ns[np.argmax(ok)] - n) if ok.any() else None


def judge_point(deltas: Sequence[float], margin: float, alpha: float, alpha_equiv: float | None = None
                ) -> tuple[float, tuple[float, float] | None, str, int | None]:
  """THE decision at one point from its per-seed differences, at the levels `study_levels` gives
  (alpha for helps / hurts, alpha_equiv, default alpha, for no practical difference): (mean, CI,
  verdict, more pairs needed or None). The CI is the one at the level of the verdict it shows: at
  alpha_equiv for "no practical difference", else at alpha."""
  d = np.asarray(deltas, np.float64)
  ci = t_interval(d, alpha)
  ce = ci if alpha_equiv is None or alpha_equiv == alpha else t_interval(d, alpha_equiv)
  v = point_verdict(ci, len(d), margin, ce)
  need = None
  if v == "undecided":
    need = (pairs_needed(float(d.mean()), float(d.std(ddof=1)), len(d), margin, alpha, alpha_equiv)
            if len(d) >= 2 else None)
    if len(d) < MIN_PAIRS:
      need = max(need or 0, MIN_PAIRS - len(d))
  return (float(d.mean()) if len(d) else float("nan"), ce if v == "no_practical_difference" else ci,
          v, need)


def judge_points(points: Sequence[Sequence[float]], margin: float, rule: FamilyRule
                 ) -> tuple[Levels, list[tuple[float, tuple[float, float] | None, str, int | None]]]:
  """Every point of a study at once: the study-wide levels (`study_levels`) and each point's
  `judge_point` at them, in the order given. The report and the simulator call this."""
  levels = study_levels(points, margin, rule)
  return levels, [judge_point(d, margin, levels.diff, levels.equiv) for d in points]


def judge_cell(verdicts_by_dp: Sequence[str]) -> tuple[str, tuple[int, ...]]:
  """THE cell rule over its points' verdicts in Dp order: (cell verdict, indices of the decided
  points). The decided points, in Dp order, read one verdict throughout ("helps", "hurts",
  "no_practical_difference"), or helps and then only hurts or no practical difference
  ("helps_below_dp_star"), or hurts and then only helps or no practical difference
  ("hurts_below_dp_star"): a crossing thus has decided points on both sides. No decided point, or
  any other order, is "cannot_tell"."""
  decided = tuple(i for i, v in enumerate(verdicts_by_dp) if v != "undecided")
  seq = [verdicts_by_dp[i] for i in decided]
  if not seq:
    return "cannot_tell", decided
  first = seq[0]
  if all(v == first for v in seq):
    return first, decided
  later = seq[next(j for j, v in enumerate(seq) if v != first):]
  other = {"helps": "hurts", "hurts": "helps"}.get(first)
  if other and all(v in (other, "no_practical_difference") for v in later):
    return f"{first}_below_dp_star", decided
  return "cannot_tell", decided


# ----------------------------------------------------------------------------- the cells

def _cell_crossing(dps: Sequence[int], points: Sequence[PairedPoint], boot: np.ndarray
                   ) -> tuple[Crossing | None, float | None]:
  """The crossing of a crossing verdict: the means' sign change between the last point of the
  first verdict and the first of the second (None when the means do not change sign there)."""
  first = points[0].verdict if points[0].verdict != "undecided" else next(
      p.verdict for p in points if p.verdict != "undecided")
  i = max(j for j, p in enumerate(points) if p.verdict == first)
  k = min(j for j, p in enumerate(points) if p.verdict not in ("undecided", first))
  cross, fraction = crossing(dps[i:k + 1], points[i:k + 1], boot[:, i:k + 1])
  return cross, fraction


def _count(rows: Sequence[Mapping[str, Any]], stage: str, model: str, df: int, arms: tuple[str, str]) -> int:
  """Records of one cell's two arms."""
  return sum(1 for r in rows if r.get("stage") == stage and r["model"] == model and not is_teacher(r)
             and int(r.get("df") or 0) == df and arm_of(r) in arms)


def paired_cells(rows: Sequence[Mapping[str, Any]], seed: int = 0, margin: float = DEFAULT_MARGIN,
                 rule: FamilyRule | None = None, arms: Sequence[str] = ("plain", "distilled", "smoothed"),
                 diverged: Sequence[Mapping[str, Any]] = ()) -> list[PairedCell]:
  """Paired differences and verdicts per comparison of `comparisons(arms)`: fine-tune cells per
  (model, Df), then the pretraining task per model, every point judged by `judge_points` as one
  family (`rule`; default: the points found, one look). `diverged`: the left-out records of
  diverged runs. The levels used: `levels_of(cells)`."""
  found = [(t, b, stage, key, by_dp) for t, b in comparisons(arms) for stage in ("finetune", "pretrain")
           for key, by_dp in sorted(paired_deltas(rows, stage, t, b).items(),
                                    key=lambda kv: (kv[0][1], kv[0][2]))]
  if rule is None:
    rule = FamilyRule(sum(len(f[4]) for f in found))
  unjudged = []
  for treatment, baseline, stage, (model, params, df), by_dp in found:
    n_div = _count(diverged, stage, model, df, (treatment, baseline))
    n_runs = _count(rows, stage, model, df, (treatment, baseline)) + n_div
    unjudged.append((n_runs, n_div, n_div > MAX_DIVERGED_SHARE * n_runs))
  # A cell that cannot be judged adds no claim, so its points stay out of the p-values (not the family).
  deltas = [tuple(by_dp[dp][s] for s in sorted(by_dp[dp])) for f, u in zip(found, unjudged) if not u[2]
            for by_dp in (f[4],) for dp in sorted(by_dp)]
  levels = study_levels(deltas, margin, rule)
  out = []
  for (treatment, baseline, stage, (model, params, df), by_dp), (n_runs, n_div, bad) in zip(found, unjudged):
    out.append(_cell(stage, model, params, df, by_dp, (treatment, baseline), margin, levels, seed,
                     n_runs, n_div, bad))
  return out


def levels_of(cells: Sequence[PairedCell]) -> Levels | None:
  """The levels the cells of one `paired_cells` call were judged at (None without cells)."""
  return cells[0].levels if cells else None


def _cell(stage, model, params, df, by_dp, pair, margin, levels, seed, n_runs, n_div, unjudged) -> PairedCell:
  dps, boot = _boot_means(by_dp, seed)
  points = []
  for dp in dps:
    deltas = tuple(by_dp[dp][s] for s in sorted(by_dp[dp]))
    mean, ci, v, need = judge_point(deltas, margin, levels.diff, levels.equiv)
    points.append(PairedPoint(dp, len(deltas), mean, ci, deltas, v, need))
  v, decided = judge_cell([p.verdict for p in points])
  if unjudged:
    v = "cannot_be_judged"
  cross, fraction = _cell_crossing(dps, points, boot) if v.endswith("below_dp_star") else (None, None)
  name = cell_name(stage, model, params, df)
  text = verdict_text(name, v, points, cross, pair, margin, n_div, n_runs)
  return PairedCell(stage, model, params, df, tuple(points), cross, fraction, v, text,
                    comparison=f"{pair[0]}_vs_{pair[1]}", decided=tuple(dps[i] for i in decided),
                    n_runs=n_runs, n_diverged=n_div, levels=levels)


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
  """The crossing of the measured mean ΔE with its bootstrap CI (percentile, over the resamples
  that cross the same way), and the share of resamples that cross (both None when no Dp has two
  pairs: resampling one seed says nothing)."""
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


# ----------------------------------------------------------------------------- words

EFFECT = {"distilled_vs_plain": "distillation (distilled vs plain)",
          "distilled_vs_smoothed": "the teacher's knowledge (distilled vs smoothed)"}
POINT_WORDS = {"helps": "helps", "hurts": "hurts", "no_practical_difference": "no practical difference",
               "undecided": "undecided"}


def _dps(values: Sequence[int]) -> str:
  return ", ".join(f"{d:,}" for d in values)


def _where(points: Sequence[PairedPoint]) -> str:
  decided = [p.dp for p in points if p.verdict != "undecided"]
  if len(decided) == len(points):
    return "decided at every measured Dp"
  open_ = [p.dp for p in points if p.verdict == "undecided"]
  return (f"decided at Dp = {_dps(decided)}, undecided at Dp = {_dps(open_)}" if decided
          else f"undecided at every Dp ({_dps(open_)})")


def _need(points: Sequence[PairedPoint]) -> str:
  need = [(p.dp, p.pairs_needed) for p in points if p.verdict == "undecided"]
  if not need:
    return ""
  parts = [f"{n} at Dp = {dp:,}" if n is not None else f"over {MAX_PAIRS_NEEDED} at Dp = {dp:,}"
           for dp, n in need]
  return f"; more seed pairs needed to decide: {', '.join(parts)}"


def verdict_text(cell_name: str, verdict_: str, points: Sequence[PairedPoint], cross: Crossing | None,
                 pair: tuple[str, str] = ("distilled", "plain"), margin: float = DEFAULT_MARGIN,
                 n_diverged: int = 0, n_runs: int = 0) -> str:
  """One sentence a reader can check against the table of paired differences."""
  effect = EFFECT.get(f"{pair[0]}_vs_{pair[1]}", f"{pair[0]} vs {pair[1]}")
  head = f"{cell_name}, {effect}"
  if verdict_ == "cannot_be_judged":
    return (f"{head}: cannot be judged: {n_diverged} of its {n_runs} runs diverged (more than "
            f"{MAX_DIVERGED_SHARE:.0%}).")
  where, need = _where(points), _need(points)
  if verdict_ in ("helps", "hurts"):
    return f"{head}: {'lowers' if verdict_ == 'helps' else 'raises'} the error ({where}){need}."
  if verdict_ == "no_practical_difference":
    return f"{head}: no practical difference (within ±{margin:g}; {where}){need}."
  if verdict_.endswith("below_dp_star"):
    first = "lowers" if verdict_.startswith("helps") else "raises"
    later = sorted({POINT_WORDS[p.verdict] for p in points if p.verdict not in ("undecided", verdict_[:5])})
    at = (f" below Dp* ≈ {cross.dp_star:,.0f}" + (f" (95% CI {cross.ci[0]:,.0f} to {cross.ci[1]:,.0f})"
                                                   if cross.ci else "")) if cross else ""
    return f"{head}: {first} the error{at}, then {' / '.join(later)} at larger Dp ({where}){need}."
  few = [p.dp for p in points if p.n_pairs < MIN_PAIRS]
  if few and all(p.verdict == "undecided" for p in points):
    return f"{head}: cannot tell: fewer than {MIN_PAIRS} paired seeds at Dp = {_dps(few)}{need}."
  seq = ", ".join(f"{p.dp:,}: {POINT_WORDS[p.verdict]}" for p in points)
  return f"{head}: cannot tell ({seq}){need}."


def cell_name(stage: str, model: str, params: int, df: int) -> str:
  task = "pretraining task" if stage == "pretrain" else f"downstream, Df = {df:,}"
  return f"{model} (M = {params:,}), {task}"


def grid_need(cells: Sequence[PairedCell]) -> dict[str, Any]:
  """The more pairs every undecided point needs, summed: {"points", "pairs", "unknown"} (points
  whose need is over MAX_PAIRS_NEEDED or cannot be estimated are counted in "unknown")."""
  need = [p.pairs_needed for c in cells if c.verdict != "cannot_be_judged" for p in c.points
          if p.verdict == "undecided"]
  return {"points": len(need), "pairs": int(sum(n for n in need if n is not None)),
          "unknown": sum(1 for n in need if n is None)}


def paired_json(cells: Sequence[PairedCell]) -> list[dict[str, Any]]:
  """The "paired" section of fits.json."""
  out = []
  for c in cells:
    cross = None
    if c.crossing is not None:
      cross = {"dp_star": c.crossing.dp_star, "ci": list(c.crossing.ci) if c.crossing.ci else None,
               "fraction_crossing": c.crossing.fraction_crossing}
    out.append({"comparison": c.comparison, "model": c.model, "params": c.params, "df": c.df,
                "stage": c.stage,
                "points": [{"dp": p.dp, "n_pairs": p.n_pairs, "mean_delta": p.mean_delta,
                            "ci": list(p.ci) if p.ci else None, "verdict": p.verdict,
                            "pairs_needed": p.pairs_needed} for p in c.points],
                "crossing": cross, "fraction_crossing": c.fraction_crossing,
                "verdict": c.verdict, "decided_dp": list(c.decided), "n_runs": c.n_runs,
                "n_diverged": c.n_diverged, "verdict_text": c.verdict_text})
  return out
