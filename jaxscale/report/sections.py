"""The report's text and tables, in reading order, built from a `StudyAnalysis`.

A block is ``("h", level, text)``, ``("p", text)``, ``("table", header, rows)`` or
``("img", filename, caption)`` (see `render`). The first screen says what was run, what was
measured and how sure the study is; every claim in it is a row of a table on the page.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from jaxscale.study import adaptive
from jaxscale.study.analysis import StudyAnalysis
from jaxscale.study.law_selection import (BACKTEST_MAX, CHECKED_HOLDOUTS, EXPONENT_RANGE, R2_MIN,
                                          Backtest)
from jaxscale.study.verdicts import (MAX_PAIRS_NEEDED, MIN_PAIRS, POINT_WORDS, Measured, PairedCell,
                                     is_teacher)

logger = logging.getLogger("jaxscale")

Block = tuple
VERDICT_WORDS = {
    "helps_below_dp_star": "helps below Dp*, hurts or no practical difference above",
    "hurts_below_dp_star": "hurts below Dp*, helps or no practical difference above",
    "helps": "helps where decided",
    "hurts": "hurts where decided",
    "no_practical_difference": "no practical difference where decided",
    "cannot_tell": "cannot tell",
    "cannot_be_judged": "cannot be judged (runs diverged)",
}
COMPARISON_WORDS = {"distilled_vs_plain": "distilled vs plain (what distillation does)",
                    "distilled_vs_smoothed": "distilled vs smoothed (what the teacher's knowledge adds)"}
# The fitted laws' verdict along Dp (`jaxscale.laws.boundary`, a = plain, b = distilled).
LAW_VERDICT_WORDS = {
    "crossing": "the laws cross",
    "a_higher": "distillation helps throughout",
    "a_lower": "distillation hurts throughout",
    "cannot_tell": "cannot tell",
    "fitted_crossing": "the fitted laws cross (no bootstrap)",
    "fitted_no_crossing": "the fitted laws do not cross (no bootstrap)",
}


def fmt(v: Any, digits: int = 3) -> str:
  """Numbers for tables: 3 significant digits, thousands separators, '–' for missing."""
  if v is None:
    return "–"
  if isinstance(v, bool):
    return "yes" if v else "no"
  if isinstance(v, (int, float)):
    if v != v or v in (float("inf"), float("-inf")):
      return "–"
    if isinstance(v, int) or float(v).is_integer() and abs(v) >= 1:
      return f"{int(v):,}" if abs(v) < 1e7 else f"{v:.3g}"
    return f"{v:.{digits}g}"
  return str(v)


def with_ci(value, low, high) -> str:
  if low is None or high is None:
    return fmt(value)
  return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"


def _mean_ci(m: Measured | None) -> str:
  if m is None:
    return "–"
  return (f"{m.mean:.3f} [{m.ci[0]:.3f}, {m.ci[1]:.3f}]" if m.ci else f"{m.mean:.3f}") + f" (n={m.n})"


def _delta(p) -> str:
  ci = f" [{p.ci[0]:+.3f}, {p.ci[1]:+.3f}]" if p.ci else ""
  need = ""
  if p.verdict == "undecided":
    need = f", +{p.pairs_needed} pairs" if p.pairs_needed is not None else f", over +{MAX_PAIRS_NEEDED} pairs"
  return f"{p.mean_delta:+.3f}{ci} (n={p.n_pairs}) {POINT_WORDS[p.verdict]}{need}"


def _list(values: Sequence[int]) -> str:
  return ", ".join(f"{v:,}" for v in values)


# ----------------------------------------------------------------------------- setup facts

def _steps(a: StudyAnalysis, stage: str, size: str) -> str:
  """Steps each cell of a stage trained, from the records: '100: 20, 300: 47'."""
  by = {}
  for r in a.rows:
    if r.get("stage") == stage and not is_teacher(r) and "steps" in r:
      by.setdefault(int(r[size] or 0), set()).add(int(r["steps"]))
  return "; ".join(f"{size.capitalize()} = {k:,}: {'/'.join(f'{s:,}' for s in sorted(v))}"
                   for k, v in sorted(by.items())) or "not recorded"


def test_size(a: StudyAnalysis, stage: str) -> str:
  """Images in the test split of a stage: `eval_count` of its records, else read from the dataset."""
  counts = {int(r["eval_count"]) for r in a.rows if r.get("stage") == stage and r.get("eval_count")}
  if counts:
    return "/".join(f"{c:,}" for c in sorted(counts))
  c = a.config
  try:
    from jaxscale.data import sources
    return f"{len(sources.load_labels(c[stage].dataset, c[stage].eval_split, c.data.data_dir)):,}"
  except Exception as e:  # not prepared on this machine: say so rather than fail the report
    logger.debug("test split size of %s unknown: %s", c[stage].dataset, e)
    return "not recorded"


def chance_error(a: StudyAnalysis, stage: str) -> float | None:
  c = a.config
  try:
    from jaxscale.data import sources
    return 1.0 - 1.0 / sources.num_classes(c[stage].dataset, c.data.data_dir)
  except Exception:
    return None


def _budget(optim) -> str:
  o = optim.to_dict() if hasattr(optim, "to_dict") else dict(optim)
  keys = [k for k in ("batch_size", "lr", "epochs", "min_steps", "max_steps", "steps", "examples") if k in o]
  return ", ".join(f"{k} {o[k]:g}" if isinstance(o[k], float) else f"{k} {o[k]}" for k in keys)


def _teacher(a: StudyAnalysis) -> str:
  t = [m for m in a.measured if m.arm == "teacher"]
  if not t:
    return "none (no distilled arm)"
  m = t[0]
  return (f"{m.model} pretrained on Dp = {m.dp:,} images; its error on the pretraining test split "
          f"{m.mean:.3f}")


def rounds_blocks(log: dict[str, Any] | None) -> list[Block]:
  """The rounds of an adaptive study (its rounds.json, `jaxscale.study.rounds`): per round the runs
  added, where and why, and why the rounds stopped; nothing for a study without rounds."""
  if not log:
    return []
  rows = []
  for r in log["rounds"]:
    if "additions" not in r:
      rows.append([str(r["round"]), f"{r['runs']:,}", "the grid", r.get("why", "")])
      continue
    for e in r["additions"]:
      seeds = e["seeds"]
      where = f"{e['model']}, Dp = {e['dp']:,}, seed{'s' * (len(seeds) > 1)} {seeds[0]}" + (
          f"-{seeds[-1]}" if len(seeds) > 1 else "")
      why = adaptive.short_why(e["undecided"]) if e.get("undecided") else "; ".join(e["why"])
      rows.append([str(r["round"]), f"{e['runs']:,}", where, why])
  added = sum(r["runs"] for r in log["rounds"][1:])
  budget = "" if log.get("max_runs") is None else f" of a budget of {log['max_runs']:,}"
  stopped = f" The rounds stopped: {log['stopped']}." if log.get("stopped") else " The rounds have not finished."
  return [("h", 2, "Rounds"),
          ("p", f"{len(log['rounds'])} rounds; {added:,} runs added after round 1{budget}.{stopped}"),
          ("table", ["round", "runs", "where", "why"], rows)]


def budget_blocks(a: StudyAnalysis) -> list[Block]:
  """"Does the budget bind?": the plain arm's drop over the last part of the budget at the largest
  Dp, per model, for pretraining (and fine-tuning at the largest Df), from the learning curves."""
  checks = [(stage, a.curves[stage]["budget"]) for stage in ("pretrain", "finetune")
            if a.curves.get(stage, {}).get("budget")]
  if not checks:
    return []
  out: list[Block] = [("h", 2, "Learning curves: does the budget bind?")]
  for stage, by_model in checks:
    name = "Pretraining" if stage == "pretrain" else "Fine-tuning (largest Df)"
    flags = [v["flag"] for v in by_model.values()]
    summary = ("the budget binds for " + ", ".join(m for m, v in by_model.items() if v["flag"] == "binds")
               if "binds" in flags else "no model's error still falls by more than the margin at the end")
    out.append(("p", f"{name}: {summary}. " + " ".join(v["text"] + "." for v in by_model.values())))
  return out


def setup_blocks(a: StudyAnalysis) -> list[Block]:
  c = a.config
  s, d = c.study, c.distill
  models = sorted({(m.params, m.model) for m in a.measured if m.stage == "finetune"})
  arms = ["plain: cross-entropy only"]
  if "distilled" in s.arms:
    arms.append(f"distilled: (1 − α)·CE + α·T²·KL with α = {d.alpha:g}, T = {d.temperature:g}, "
                f"during {d.stage}")
  if "smoothed" in s.arms:
    arms.append("smoothed: the distilled arm's loss against a uniform teacher (label smoothing), the "
                "control for what the teacher's knowledge adds")
  rows = [
      ["pretraining data", f"{c.pretrain.dataset} (test split: {test_size(a, 'pretrain')} images)"],
      ["downstream data", f"{c.finetune.dataset} (test split: {test_size(a, 'finetune')} images)"],
      ["error measured", "top-1 error on the test split of each stage's dataset"],
      ["models (M as fitted)", ", ".join(f"{name} ({p:,})" for p, name in models)],
      ["Dp, Df", f"Dp = {_list(s.dp)}; Df = {_list(s.df)}"],
      ["arms", "; ".join(arms)], ["teacher", _teacher(a)],
      ["seeds", f"{', '.join(str(v) for v in s.seeds)} (paired: both arms of a seed share subset, "
                "order and initialisation)"],
      ["pretraining budget", _budget(c.pretrain.optim)],
      ["steps trained (pretraining)", _steps(a, "pretrain", "dp")],
      ["fine-tuning budget", _budget(c.finetune.optim)],
      ["steps trained (fine-tuning)", _steps(a, "finetune", "df")],
      ["runs", f"{len(a.rows):,} records, {sum(r.get('wall_s', 0.0) for r in a.rows) / 60:.1f} min of training"],
  ]
  return [("h", 2, "Setup"), ("table", ["", "value"], rows)]


# ----------------------------------------------------------------------------- first screen

def _headline_cells(a: StudyAnalysis) -> list[PairedCell]:
  """Per comparison: the downstream cell of the largest model at the smallest Df, and its
  pretraining-task cell."""
  out = []
  for comp in dict.fromkeys(c.comparison for c in a.paired):
    for stage in ("finetune", "pretrain"):
      cells = [c for c in a.paired if c.stage == stage and c.comparison == comp]
      if cells:
        out.append(max(cells, key=lambda c: (c.params, -c.df)))
  return out


def _verdict_counts(a: StudyAnalysis, comparison: str) -> str:
  cells = [c for c in a.paired if c.stage == "finetune" and c.comparison == comparison]
  counts: dict[str, int] = {}
  for c in cells:
    counts[c.verdict] = counts.get(c.verdict, 0) + 1
  parts = [f"{n} {VERDICT_WORDS[v]}" for v, n in sorted(counts.items(), key=lambda kv: -kv[1])]
  return (f"{COMPARISON_WORDS.get(comparison, comparison)}: over all {len(cells)} downstream cells "
          f"(model × Df): {', '.join(parts)}.")


def _need_sentence(a: StudyAnalysis) -> str:
  need = a.rule.get("pairs_needed") or {}
  if not need.get("points"):
    return "Every point is decided."
  unknown = (f"; {need['unknown']} more need over {MAX_PAIRS_NEEDED} pairs or cannot be estimated"
             if need.get("unknown") else "")
  return (f"To decide the {need['points']} undecided points, their observed spread asks for "
          f"{need['pairs']:,} more seed pairs at the level used: {need['runs']:,} runs, about "
          f"{need['minutes']:.0f} min at this study's measured minutes per run{unknown}.")


def _diverged_sentence(a: StudyAnalysis) -> str:
  if not a.diverged:
    return f"Diverged runs: none (of {len(a.rows):,})."
  shown = ", ".join(str(d) for d in a.diverged[:10]) + (", ..." if len(a.diverged) > 10 else "")
  return (f"Diverged runs: {len(a.diverged)} of {len(a.rows) + len(a.diverged):,}, left out of the "
          f"analysis and the laws ({shown}); a cell with more than {a.rule['max_diverged_share']:.0%} "
          f"of its runs diverged cannot be judged.")


def _marginal(a: StudyAnalysis) -> list[str]:
  """The reported law's backtests within one SE of the limit, in words."""
  form = next((f for f in a.selection.forms if f.name == a.law), None)
  return [f"{b.arm} arm, largest {b.input} held out: log-RMSE {b.log_rmse:.3f} ± {b.log_rmse_se:.3f} "
          f"(SE) against the limit {BACKTEST_MAX:g}, so its {'pass' if b.passed else 'failure'} is marginal"
          for b in (form.backtests if form else ()) if b.marginal]


