"""Which joint law a study reports, how well it holds, and the fitted laws per arm.

* Laws: the study's joint law per arm on the fine-tune records (`jaxscale.laws`), every seed a
  row. `config.study.law` names one form, or is "auto": then both forms of `LAW_FORMS` are fitted
  and backtested and the one with the lower mean backtest log-RMSE over both arms and every
  held-out input is reported (`choose_law` states the rule). Backtests (`backtests`) hold out the
  largest value of each input that has at least `MIN_BACKTEST_VALUES` values. The chosen form alone
  is bootstrapped; its boundary Dp* along Dp at every (M, Df) of the grid, its figures and tables
  use its fit. 1-D laws E(Dp) per (arm, model, Df).
* Points (`config.study.law_points`, `law_table`): "final" fits each run's final error. "curves" fits
  E(Dp, M, Df, T), T = examples seen, on every point along each kept fine-tune's budget at or after
  `config.study.burn_in` of its steps (`points_table`: the same runs as the final table, each run's
  final point included), with a form that reads T (`law_candidates`; `transfer_additive_seen`).
  Everything judged on final errors stays so: the backtests fit the points of the runs below the
  held-out value and score the held-out runs' final errors (seed means per cell) at each run's final
  T; R² of the cell means, the checks and the 1-D laws use the final errors at each run's own T; the
  boundaries Dp* take T = `seen_at` (the fine-tunes' final T at that Df). The bootstrap resamples
  cells (a cell's seeds and all their points together: the points of one run are not independent).
* The law check (`law_checks`, per arm): R² (log) of the law against the seed-averaged cell means
  (`cell_r2`: a cell is (arm, M, Dp, Df); the law describes the expected error, and seed noise caps
  the R² of single runs, which is reported too) >= `R2_MIN`; the best start converged with more
  than one start in the best basin; every exponent in `EXPONENT_RANGE`; backtest log-RMSE <=
  `BACKTEST_MAX` with the largest Dp and with the largest M held out (an input that could not be
  backtested fails). A backtest fits every run below the held-out value and compares its
  predictions with the held-out cells' seed means, as the R² check does; the log-RMSE against
  the single runs is reported beside it. A law that fails is reported as failed: the report shows
  measured means instead of its curves, and lists each check with its value.

The typed results the report reads (`LawSelection`, `LawCrossing`, `Exponent`) are built from the
fits.json blocks they mirror (`selection_of`, `crossings_of`, `exponents_of`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping, Sequence

import numpy as np
from ml_collections import ConfigDict

from jaxscale import laws
from jaxscale.errors import JaxscaleError
from jaxscale.laws import curve_table
from jaxscale.laws import fit as fit_lib
from jaxscale.study.verdicts import TARGET, arm_of, student_rows

logger = logging.getLogger("jaxscale")

INPUTS = {"Dp": "dp", "M": "params", "Df": "df"}
SEEN = "examples"        # the column of T, the examples seen, in a table of curve points
CURVE_INPUTS = {**INPUTS, "T": SEEN}
FINAL = "final"          # a curve table's column: true on each run's final point (its record)
ERROR_FLOOR = 1e-3       # errors of exactly 0 are clipped up to this before taking logs
ARMS = {"false": "plain", "true": "distilled"}
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
EXPONENTS = ("alpha", "beta", "gamma", "delta", "c", "c0", "c1")


# ----------------------------------------------------------------------------- typed results

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
  ci: dict[str, tuple[float | None, float | None]] = dataclasses.field(default_factory=dict)  # name -> (lo, hi)


@dataclasses.dataclass(frozen=True)
class Backtest:
  """One largest-value holdout of one arm (`backtests`): log-RMSE of the held-out cell means, its
  standard error (delta method, None below 2 cells), the single runs' log-RMSE; or an error."""
  arm: str
  input: str
  value: float
  n_test: int | None
  n_points: int | None
  log_rmse: float | None
  log_rmse_rows: float | None
  log_rmse_se: float | None
  passed: bool | None
  error: str | None

  @property
  def marginal(self) -> bool:
    """Within one SE of BACKTEST_MAX: rounding or another seed can move it across the limit."""
    return (self.log_rmse is not None and self.log_rmse_se is not None
            and abs(self.log_rmse - BACKTEST_MAX) <= self.log_rmse_se)


