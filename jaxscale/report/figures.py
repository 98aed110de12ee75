"""The report's figures: for each, the numbers it draws and its caption, side by side.

A figure is a `Figure(name, numbers, draw, caption)`: `numbers(analysis)` builds plain lists from a
`jaxscale.study.analysis.StudyAnalysis` (None: nothing to draw), `draw(numbers, path)` is in
`plots`, and `caption(analysis, numbers)` says what the marks are, from the same numbers. One
figure answers one question.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from jaxscale import laws
from jaxscale.report import plots, sections
from jaxscale.study import law_selection
from jaxscale.study.analysis import StudyAnalysis
from jaxscale.study.verdicts import TARGET, Measured

CURVE_POINTS = 40
AXIS_NAME = {"dp": "Dp", "M": "M", "df": "Df"}


@dataclasses.dataclass(frozen=True)
class Figure:
  name: str
  numbers: Callable[[StudyAnalysis], dict[str, Any] | None]
  draw: Callable[[dict[str, Any], str], str]
  caption: Callable[[StudyAnalysis, dict[str, Any]], str]


def _finetune(a: StudyAnalysis, arm: str | None = None) -> list[Measured]:
  return [m for m in a.measured if m.stage == "finetune" and (arm is None or m.arm == arm)]


def _value(m: Measured, axis: str) -> int:
  return {"dp": m.dp, "df": m.df, "M": m.params}[axis]


def _law_curve(a: StudyAnalysis, arm: str, axis: str, fixed: dict[str, float],
               values: list[int]) -> dict[str, list[float]] | None:
  """The fitted law of `arm` along `axis` over the measured range; None when it failed its checks.
  A law on examples seen is drawn at the fine-tunes' final T at each Df (`law_selection.seen_at`)."""
  fit = a.arms.get(arm)
  if fit is None or fit.failed or len(values) < 2:
    return None
  x = np.geomspace(min(values), max(values), CURVE_POINTS)
  inputs = {AXIS_NAME[k]: np.full_like(x, v) for k, v in fixed.items()}
  inputs[AXIS_NAME[axis]] = x
  if law_selection.reads_seen(a.law):
    inputs["T"] = law_selection.seen_at(_final_table(a), inputs["Df"])
  return {"x": x.tolist(), "y": laws.predict(a.law, fit.params, inputs).tolist()}


def _final_table(a: StudyAnalysis) -> dict[str, np.ndarray]:
  """The fine-tunes' final errors, with each run's examples seen where the reported law reads them."""
  return law_selection.finetune_table(a.rows, seen=law_selection.reads_seen(a.law))


def _failed_note(a: StudyAnalysis) -> str | None:
  """A short label for the panels (the reasons are in the caption and the law section)."""
  failed = [f"{arm}: {len(f.failed)} check{'s' if len(f.failed) > 1 else ''} failed"
            for arm, f in a.arms.items() if f.failed]
  return ("law not drawn (failed)\n" + "\n".join(failed)) if failed else None


def _measured_panels(a: StudyAnalysis, axis: str, panel_axis: str, key_axis: str) -> dict[str, Any]:
  """Measured fine-tune means along `axis`, a panel per `panel_axis` value, a series per `key_axis`."""
  rows = _finetune(a)
  values = {ax: sorted({_value(m, ax) for m in rows}) for ax in ("dp", "df", "M")}
  name_of = {m.params: m.model for m in rows}
  panels = []
  for pv in values[panel_axis]:
    series = []
    for kv in values[key_axis]:
      for arm in ("plain", "distilled"):
        ms = sorted((m for m in rows if m.arm == arm and _value(m, panel_axis) == pv
                     and _value(m, key_axis) == kv), key=lambda m: _value(m, axis))
        if not ms:
          continue
        series.append({"key": kv, "arm": arm, "x": [_value(m, axis) for m in ms],
                       "mean": [m.mean for m in ms],
                       "lo": [m.ci[0] if m.ci else m.mean for m in ms],
                       "hi": [m.ci[1] if m.ci else m.mean for m in ms],
                       "curve": _law_curve(a, arm, axis, {panel_axis: pv, key_axis: kv}, values[axis])})
    title = f"{AXIS_NAME[panel_axis]} = {pv:,}" if panel_axis != "M" else f"{name_of[pv]} (M = {pv:,})"
    panels.append({"title": title, "series": series, "note": _failed_note(a)})
  keys = [(kv, f"{name_of[kv]} (M = {plots.short(kv)})" if key_axis == "M" else f"{AXIS_NAME[key_axis]} = {kv:,}")
          for kv in values[key_axis]]
  labels = {"dp": "pretraining images Dp", "df": "fine-tuning images Df", "M": "parameters M (as fitted)"}
  return {"panels": panels, "keys": keys, "xticks": values[axis], "xlabel": labels[axis],
          "ylabel": "downstream top-1 error", "ncols": 2 if len(panels) == 4 else 3}