def _law_sentence(a: StudyAnalysis) -> str:
  parts = []
  for arm, f in a.arms.items():
    r2 = f.statistics.get("r2_log")
    cells = f"{f.r2_cells:.2f} on the seed-averaged cells, " if f.r2_cells is not None else ""
    state = "fails its checks (" + "; ".join(f.failed) + ")" if f.failed else "passes its checks"
    parts.append(f"{arm} arm: R² (log) {cells}{fmt(r2, 2)} on single runs, {state}")
  failed = any(f.failed for f in a.arms.values())
  tail = (" Its curves are therefore not drawn and its Dp* values are not findings; the tables show "
          "the measured means instead." if failed else "")
  checks = (f"R² (log) of the cell means ≥ {R2_MIN}, converged in a basin reached by more than one "
            f"start, exponents in [{EXPONENT_RANGE[0]:g}, {EXPONENT_RANGE[1]:g}], backtest log-RMSE of the "
            f"held-out cell means ≤ {BACKTEST_MAX:g} with the largest {' and with the largest '.join(CHECKED_HOLDOUTS)} held out")
  marginal = _marginal(a)
  within = (" Within one SE of the limit (a pass or fail that rounding or another seed can flip): "
            + "; ".join(marginal) + "." if marginal else "")
  return (f"The joint law {a.law}, {a.selection.origin()}. Its checks ({checks}): {'; '.join(parts)}."
          f"{tail}{within}")