@dataclasses.dataclass(frozen=True)
class FormArm:
  """One arm's fit quality under one candidate form."""
  r2_log_rows: float | None
  r2_log_cells: float | None
  n_rows: int | None
  n_cells: int | None


@dataclasses.dataclass(frozen=True)
class FormFit:
  """One candidate form of the selection: its fit per arm and its backtests."""
  name: str
  formula: str
  chosen: bool
  mean_log_rmse: float | None
  arms: dict[str, FormArm]
  backtests: tuple[Backtest, ...]


@dataclasses.dataclass(frozen=True)
class LawSelection:
  """Which forms were fitted and why `chosen` is reported (fits.json "law_selection")."""
  mode: str        # "auto" | "given" | "only" (the one form that reads T, for law_points "curves")
  rule: str
  reason: str
  chosen: str
  forms: tuple[FormFit, ...]
  law_points: str = "final"         # config.study.law_points
  burn_in: float | None = None      # config.study.burn_in with "curves"; None with "final"

  def origin(self) -> str:
    """How the reported form was picked, in a few words."""
    if self.mode == "only":
      return "the only form with examples seen T as an input"
    if self.mode != "auto":
      return "named by config.study.law"
    others = [f.name for f in self.forms if f.name != self.chosen]
    return f"chosen over {', '.join(others)} by the backtests: {self.reason}"


@dataclasses.dataclass(frozen=True)
class LawCrossing:
  """Where the two arms' fitted laws cross along Dp at one (M, Df) (fits.json "boundaries");
  roots: (value, ci_low, ci_high) each."""
  M: float
  Df: float
  roots: tuple[tuple[float, float | None, float | None], ...]
  boot_crossing_frac: float | None
  verdict: str | None
  sign_below: str


@dataclasses.dataclass(frozen=True)
class Exponent:
  """A 1-D law E(Dp) = E_inf + A·Dp^-alpha of one (arm, model, Df)."""
  arm: str
  model: str
  df: int
  alpha: float
  E_inf: float
  r2_log: float | None


def selection_of(block: Mapping[str, Any]) -> LawSelection:
  """The typed form of a (sanitized) "law_selection" block."""
  forms = []
  for name, f in block["forms"].items():
    arms = {a: FormArm(v["r2_log_rows"], v["r2_log_cells"], v["n_rows"], v["n_cells"])
            for a, v in f["arms"].items()}
    bts = tuple(Backtest(r["arm"], r["input"], r["value"], r.get("n_test"), r.get("n_points"),
                         r.get("log_rmse"), r.get("log_rmse_rows"), r.get("log_rmse_se"),
                         r.get("passed"), r.get("error")) for r in f["backtests"])
    forms.append(FormFit(name, f["formula"], bool(f["chosen"]), f["mean_log_rmse"], arms, bts))
  return LawSelection(block["mode"], block["rule"], block["reason"], block["chosen"], tuple(forms),
                      block.get("law_points", "final"), block.get("burn_in"))


def crossings_of(rows: Sequence[Mapping[str, Any]]) -> tuple[LawCrossing, ...]:
  """The typed form of the (sanitized) "boundaries" rows."""
  return tuple(LawCrossing(b["M"], b["Df"], tuple((r["value"], r.get("ci_low"), r.get("ci_high"))
                                                  for r in b["roots"]),
                           b.get("boot_crossing_frac"), b.get("verdict"), b["sign_below"])
               for b in rows)


def exponents_of(rows: Sequence[Mapping[str, Any]]) -> tuple[Exponent, ...]:
  return tuple(Exponent(e["arm"], e["model"], e["df"], e["alpha"], e["E_inf"], e["r2_log"]) for e in rows)