def _law_words(a: StudyAnalysis) -> str:
  if all(not f.failed for f in a.arms.values()):
    return (f"thin lines: the joint law {a.law} ({a.selection.origin()}) fitted per arm, drawn only "
            f"over the measured range")
  return (f"the joint law {a.law} is not drawn because it failed its checks "
          f"({'; '.join(f'{arm}: ' + ', '.join(f.failed) for arm, f in a.arms.items() if f.failed)})")


# ----------------------------------------------------------------------------- ΔE per model size

def _plain_pairs(a: StudyAnalysis) -> list:
  """The distilled-vs-plain cells (the figure's; the other comparisons are in the tables)."""
  return [c for c in a.paired if c.comparison == "distilled_vs_plain"]


def delta_numbers(a: StudyAnalysis) -> dict[str, Any] | None:
  paired = _plain_pairs(a)
  if not paired:
    return None
  models = sorted({(c.params, c.model) for c in paired})
  keys = (["pretrain"] if any(c.stage == "pretrain" for c in paired) else []) + \
      sorted({c.df for c in paired if c.stage == "finetune"})
  panels = []
  for params, model in models:
    series = []
    for c in (c for c in paired if c.model == model):
      stated = c.crossing is not None and c.verdict.endswith("below_dp_star")
      series.append({"key": "pretrain" if c.stage == "pretrain" else c.df,
                     "points": [{"dp": p.dp, "mean": p.mean_delta, "lo": p.ci[0] if p.ci else None,
                                 "hi": p.ci[1] if p.ci else None} for p in c.points],
                     "seeds": [(p.dp, d) for p in c.points for d in p.deltas],
                     "dp_star": c.crossing.dp_star if stated else None})
    series.sort(key=lambda s: keys.index(s["key"]))
    panels.append({"title": f"{model} (M = {params:,})", "series": series})
  labels = [(k, "pretraining task" if k == "pretrain" else f"downstream, Df = {k:,}") for k in keys]
  return {"panels": panels, "keys": labels, "dp": sorted({p.dp for c in paired for p in c.points}),
          "margin": a.rule["margin"]}


def delta_caption(a: StudyAnalysis, n: dict[str, Any]) -> str:
  seeds = max(p.n_pairs for c in _plain_pairs(a) for p in c.points)
  return (f"Does distillation help, and up to which Dp? Paired differences ΔE = E_plain − E_distilled "
          f"of the same (model, Dp, Df, seed), one panel per model size. Diamonds: mean over up to "
          f"{seeds} seed pairs with its t-interval at the study-wide level "
          f"{a.rule['point_level']:.4f} (see 'How sure'); the band ±{a.rule['margin']:g} is the "
          f"margin; faint dots: single pairs; "
          f"series are shifted slightly along Dp to keep them apart. A dashed vertical line marks "
          f"the crossing Dp* only where the verdict states one.")


# ----------------------------------------------------------------------------- error vs Dp, Df, M

def error_vs_dp_numbers(a: StudyAnalysis) -> dict[str, Any]:
  return _measured_panels(a, "dp", "df", "M")


def error_vs_dp_caption(a: StudyAnalysis, n: dict[str, Any]) -> str:
  return (f"How does downstream error fall with pretraining data? Markers: measured mean over seeds "
          f"with 95% CI; {_law_words(a)}.")


def error_vs_df_numbers(a: StudyAnalysis) -> dict[str, Any]:
  return _measured_panels(a, "df", "dp", "M")


def error_vs_df_caption(a: StudyAnalysis, n: dict[str, Any]) -> str:
  return (f"How does downstream error fall with fine-tuning data? One panel per Dp. Markers: "
          f"measured mean over seeds with 95% CI; {_law_words(a)}.")


def error_vs_m_numbers(a: StudyAnalysis) -> dict[str, Any]:
  return _measured_panels(a, "M", "df", "dp")


def error_vs_m_caption(a: StudyAnalysis, n: dict[str, Any]) -> str:
  return (f"Does a larger model help? M is the parameter count as fitted (the fine-tuned model, "
          f"downstream head included). Markers: measured mean over seeds with 95% CI; {_law_words(a)}.")


# ----------------------------------------------------------------------------- pretraining