def first_screen(a: StudyAnalysis) -> list[Block]:
  c = a.config
  s = c.study
  models = sorted({(m.params, m.model) for m in a.measured if m.stage == "finetune"})
  ran = (f"What was run: {len(models)} model sizes ({', '.join(f'{n}, M = {p:,}' for p, n in models)}) "
         f"pretrained on Dp = {_list(s.dp)} images of {c.pretrain.dataset}, "
         + ("plainly and distilled from a teacher, " if "distilled" in s.arms else "")
         + f"then fine-tuned on Df = {_list(s.df)} images of {c.finetune.dataset}; seeds "
         f"{', '.join(str(v) for v in s.seeds)}, paired across arms ({len(a.rows):,} runs).")
  measured = (f"What was measured: top-1 error on the test split of {c.finetune.dataset} "
              f"({test_size(a, 'finetune')} images) after fine-tuning, and on that of "
              f"{c.pretrain.dataset} ({test_size(a, 'pretrain')} images) after pretraining.")
  return ([("h", 1, "jaxscale study report"), ("p", ran), ("p", measured), ("p", how_sure(a)),
           ("p", _diverged_sentence(a)), ("h", 2, "Verdict")] + [("p", text) for text in verdict_lines(a)])


def how_sure(a: StudyAnalysis) -> str:
  r = a.rule
  looks = (f", split over {r['rounds']} rounds of looks ({r['fdr_per_look']:g} per look)"
           if r["rounds"] > 1 else "")
  return (f"How sure: each point (comparison, model, Df, Dp) is judged by a t-interval of the mean "
          f"paired difference ΔE = E_baseline − E_treatment over seed pairs. The study's "
          f"{r['family_points']} points are judged as one family, with a false discovery rate of "
          f"{r['family_alpha']:.0%}{looks} (Benjamini-Hochberg): where nothing differs, the chance "
          f"that any helps / hurts verdict of the whole study is wrong is at most "
          f"{r['family_alpha']:.0%}; where effects are real, at most {r['family_alpha']:.0%} of such "
          f"verdicts are expected wrong. Here {r['decided_differ']} points differ, so helps / hurts "
          f"intervals are at level {r['point_level']:.4f}; {r['decided_equivalent']} show no practical "
          f"difference, their intervals at level {r['equivalence_level']:.4f}. A point helps "
          f"(interval above 0), hurts (below 0), shows no practical difference (interval inside "
          f"±{r['margin']:g}, the margin config.study.margin: the CI-inclusion rule, equal to two "
          f"one-sided tests) or is undecided (also with fewer than {MIN_PAIRS} pairs); a cell states a "
          f"verdict over the Dp range where its points are decided, and Dp* only for a crossing "
          f"(decided points on both sides).")