# ----------------------------------------------------------------------------- records

RUN_COLUMNS = ("dp", "params", "df", "distilled", "eval_error", "model", "seed")


def _law_runs(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
  """The records the laws are fitted on: the plain and distilled arms' fine-tunes (students)."""
  return [r for r in student_rows(rows, "finetune") if arm_of(r) in ("plain", "distilled")]


def final_seen(record: Mapping[str, Any]) -> int:
  """T of a run's final error: the examples it saw in all, steps × batch_size (its curve's last point)."""
  if record.get("steps") is None or record.get("batch_size") is None:
    raise JaxscaleError(f"record {record.get('cell_id')} has no steps or batch_size, so its examples seen "
                        f"are unknown; fit its study with config.study.law_points='final'")
  return int(record["steps"]) * int(record["batch_size"])


def finetune_table(rows: Sequence[Mapping[str, Any]], seen: bool = False) -> dict[str, np.ndarray]:
  """Named columns of the plain and distilled arms' fine-tune records (the laws are fitted per those
  two arms): dp, params, df, distilled, eval_error, model, seed; with `seen`, also examples (T,
  `final_seen`)."""
  ft = _law_runs(rows)
  out = {c: np.asarray([r[c] for r in ft]) for c in RUN_COLUMNS}
  if seen:
    out[SEEN] = np.asarray([final_seen(r) for r in ft], np.int64)
  return out


def points_table(rows: Sequence[Mapping[str, Any]], lines: Sequence[Mapping[str, Any]],
                 burn_in: float) -> dict[str, np.ndarray]:
  """The table a law on learning curves is fitted on: `finetune_table(rows, seen=True)` (each run's
  final error at T = its examples seen in all; FINAL true) and, of those same runs (matched by
  cell_id, so the same students, arms and selection as the final table), every point of their
  curves.jsonl `lines` before the end at or after `burn_in` of the run's steps
  (`curve_table.points`: step / steps >= burn_in; FINAL false): the run's columns with the point's
  eval_error and T = its examples seen (step × batch)."""
  runs = {r["cell_id"]: r for r in _law_runs(rows)}
  early = [(runs[c["cell_id"]], p) for c in lines if c.get("stage") == "finetune" and c.get("cell_id") in runs
           for p in curve_table.points(c, burn_in) if p["frac"] < 1]
  if not early:
    raise JaxscaleError(
        f"config.study.law_points='curves' fits the law on the fine-tunes' points along their budget, but "
        f"curves.jsonl has none at or after config.study.burn_in={burn_in:g} before a run's end; lower "
        f"burn_in, or set law_points='final' (a study written before curves.jsonl has none)")
  final = finetune_table(rows, seen=True)
  out = {c: np.concatenate([final[c], np.asarray([r[c] for r, _ in early])]) for c in RUN_COLUMNS if c != TARGET}
  out[TARGET] = np.concatenate([np.asarray(final[TARGET], np.float64), [p[TARGET] for _, p in early]])
  out[SEEN] = np.concatenate([final[SEEN], np.asarray([p[SEEN] for _, p in early], np.int64)])
  out[FINAL] = np.arange(len(out[TARGET])) < len(final[TARGET])
  return out


def law_table(config: ConfigDict, rows: Sequence[Mapping[str, Any]],
              lines: Sequence[Mapping[str, Any]] = ()) -> dict[str, np.ndarray]:
  """What config.study.law_points fits the law on: "final", `finetune_table(rows)`; "curves",
  `points_table(rows, lines, config.study.burn_in)` (`lines`: the study's curves.jsonl lines)."""
  if config.study.law_points == "curves":
    return points_table(rows, lines, float(config.study.burn_in))
  return finetune_table(rows)


def final_rows(table: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The runs' final errors of a law table: all of a final table, the FINAL rows of a points table."""
  if FINAL not in table:
    return dict(table)
  keep = np.asarray(table[FINAL], bool)
  return {k: np.asarray(v)[keep] for k, v in table.items()}


def seen_at(table: Mapping[str, np.ndarray], df: float | np.ndarray) -> np.ndarray:
  """T at which a law read on examples seen is evaluated at fine-tune size(s) `df` (the boundaries,
  the report's curves): the median final examples seen of the table's fine-tunes at each measured Df
  (`final_rows`), log-linear in Df between them. A fine-tune's budget (steps × batch) is set by its
  Df (config.finetune.optim), not by Dp or M, so the runs at one Df share it; where they do not, the
  cell means, R² and backtests still use each run's own T (`law_inputs`)."""
  final = final_rows(table)
  dfs = np.unique(np.asarray(final["df"], np.float64))
  ts = [np.median(np.asarray(final[SEEN], np.float64)[final["df"] == d]) for d in dfs]
  return np.exp(np.interp(np.log(np.asarray(df, np.float64)), np.log(dfs), np.log(ts)))



# ----------------------------------------------------------------------------- laws

def reads_seen(law: str) -> bool:
  """Whether a form has examples seen T as an input (a law on learning curves)."""
  return "T" in laws.get(law).inputs


def law_candidates(law: str, law_points: str = "final") -> tuple[str, ...]:
  """The forms a study fits: both transfer forms for "auto", else the one form named. With
  law_points "curves" the form must read T (and only the study's inputs): "auto" gives those forms
  (`transfer_additive_seen`); a named form without T is refused."""
  if law_points == "curves":
    seen = tuple(n for n in laws.names() if reads_seen(n) and set(laws.get(n).inputs) <= set(CURVE_INPUTS))
    if law == AUTO:
      return seen
    if law in laws.names() and not reads_seen(law):
      raise JaxscaleError(f"config.study.law_points='curves' fits a law with examples seen T as an input, but "
                          f"config.study.law '{law}' has no T; set config.study.law to '{AUTO}' or "
                          f"{' / '.join(seen)}, or law_points to 'final'")
  if law == AUTO:
    return LAW_FORMS
  if law not in laws.names():
    raise JaxscaleError(f"config.study.law is '{law}'; use '{AUTO}' (fit {' and '.join(LAW_FORMS)} "
                        f"and report the one the backtests favour) or one of: {', '.join(laws.names())}")
  return (law,)


def _arm_mask(table: Mapping[str, np.ndarray], arm: str) -> np.ndarray:
  return table["distilled"].astype(bool) == (arm == "distilled")


def columns(t: Mapping[str, np.ndarray]) -> dict[str, str]:
  """Law input -> column of a table: INPUTS, and T -> SEEN where the table has examples seen."""
  return dict(CURVE_INPUTS) if SEEN in t else dict(INPUTS)


def law_inputs(t: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The law's inputs (Dp, M, Df; T where the table has examples seen) of a table's columns, float64."""
  return {name: np.asarray(t[col], np.float64) for name, col in columns(t).items()}


def cell_means(table: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """One row per (arm, M, Dp, Df) cell, sorted: its columns (float64), the mean error over its
  seeds (each value clipped up to ERROR_FLOOR first, as the fit sees it) and n, the seeds averaged.
  A table with examples seen keys the cells by T too (each run's own final T, `final_seen`)."""
  y = np.maximum(np.asarray(table[TARGET], np.float64), ERROR_FLOOR)
  keys = CELL_COLUMNS + ((SEEN,) if SEEN in table else ())
  points, means, counts = laws.validate.replicate_means({c: table[c] for c in keys}, y)
  return {**points, TARGET: means, "n": counts}


def cell_r2(law: str, params: Mapping[str, float], table: Mapping[str, np.ndarray]) -> tuple[float, int]:
  """(R² (log) of the law at `params` against the seed-averaged cell means of `table`, cells).

  The law describes the expected error of a cell; one run's error adds seed noise (SD up to 0.06
  per cell in the default study) that no law can explain, so the law is judged on the cell means.
  Of a points table only the runs' final errors count (`final_rows`), at each run's own final T.
  """
  cells = cell_means(final_rows(table))
  pred = laws.predict(law, params, law_inputs(cells))
  y = np.asarray(cells[TARGET], np.float64)
  return fit_lib.r2_log(np.log(y), np.log(np.asarray(pred, np.float64))), len(y)


def backtest_inputs(table: Mapping[str, np.ndarray]) -> tuple[str, ...]:
  """Inputs with at least MIN_BACKTEST_VALUES distinct values: holding out the largest leaves at
  least two to fit (with one left, the law's term in that input is not identified)."""
  return tuple(n for n, c in INPUTS.items() if len(np.unique(table[c])) >= MIN_BACKTEST_VALUES)


def backtests(config: ConfigDict, table: Mapping[str, np.ndarray], law: str) -> dict[str, Any]:
  """Largest-value holdouts of each input with >= MIN_BACKTEST_VALUES values, per arm
  (`laws.validate.backtest`; each row gains "passed": log-RMSE <= BACKTEST_MAX).

  Of a points table (`points_table`) the fit uses every point of the runs below the held-out value
  and the score only the held-out runs' final errors, seed-averaged per cell, at each run's final
  T: log-RMSE = sqrt(mean over held-out cells of (log E_law(Dp, M, Df, T) - log mean E)^2)."""
  two_arms = len({bool(v) for v in table["distilled"]}) == 2
  out = laws.validate.backtest(table, law=law, inputs=columns(table), target=TARGET,
                               split_by="distilled" if two_arms else None,
                               by=backtest_inputs(table), floor=ERROR_FLOOR, leave_one_out=False,
                               seed=int(config.seed), means=True,
                               score_by=FINAL if FINAL in table else None)
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


def _grid_points(table: Mapping[str, np.ndarray]) -> list[dict[str, float]]:
  """Every (M, Df) of the grid, the headline one (largest M, smallest Df) first; with T = `seen_at`
  Df where the table has examples seen."""
  ms = sorted({float(v) for v in table["params"]}, reverse=True)
  dfs = sorted({float(v) for v in table["df"]})
  seen = {df: float(seen_at(table, df)) for df in dfs} if SEEN in table else {}
  return [{"M": m, "Df": df, **({"T": seen[df]} if seen else {})} for m in ms for df in dfs]


def fit_law(config: ConfigDict, table: Mapping[str, np.ndarray], law: str, bootstrap: int,
            boundaries: bool, progress: bool) -> laws.Analysis:
  """`laws.analyze` of one form per arm; with `boundaries`, its crossing along Dp at every (M, Df)
  (at T = `seen_at` Df for a points table, whose bootstrap resamples cells: (Dp, M, Df))."""
  two_arms = len({bool(v) for v in table["distilled"]}) == 2
  cross = boundaries and two_arms
  points = _grid_points(table)
  return laws.analyze(table, law=law, inputs=columns(table), target=TARGET,
                      split_by="distilled" if two_arms else None, bootstrap=bootstrap,
                      boundary="Dp" if cross else None, at=points[0] if cross else None,
                      boundary_at=points[1:] if cross else (), floor=ERROR_FLOOR,
                      seed=int(config.seed), progress=progress,
                      group_labels={k: f"the {arm} arm" for k, arm in ARMS.items()},
                      cluster_by=tuple(INPUTS) if SEEN in table else None)


def _form_summary(law: str, result: laws.Analysis, table: Mapping[str, np.ndarray],
                  bt: Mapping[str, Any]) -> dict[str, Any]:
  """One form's entry of "law_selection": per arm R² (rows, cell means), backtest rows."""
  arms = {}
  for key, group in result.content["groups"].items():
    arm = _arm_name(key, table)
    params = {n: p["value"] for n, p in group["params"].items()}
    r2c, n_cells = cell_r2(law, params, arm_table(table, arm))
    st = group["statistics"]
    arms[arm] = {"r2_log_rows": st.get("r2_log"), "r2_log_cells": r2c, "n_rows": st.get("n"),
                 "n_cells": n_cells, "converged": st.get("converged"),
                 "n_best_basin": st.get("n_best_basin"), "params": params}
  rows = [{k: r.get(k) for k in ("arm", "input", "value", "n_test", "n_points", "log_rmse", "log_rmse_se",
                                 "log_rmse_rows", "passed", "error")
           if k in r} for r in bt["rows"]]
  return {"formula": laws.get(law).formula, "arms": arms, "backtests": rows}


def arm_table(table: Mapping[str, np.ndarray], arm: str) -> dict[str, np.ndarray]:
  """The rows of `table` of one arm ("plain" | "distilled")."""
  mask = _arm_mask(table, arm)
  return {k: np.asarray(v)[mask] for k, v in table.items()}


def select_law(config: ConfigDict, table: Mapping[str, np.ndarray], progress: bool
               ) -> tuple[str, dict[str, Any], dict[str, dict[str, Any]]]:
  """Fits every candidate form (no bootstrap) and backtests it; chooses one by `choose_law`.

  Returns (chosen form, the "law_selection" block of fits.json, {form: its backtests}).
  """
  curves = config.study.law_points == "curves"
  forms = law_candidates(str(config.study.law), str(config.study.law_points))
  summaries, bts = {}, {}
  for law in forms:
    bts[law] = backtests(config, table, law)
    summaries[law] = _form_summary(law, fit_law(config, table, law, 0, False, progress), table, bts[law])
  r2c = {f: {a: s["r2_log_cells"] for a, s in summaries[f]["arms"].items()} for f in forms}
  chosen, means, why = choose_law({f: _scores(bts[f]) for f in forms}, r2c)
  for f in forms:
    summaries[f].update(mean_log_rmse=means[f], chosen=f == chosen)
  mode = "auto" if len(forms) > 1 else "only" if str(config.study.law) == AUTO else "given"
  if mode == "only":
    why = "the only form with examples seen T as an input (config.study.law_points = 'curves')"
  block = {"mode": mode, "rule": SELECTION_RULE, "backtest_max_log_rmse": BACKTEST_MAX, "chosen": chosen,
           "reason": why, "forms": summaries, "law_points": str(config.study.law_points),
           "burn_in": float(config.study.burn_in) if curves else None}
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
    r2c = cell_r2(law, params, arm_table(table, arm))[0]
    holdouts = {r["input"]: r.get("log_rmse") for r in summary["backtests"]
                if r["arm"] == arm and r.get("error") is None}
    checks = law_checks(group["statistics"], params, r2c, holdouts)
    boot = result.groups[key].bootstrap
    ci = {n: (laws.api.sanitize(p.get("ci_low")), laws.api.sanitize(p.get("ci_high")))
          for n, p in group["params"].items()}
    arms[arm] = ArmFit(arm, params, None if boot is None else dict(boot.params), group["statistics"],
                       tuple(group["warnings"]), tuple(c["reason"] for c in checks if not c["passed"]),
                       tuple(checks), r2c, ci)
  return content, arms


def _boundary_row(b: Mapping[str, Any]) -> dict[str, Any]:
  """The fitted laws' crossing at one (M, Df): what the report's law table shows."""
  return {"M": b["at"]["M"], "Df": b["at"]["Df"], **({"T": b["at"]["T"]} if "T" in b["at"] else {}),
          "roots": b["roots"],
          "boot_crossing_frac": b.get("boot_crossing_frac"), "verdict": b.get("verdict"),
          "text": b.get("text"),
          "sign_below": {1: "distillation helps", -1: "distillation hurts", 0: "equal"}[b["sign_below"]]}


def exponents(config: ConfigDict, table: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
  """1-D laws E(Dp) = E_inf + A·Dp^-alpha per (arm, model, Df) with at least 4 distinct Dp, on the
  runs' final errors (`final_rows`)."""
  table = final_rows(table)
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