def pretrain_numbers(a: StudyAnalysis) -> dict[str, Any] | None:
  rows = [m for m in a.measured if m.stage == "pretrain" and m.arm != "teacher"]
  if not rows:
    return None
  models = sorted({(m.params, m.model) for m in rows})
  series = []
  for params, model in models:
    for arm in ("plain", "distilled"):
      ms = sorted((m for m in rows if m.model == model and m.arm == arm), key=lambda m: m.dp)
      if ms:
        series.append({"key": params, "arm": arm, "x": [m.dp for m in ms], "mean": [m.mean for m in ms],
                       "lo": [m.ci[0] if m.ci else m.mean for m in ms],
                       "hi": [m.ci[1] if m.ci else m.mean for m in ms], "curve": None})
  hlines = [{"y": t.mean, "label": f"teacher {t.model} (Dp = {t.dp:,}): {t.mean:.3f}", "style": "-."}
            for t in a.measured if t.arm == "teacher"]
  chance = sections.chance_error(a, "pretrain")
  if chance is not None:
    hlines.append({"y": chance, "label": f"chance: {chance:.3f}", "style": ":"})
  return {"panels": [{"title": "pretraining task", "series": series}], "ncols": 1,
          "keys": [(p, f"{m} (M = {plots.short(p)})") for p, m in models],
          "xticks": sorted({m.dp for m in rows}), "xlabel": "pretraining images Dp",
          "ylabel": "pretraining-task top-1 error", "hlines": hlines}


def pretrain_caption(a: StudyAnalysis, n: dict[str, Any]) -> str:
  return ("How far did pretraining get? Error of the pretrained students on the pretraining task's "
          "test split (before fine-tuning), mean over seeds with 95% CI; the dash-dotted line is the "
          "teacher's error on the same split.")


# ----------------------------------------------------------------------------- the law's fit

def predicted_numbers(a: StudyAnalysis) -> dict[str, Any] | None:
  """Per arm: each fine-tune's (prediction, measured error) and each (M, Dp, Df) cell's
  (prediction, mean error over seeds), the law being the reported one."""
  panels = []
  for arm, fit in a.arms.items():
    table = law_selection.arm_table(_final_table(a), arm)
    if not len(table["dp"]):
      continue
    pred = laws.predict(a.law, fit.params, law_selection.law_inputs(table))
    cells = law_selection.cell_means(table)
    cell_pred = laws.predict(a.law, fit.params, law_selection.law_inputs(cells))
    r2 = fit.statistics.get("r2_log")
    status = "failed" if fit.failed else "passes"
    r2c = f"{fit.r2_cells:.2f} cells, " if fit.r2_cells is not None else ""
    panels.append({"arm": arm, "title": f"{arm} arm: R² (log) {r2c}{r2:.2f} runs; {status}",
                   "pred": pred.tolist(),
                   "measured": np.maximum(table[TARGET].astype(float), law_selection.ERROR_FLOOR).tolist(),
                   "cell_pred": cell_pred.tolist(), "cell_measured": cells[TARGET].tolist()})
  return {"panels": panels} if panels else None


def predicted_caption(a: StudyAnalysis, n: dict[str, Any]) -> str:
  return (f"How well does the joint law {a.law} ({a.selection.origin()}) describe the fine-tunes? "
          f"Measured error against the fitted law's prediction (log axes): small markers are single "
          f"runs, large outlined ones the mean over seeds of each (M, Dp, Df) cell, on which the law's "
          f"R² check is made; points on the diagonal are fitted exactly.")


def curves_numbers(a: StudyAnalysis) -> dict[str, Any] | None:
  """Pretraining learning curves (`analysis.curve_summary`): per model the smallest and the largest
  Dp, every arm; None without curves."""
  fig = (a.curves.get("pretrain") or {}).get("figure")
  if not fig:
    return None
  models = sorted(fig, key=lambda m: next((x.params for x in a.measured if x.model == m), 0))
  panels, dps = [], set()
  for model in models:
    series = []
    for (dp, arm), c in sorted(fig[model]["curves"].items(), key=lambda kv: (kv[0][0], kv[0][1] != "plain")):
      if len(c["examples"]) < 2 or arm not in plots.ARM_STYLE:
        continue
      dps.add(dp)
      series.append({"dp": dp, "arm": arm, "x": c["examples"], "mean": c["mean"], "low": c["low"],
                     "high": c["high"], "seeds": c["seeds"]})
    if series:
      panels.append({"title": model, "series": series})
  return {"panels": panels, "dp": sorted(dps)} if panels else None