def verdict_lines(a: StudyAnalysis) -> list[str]:
  """The headline verdicts (largest model: downstream at the smallest Df, pretraining task), the
  count of verdicts over all downstream cells, and the law's status."""
  lines = [c.verdict_text for c in _headline_cells(a)]
  lines += [_verdict_counts(a, comp) for comp in dict.fromkeys(c.comparison for c in a.paired)]
  if a.paired:
    lines.append(_need_sentence(a))
  return lines + [_law_sentence(a)]


def _dp_star(c: PairedCell) -> str:
  if not c.verdict.endswith("below_dp_star"):
    return "–"
  if c.crossing is None:
    return "between decided points (the means do not change sign)"
  if c.crossing.ci:
    return with_ci(round(c.crossing.dp_star), *(round(v) for v in c.crossing.ci))
  return fmt(round(c.crossing.dp_star))


def _cell_need(c: PairedCell) -> str:
  need = [p.pairs_needed for p in c.points if p.verdict == "undecided"]
  if not need or c.verdict == "cannot_be_judged":
    return "–"
  known = sum(n for n in need if n is not None)
  return f"{known:,}" + (f" (+{sum(n is None for n in need)} points over {MAX_PAIRS_NEEDED})"
                         if any(n is None for n in need) else "")


def verdict_table(a: StudyAnalysis) -> list[Block]:
  if not a.paired:
    return [("p", "The study has one arm only: there are no paired differences to compare.")]
  rows = []
  for c in a.paired:
    decided = f"{fmt(min(c.decided))}–{fmt(max(c.decided))} ({len(c.decided)} of {len(c.points)})" if c.decided else "none"
    rows.append([c.comparison.replace("_", " "), c.model, fmt(c.params),
                 "pretraining" if c.stage == "pretrain" else fmt(c.df), VERDICT_WORDS[c.verdict], decided,
                 _dp_star(c), f"{max(p.n_pairs for p in c.points)}", _cell_need(c),
                 f"{c.n_diverged}/{c.n_runs}"])
  dps = sorted({p.dp for c in a.paired for p in c.points})
  deltas = [[c.comparison.replace("_", " "), c.model, "pretraining" if c.stage == "pretrain" else fmt(c.df)]
            + [next((_delta(p) for p in c.points if p.dp == dp), "–") for dp in dps] for c in a.paired]
  level = a.rule["point_level"]
  return [
      ("table", ["comparison", "model", "M", "Df", "verdict", "decided Dp",
                 "Dp* [95% bootstrap CI, this cell]", "pairs", "more pairs needed", "diverged runs"], rows),
      ("h", 3, f"Paired differences ΔE = E_baseline − E_treatment (mean [interval at level {level:.4f}, "
               f"or {a.rule['equivalence_level']:.4f} for no practical difference] (pairs) verdict, "
               f"more pairs needed)"),
      ("table", ["comparison", "model", "Df"] + [f"Dp = {d:,}" for d in dps], deltas)]


# ----------------------------------------------------------------------------- measured means

def means_tables(a: StudyAnalysis) -> list[Block]:
  dps = sorted({m.dp for m in a.measured if m.arm != "teacher"})
  find = {(m.stage, m.model, m.df, m.arm, m.dp): m for m in a.measured}
  blocks: list[Block] = [("h", 2, "Measured error (mean [95% CI] (seeds))")]
  keys = sorted({(m.params, m.model, m.df, m.arm) for m in a.measured if m.stage == "finetune"},
                key=lambda k: (k[0], k[2], k[3] != "plain"))
  blocks.append(("h", 3, "Downstream (after fine-tuning)"))
  blocks.append(("table", ["model", "Df", "arm"] + [f"Dp = {d:,}" for d in dps],
                 [[m, fmt(df), arm] + [_mean_ci(find.get(("finetune", m, df, arm, d))) for d in dps]
                  for _, m, df, arm in keys]))
  pre = sorted({(m.params, m.model, m.arm) for m in a.measured if m.stage == "pretrain" and m.arm != "teacher"},
               key=lambda k: (k[0], k[2] != "plain"))
  if pre:
    chance = chance_error(a, "pretrain")
    note = f" (chance: {chance:.3f})" if chance is not None else ""
    blocks.append(("h", 3, f"Pretraining task (after pretraining){note}"))
    blocks.append(("table", ["model", "arm"] + [f"Dp = {d:,}" for d in dps],
                   [[m, arm] + [_mean_ci(find.get(("pretrain", m, 0, arm, d))) for d in dps]
                    for _, m, arm in pre]))
  return blocks


# ----------------------------------------------------------------------------- the law

def _backtest_cell(r: Backtest | None) -> str:
  if r is None:
    return "–"
  if r.error is not None:
    return "could not be fitted"
  verdict = "passes" if r.passed else f"FAILS: > {BACKTEST_MAX:g}"
  if r.marginal:
    verdict += ", marginal: within one SE of the limit"
  runs = f"; single runs {fmt(r.log_rmse_rows)}" if r.log_rmse_rows is not None else ""
  se = f" ± {fmt(r.log_rmse_se, 2)} SE" if r.log_rmse_se is not None else ""
  return f"{fmt(r.log_rmse)}{se} ({verdict}{runs})"