def curves_caption(a: StudyAnalysis, n: dict[str, Any]) -> str:
  seeds = max(s["seeds"] for p in n["panels"] for s in p["series"])
  return (f"Does the budget bind? Pretraining error against images seen, one panel per model, at the "
          f"smallest and the largest Dp ({', '.join(f'{d:,}' for d in n['dp'])}), every arm: lines are "
          f"means over up to {seeds} seeds, shaded the 95% t band. Points before the end are measured on "
          f"a fixed subset of {a.config.pretrain.eval_subset} test images (config.pretrain.eval_at), the "
          f"last on the whole test split.")


# ----------------------------------------------------------------------------- which Dp images

def exponent_label(sel: str, exponent: dict[str, float]) -> str:
  """'prototypes_hard: Dp exponent 0.45 [0.41, 0.49]' (the fitted a of E = A·Dp^-a, 95% bootstrap CI)."""
  return f"{sel}: Dp exponent {sections.exponent_text(exponent)}"


def _selection_series(per_sel: dict[str, Any]) -> list[dict[str, Any]]:
  """A series per selection: its means over seeds; bars of a pruned selection: random's mean plus the
  paired interval of E_selection − E_random (none where it has no interval)."""
  base = dict(zip(per_sel["random"]["dp"], per_sel["random"]["mean"])) if "random" in per_sel else {}
  series = []
  for sel, s in per_sel.items():
    vs = {v["dp"]: v for v in s["vs_random"]}
    lo, hi = [], []
    for dp, m in zip(s["dp"], s["mean"]):
      v = vs.get(dp)
      ok = v is not None and dp in base and np.isfinite([v["ci_low"], v["ci_high"]]).all()
      lo.append(base[dp] + v["ci_low"] if ok else m)
      hi.append(base[dp] + v["ci_high"] if ok else m)
    series.append({"key": sel, "arm": "plain", "x": s["dp"], "mean": s["mean"], "lo": lo, "hi": hi, "curve": None})
  return series


def selection_numbers(a: StudyAnalysis) -> dict[str, Any] | None:
  """Error against Dp per selection: a panel per model (downstream, then the pretraining task); None
  for a study with random subsets only."""
  eff = a.selection_effects
  if not eff.get("finetune"):
    return None
  titles = {"finetune": "downstream, mean over Df", "pretrain": "pretraining task"}
  panels = [{"title": f"{model}: {titles[stage]}", "series": _selection_series(per_sel),
             "ylabel": "downstream top-1 error" if stage == "finetune" else "pretraining-task top-1 error"}
            for stage in ("finetune", "pretrain") if stage in eff
            for model, per_sel in eff[stage]["by_model"].items()]
  pooled = eff["finetune"]["all"]
  level = next((v["level"] for s in pooled.values() for v in s["vs_random"]), None)
  return {"panels": panels, "ncols": len(eff["finetune"]["by_model"]),
          "keys": [(sel, exponent_label(sel, s["exponent"])) for sel, s in pooled.items()],
          "xticks": sorted({dp for s in pooled.values() for dp in s["dp"]}),
          "xlabel": "pretraining images Dp", "level": level}


def selection_caption(a: StudyAnalysis, n: dict[str, Any]) -> str:
  level = f"at level {n['level']:.4f} (Bonferroni, see the section)" if n["level"] is not None else ""
  return (f"Which Dp images: does choosing them by a data-pruning rule change the error? The plain arm, "
          f"one line per selection of the pretraining images, one panel per model (downstream error "
          f"averaged over Df first; the pretraining task's panels, when shown, below). Markers: mean over "
          f"seeds; the bars of a pruned selection are random's mean plus the paired interval of "
          f"E_selection − E_random over (model, seed) pairs of that model {level}, so a bar that "
          f"crosses the random line reads 'cannot tell'. The legend gives each selection's Dp exponent "
          f"(a of E = A·Dp^-a fitted to the mean over models and seeds, downstream) with its 95% "
          f"bootstrap interval.")


FIGURES = (
    Figure("delta_e.png", delta_numbers, plots.paired_differences, delta_caption),
    Figure("error_vs_dp.png", error_vs_dp_numbers, plots.measured_panels, error_vs_dp_caption),
    Figure("error_vs_df.png", error_vs_df_numbers, plots.measured_panels, error_vs_df_caption),
    Figure("error_vs_m.png", error_vs_m_numbers, plots.measured_panels, error_vs_m_caption),
    Figure("pretrain_error.png", pretrain_numbers, plots.measured_panels, pretrain_caption),
    Figure("predicted_vs_measured.png", predicted_numbers, plots.predicted_vs_measured, predicted_caption),
    Figure("learning_curves.png", curves_numbers, plots.learning_curves, curves_caption),
    Figure("error_vs_dp_selection.png", selection_numbers, plots.selection_panels, selection_caption),
)