def selection_blocks(a: StudyAnalysis) -> list[Block]:
  """The forms fitted side by side: R² (single runs, cell means), each backtest, the mean, which
  one is reported and why."""
  sel = a.selection
  entries = sel.forms
  forms = [e.name for e in entries]
  arms = list(entries[0].arms)
  rows = [["formula"] + [e.formula for e in entries]]
  for arm in arms:
    rows.append([f"R² (log), {arm}, single runs"]
                + [f"{fmt(e.arms[arm].r2_log_rows)} ({e.arms[arm].n_rows} runs)" for e in entries])
    rows.append([f"R² (log), {arm}, seed-averaged cells"]
                + [f"{fmt(e.arms[arm].r2_log_cells)} ({e.arms[arm].n_cells} cells)" for e in entries])
  cases = list(dict.fromkeys((r.arm, r.input, r.value) for e in entries for r in e.backtests))
  for arm, inp, value in cases:
    rows.append([f"backtest log-RMSE of the cell means, {arm}, largest {inp} = {fmt(value)} held out"]
                + [_backtest_cell(next((r for r in e.backtests if (r.arm, r.input, r.value)
                                        == (arm, inp, value)), None)) for e in entries])
  rows.append(["mean backtest log-RMSE"] + [fmt(e.mean_log_rmse) for e in entries])
  rows.append(["reported"] + ["yes" if e.chosen else "no" for e in entries])
  if sel.mode == "auto":
    why = (f"Both transfer forms were fitted per arm; {sel.chosen} is reported: {sel.reason}. "
           f"Rule: {sel.rule}.")
  elif sel.mode == "only":
    why = f"{sel.chosen} is reported as {sel.reason}; no other form was fitted."
  else:
    why = ("config.study.law names this form, so no other form was fitted (set it to 'auto' to fit "
           "both transfer forms and report the one the backtests favour).")
  if not cases:
    why += " No input has 3 values, so no backtest could be run."
  return [("h", 3, "Which law: the forms side by side"), ("p", why),
          ("table", ["", *forms], rows)]


def _check_value(v: Any) -> str:
  return fmt(v) if not isinstance(v, float) else f"{v:.3g}"


def check_blocks(a: StudyAnalysis) -> list[Block]:
  """Every check of the reported law, per arm, with its value, its rule and whether it passes."""
  rows = [[f.arm, c["check"], _check_value(c["value"]), c["rule"], "passes" if c["passed"] else "FAILS"]
          for f in a.arms.values() for c in f.checks]
  if not rows:
    return []
  runs = "; ".join(f"{f.arm} {fmt(f.statistics.get('r2_log'))}" for f in a.arms.values())
  return [("h", 3, f"Checks of {a.law}"),
          ("p", f"R² (log) is judged on the seed-averaged cell means (each (arm, M, Dp, Df) cell's mean "
                f"error against the law there): the law describes the expected error, and seed-to-seed "
                f"noise caps the R² of single runs (single runs: {runs}). Exponents must lie in "
                f"[{EXPONENT_RANGE[0]:g}, {EXPONENT_RANGE[1]:g}]: below {EXPONENT_RANGE[0]:g} a term "
                f"changes by under 5% over a 100× span of its input, above {EXPONENT_RANGE[1]:g} it "
                f"falls over 100× across a 10× span (a step, not a power law)."),
          ("table", ["arm", "check", "value", "rule", "result"], rows)]


def _points_sentence(a: StudyAnalysis) -> str:
  """With config.study.law_points = "curves": what the law was fitted on, in one sentence ("" else)."""
  sel = a.selection
  if sel.law_points != "curves":
    return ""
  n = sum(int(f.statistics.get("n") or 0) for f in a.arms.values())
  return (f" It was fitted on {n:,} curve points after burn-in {sel.burn_in:g} (each fine-tune's "
          f"evaluations from that fraction of its steps on, its final one included), with T the examples "
          f"seen; its checks, backtests and Dp* are read at the runs' final T.")


def law_blocks(a: StudyAnalysis) -> list[Block]:
  names = list(next(iter(a.arms.values())).params)
  rows = []
  for arm, f in a.arms.items():
    st = f.statistics
    rows.append([arm, "failed" if f.failed else "passes"]
                + [with_ci(f.params[n], *f.ci.get(n, (None, None))) for n in names]
                + [fmt(f.r2_cells), fmt(st.get("r2_log")), fmt(st.get("converged")),
                   fmt(st.get("n_best_basin")), fmt(st.get("n"))])
  blocks: list[Block] = [
      ("h", 2, f"Fitted law: {a.law}"), ("p", f"{a.formula} ({a.selection.origin()}).{_points_sentence(a)}"),
      *selection_blocks(a), *check_blocks(a),
      ("h", 3, f"Parameters of {a.law}"),
      ("table", ["arm", "status"] + names
       + ["R² (log), cells", "R² (log), runs", "converged", "starts in best basin", "points"], rows),
      ("p", "Values are the best of a multi-start Huber fit on log-residuals of single runs; brackets "
            "are 95% bootstrap percentile intervals. A law that fails its checks is shown here for the "
            "record, not as a finding.")]
  warnings = [[f.arm, w] for f in a.arms.values() for w in f.warnings]
  if warnings:
    blocks += [("h", 3, "Fit warnings"), ("table", ["arm", "warning"], warnings)]
  if a.crossings:
    blocks += [("h", 3, "Crossing of the fitted laws per (M, Df)"),
               ("p", "Where the two fitted laws cross along Dp (searched over the measured Dp range "
                     f"{fmt(min(m.dp for m in a.measured if m.stage == 'finetune'))} to "
                     f"{fmt(max(m.dp for m in a.measured if m.stage == 'finetune'))}); "
                     + ("the laws failed their checks, so these crossings are not findings."
                        if any(f.failed for f in a.arms.values()) else
                        "read them against the paired differences above.")),
               ("table", ["M", "Df", "Dp* [95% CI]", "resamples crossing", "below the first root",
                          "the laws' verdict"], [
                   [fmt(b.M), fmt(b.Df),
                    "; ".join(with_ci(*r) for r in b.roots) or "no crossing in range",
                    f"{b.boot_crossing_frac:.0%}" if b.boot_crossing_frac is not None else "–",
                    b.sign_below if b.roots else "–",
                    LAW_VERDICT_WORDS.get(b.verdict, "–")] for b in a.crossings])]
  return blocks


def exponent_blocks(a: StudyAnalysis) -> list[Block]:
  """The one-dimensional laws E(Dp) per (arm, model, Df) (the backtests are in `selection_blocks`)."""
  ex = a.exponents
  if not ex:
    return []
  return [("h", 2, "One-dimensional laws"),
          ("p", "E(Dp) = E_inf + A·Dp^-alpha fitted per model, Df and arm."),
          ("table", ["arm", "model", "Df", "alpha", "E_inf", "R² (log)"],
           [[e.arm, e.model, fmt(e.df), fmt(e.alpha), fmt(e.E_inf), fmt(e.r2_log)] for e in ex])]


# ----------------------------------------------------------------------------- which Dp images

STAGE_WORDS = {"finetune": "downstream", "pretrain": "pretraining task"}


def exponent_text(exponent: dict[str, Any]) -> str:
  """'0.45 [0.41, 0.49]': a fitted Dp exponent with its bootstrap interval ('–' where missing)."""
  value, low, high = (exponent.get(k) for k in ("value", "ci_low", "ci_high"))
  known = lambda v: v is not None and v == v
  ci = f" [{low:.2f}, {high:.2f}]" if known(low) and known(high) else ""
  return (f"{value:.2f}" if known(value) else "–") + ci


def _diff_ci(v: dict[str, Any]) -> str:
  """'+0.041 [+0.012, +0.070]' (the paired difference to random and its interval)."""
  if v["diff"] is None or v["diff"] != v["diff"]:
    return "no pairs"
  if v["ci_low"] is None or v["ci_low"] != v["ci_low"]:
    return f"{v['diff']:+.3f}, no interval ({v['pairs']} pair{'s' * (v['pairs'] != 1)})"
  return f"{v['diff']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]"


def _versus_words(v: dict[str, Any], first: bool) -> str:
  word = {"better": "better than random", "worse": "worse than random"}.get(v["verdict"], "cannot tell")
  return f"{word} at {'Dp ' if first else ''}{v['dp']:,} ({_diff_ci(v)})"


def selection_sentence(sel: str, s: dict[str, Any]) -> str:
  """One pruned selection against random in words: at the smallest and the largest Dp, the decided Dp
  in between, and its Dp exponent ('cannot tell' wherever the interval includes 0)."""
  vs = s["vs_random"]
  if not vs:
    return f"{sel}: no (model, seed) pairs with random; Dp exponent {exponent_text(s['exponent'])}."
  text = f"{sel}: " + ", ".join(_versus_words(v, i == 0) for i, v in enumerate([vs[0], vs[-1]][:len(vs)]))
  middle = vs[1:-1]
  decided = [v for v in middle if v["verdict"] != "cannot tell"]
  if decided:
    text += "; in between, " + ", ".join(_versus_words(v, False) for v in decided)
  elif middle:
    text += f"; cannot tell at the Dp in between ({_list([v['dp'] for v in middle])})"
  return text + f"; Dp exponent {exponent_text(s['exponent'])}."


def _level_of(per_sel: dict[str, Any]) -> tuple[float | None, int]:
  """The interval level of a stage's comparisons and their count m (level = 1 − 0.05 / m)."""
  vs = [v for s in per_sel.values() for v in s["vs_random"]]
  return (vs[0]["level"], len(vs)) if vs else (None, 0)


def _selection_intro(a: StudyAnalysis, per_sel: dict[str, Any]) -> str:
  level, m = _level_of(per_sel)
  pairs = max((v["pairs"] for s in per_sel.values() for v in s["vs_random"]), default=0)
  dps = per_sel[next(iter(per_sel))]["dp"]
  how = (f"with a t-interval over up to {pairs} pairs at level {level:.4f}: Bonferroni over the {m} "
         f"(selection, Dp) comparisons, so the chance that any 'better' or 'worse' below is wrong stays "
         f"under 5%" if level is not None else "(no selection has pairs with random)")
  return (f"The plain arm's pretraining images were chosen at random or by a data-pruning rule "
          f"(config.study.selection: {', '.join(a.config.study.selection)}); nothing else changes: a "
          f"(model, seed) pair shares its initialisation, data order and Df subset across selections. The "
          f"difference E_selection − E_random is taken per pair (downstream: after averaging the pair's fine-tunes "
          f"over Df) and averaged over the pairs (models × seeds), {how}. A selection is better or worse "
          f"than random at a Dp only where that interval excludes 0; otherwise: cannot tell. Dp exponent: "
          f"a of E = A·Dp^-a fitted by least squares on log error to the mean over models and seeds (an "
          f"effective exponent over Dp {_list([min(dps), max(dps)]).replace(', ', '–')}, without an "
          f"irreducible term), with the 95% percentile interval of refits to resampled pairs.")


def _selection_tables(eff: dict[str, Any]) -> list[Block]:
  stages = [st for st in ("finetune", "pretrain") if st in eff]
  dps = sorted({dp for st in stages for s in eff[st]["all"].values() for dp in s["dp"]})
  means, diffs = [], []
  for st in stages:
    for sel, s in eff[st]["all"].items():
      mean = dict(zip(s["dp"], s["mean"]))
      means.append([sel, STAGE_WORDS[st], exponent_text(s["exponent"])]
                   + [f"{mean[d]:.3f}" if d in mean else "–" for d in dps])
      vs = {v["dp"]: v for v in s["vs_random"]}
      if vs:
        diffs.append([sel, STAGE_WORDS[st]] + [f"{_diff_ci(vs[d])} ({vs[d]['pairs']}) {vs[d]['verdict']}"
                                               if d in vs else "–" for d in dps])
  level, _ = _level_of(eff["finetune"]["all"])
  head = [f"Dp = {d:,}" for d in dps]
  return [("h", 3, "Mean error per selection (plain arm; mean over models and seeds, downstream over Df "
                   "first) and Dp exponent [95% bootstrap interval]"),
          ("table", ["selection", "task", "Dp exponent"] + head, means),
          ("h", 3, "Paired differences E_selection − E_random (mean [interval at level "
                   + (f"{level:.4f}" if level is not None else "–") + "] (pairs) verdict; > 0: worse than random)"),
          ("table", ["selection", "task"] + head, diffs)]


def pruning_blocks(a: StudyAnalysis) -> list[Block]:
  """"Which Dp images": each pruned selection against random, paired, at small and large Dp, its Dp
  exponent, and the tables of means and differences (nothing for a study with random subsets only)."""
  eff = a.selection_effects
  if not eff.get("finetune"):
    return []
  down = eff["finetune"]["all"]
  out: list[Block] = [("h", 2, "Which Dp images: pruning against random"), ("p", _selection_intro(a, down))]
  if "random" in down:
    out.append(("p", f"Downstream, against random subsets (Dp exponent {exponent_text(down['random']['exponent'])}):"))
  out += [("p", selection_sentence(sel, s)) for sel, s in down.items() if sel != "random"]
  if "pretrain" in eff:
    pre = eff["pretrain"]["all"]
    level, m = _level_of(pre)
    rule = f" (the same rule, its own {m} comparisons at level {level:.4f})" if level is not None else ""
    out.append(("p", f"Pretraining task{rule}: " + " ".join(
        selection_sentence(sel, s) for sel, s in pre.items() if sel != "random")))
  return out + _selection_tables(eff)
