"""From a study's records to fitted laws, the distillation boundary and the report.

Fine-tune records are fitted per arm with the study's joint law E(Dp, M, Df) (bootstrap CIs over
clusters of records that share a configuration); the boundary Dp* is solved along Dp for every
(M, Df) of the grid, the headline one at the largest model and the smallest Df (where the paper
locates the data-scarce regime); backtests predict each input's largest scale from the smaller ones;
1-D power laws E(Dp) give per-model exponents. fits.json and the report are rebuilt from
records.jsonl every time, so `jaxscale report` can redraw them at any point.
"""

from __future__ import annotations

import logging
from typing import Any

import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from jaxscale import laws
from jaxscale.errors import JaxscaleError
from jaxscale.laws import boundary as boundary_lib
from jaxscale.laws import fit as fit_lib
from jaxscale.laws import forms as forms_lib
from jaxscale.laws import validate
from jaxscale.study import records

logger = logging.getLogger("jaxscale")

INPUTS = {"Dp": "dp", "M": "params", "Df": "df"}
TARGET = "eval_error"
# Errors of exactly 0 (a perfect test set) are clipped up to this before taking logs.
ERROR_FLOOR = 1e-3
ARMS = {"false": "plain", "true": "distilled"}
GRID_POINTS = 48


def finetune_table(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
  """Named columns of the fine-tune records: dp, params, df, distilled, eval_error, model, seed."""
  ft = [r for r in rows if r.get("stage") == "finetune"]
  cols = ("dp", "params", "df", "distilled", "eval_error", "model", "seed")
  return {c: np.asarray([r[c] for r in ft]) for c in cols}


def _band(form, samples: dict[str, np.ndarray], x: dict[str, np.ndarray]):
  """Predictions for every bootstrap sample: float64 [B, G]."""
  with fit_lib.float64():
    p = {k: jnp.asarray(v, jnp.float64)[:, None] for k, v in samples.items()}
    xj = {k: jnp.asarray(v, jnp.float64)[None, :] for k, v in x.items()}
    return np.asarray(form.fn(p, xj))


def _curve(form, fit, boot, x, level=0.95) -> dict[str, Any]:
  """mid [G] from the best fit, lo/hi [G] percentile bands from the bootstrap (None without)."""
  g = len(next(iter(x.values())))
  mid = forms_lib.predict(form.name, fit.params, x).reshape(g)
  if boot is None:
    return {"mid": mid, "lo": None, "hi": None}
  pred = _band(form, {k: boot.params[k] for k in form.param_names}, x)
  q = 100 * (1 - level) / 2
  return {"mid": mid, "lo": np.nanpercentile(pred, q, axis=0), "hi": np.nanpercentile(pred, 100 - q, axis=0)}


def _grid(lo: float, hi: float) -> np.ndarray:
  return np.geomspace(lo / 1.3, hi * 1.3, GRID_POINTS)


def analyze_records(config: ConfigDict, rows: list[dict[str, Any]], progress: bool = True) -> tuple[dict, dict]:
  """Returns (fits.json content, the report's analysis dict) for a study's records."""
  s = config.study
  table = finetune_table(rows)
  n = len(table["dp"])
  form = forms_lib.get(s.law)
  if n < len(form.params) + 1:
    raise JaxscaleError(f"only {n} fine-tune records; the law '{s.law}' needs more than "
                        f"{len(form.params)} per arm: run more cells or use a smaller law")
  arms_present = sorted({bool(v) for v in table["distilled"]})
  two_arms = len(arms_present) == 2
  model_params = sorted({(str(m), int(p)) for m, p in zip(table["model"], table["params"])},
                        key=lambda mp: mp[1])
  m_values = [p for _, p in model_params]
  dp_values = sorted({int(v) for v in table["dp"]})
  df_values = sorted({int(v) for v in table["df"]})
  at = {"M": float(m_values[-1]), "Df": float(df_values[0])}
  details: dict[str, Any] = {}
  content = laws.analyze(table, law=s.law, inputs=INPUTS, target=TARGET,
                         split_by="distilled" if two_arms else None, bootstrap=int(s.bootstrap),
                         boundary="Dp" if two_arms else None, at=at if two_arms else None,
                         floor=ERROR_FLOOR, seed=int(config.seed), progress=progress, details=details)
  single_arm = "distilled" if arms_present == [True] else "plain"  # the group key is "all" then
  arm_of = {k: ARMS.get(k, single_arm) for k in details}
  dp_range = (float(min(dp_values)), float(max(dp_values)))

  # The boundary at every (M, Df) of the grid.
  boundaries = []
  if two_arms:
    (fa, ba, _), (fb, bb, _) = details["false"], details["true"]
    for m in m_values:
      for df in df_values:
        b = boundary_lib.boundary(form, fa.params, fb.params, "Dp", {"M": m, "Df": df}, *dp_range,
                                  boot_a=ba.params if ba else None, boot_b=bb.params if bb else None,
                                  groups=("false", "true"))
        boundaries.append({"M": m, "Df": df, "roots": b["roots"],
                           "sign_below": {1: "distillation helps", -1: "distillation hurts",
                                          0: "equal"}[b["sign_below"]]})
  content["boundaries"] = boundaries

  # Backtests: the largest value of each input held out and predicted.
  bt = validate.backtest(table, law=s.law, inputs=INPUTS, target=TARGET,
                         split_by="distilled" if two_arms else None, floor=ERROR_FLOOR,
                         leave_one_out=False, seed=int(config.seed))
  backtests = [{"arm": arm_of.get(r["group"], r["group"]), "held_out": f"{r['input']} = {r['value']:g}",
                "n": r.get("n_test"), "log_rmse": r.get("log_rmse"), "are": r.get("are"),
                "error": r.get("error")} for r in bt["rows"]]
  content["backtests"] = bt

  # 1-D laws: E(Dp) per arm, model and Df.
  exponents = []
  for key, arm in arm_of.items():
    for model, m in model_params:
      for df in df_values:
        mask = ((table["distilled"].astype(bool) == (key == "true")) | (not two_arms)) & \
               (table["params"] == m) & (table["df"] == df)
        dps = table["dp"][mask].astype(float)
        if len(np.unique(dps)) < 4:  # 3 parameters need at least 4 distinct Dp
          continue
        y = np.maximum(table[TARGET][mask].astype(float), ERROR_FLOOR)
        try:
          r = fit_lib.fit("power", {"x": dps}, y, max_starts=256, seed=int(config.seed))
        except JaxscaleError as e:
          logger.warning("1-D fit %s %s Df=%d skipped: %s", arm, model, df, e)
          continue
        exponents.append({"arm": arm, "model": model, "df": df, "alpha": r.params["alpha"],
                          "E_inf": r.params["E_inf"], "r2_log": r.r2_log})
  content["exponents"] = exponents

  analysis = _report_numbers(config, rows, table, form, details, arm_of, model_params, dp_values,
                             df_values, at, content, boundaries, backtests, exponents)
  return content, analysis


def _report_numbers(config, rows, table, form, details, arm_of, model_params, dp_values, df_values,
                    at, content, boundaries, backtests, exponents) -> dict[str, Any]:
  """Curves, points and text the report draws (see `jaxscale.report`)."""
  s = config.study
  m_values = [p for _, p in model_params]
  name_of = {p: m for m, p in model_params}
  fits = {arm_of[k]: {"params": g["params"], "stats": g["statistics"], "warnings": g["warnings"]}
          for k, g in content["groups"].items()}
  curves = {}
  xs = {"dp": _grid(min(dp_values), max(dp_values)), "df": _grid(min(df_values), max(df_values)),
        "M": _grid(min(m_values), max(m_values))}
  for axis, panel_key, line_key, panel_vals, line_vals in (
      ("dp", "df", "M", df_values, m_values), ("df", "dp", "M", dp_values, m_values),
      ("M", "df", "dp", df_values, dp_values)):
    panels = []
    for pv in panel_vals:
      lines = []
      for lv in line_vals:
        for key, (fit, boot, _) in details.items():
          x = {"Dp": None, "M": None, "Df": None}
          x[{"dp": "Dp", "df": "Df", "M": "M"}[axis]] = xs[axis]
          x[{"dp": "Dp", "df": "Df", "M": "M"}[panel_key]] = np.full(GRID_POINTS, float(pv))
          x[{"dp": "Dp", "df": "Df", "M": "M"}[line_key]] = np.full(GRID_POINTS, float(lv))
          c = _curve(form, fit, boot, x)
          label = name_of[lv] if line_key == "M" else f"Dp={lv}"
          lines.append({line_key: lv, "arm": arm_of[key], "label": label, **c})
      panels.append({panel_key: pv, "lines": lines})
    curves[axis] = {"x": xs[axis], "panels": panels}

  points = []
  for i in range(len(table["dp"])):
    key = "true" if bool(table["distilled"][i]) else "false"
    key = key if key in details else next(iter(details))
    fit = details[key][0]
    x = {"Dp": float(table["dp"][i]), "M": float(table["params"][i]), "Df": float(table["df"][i])}
    points.append({"dp": int(table["dp"][i]), "df": int(table["df"][i]), "M": int(table["params"][i]),
                   "model": str(table["model"][i]), "arm": arm_of[key], "seed": int(table["seed"][i]),
                   "error": max(float(table[TARGET][i]), ERROR_FLOOR),
                   "pred": float(forms_lib.predict(form.name, fit.params, x).reshape(-1)[0])})

  delta = None
  headline = content.get("boundary")
  if headline is not None:
    (fa, ba, _), (fb, bb, _) = details["false"], details["true"]
    x = {"Dp": xs["dp"], "M": np.full(GRID_POINTS, at["M"]), "Df": np.full(GRID_POINTS, at["Df"])}
    mid = _curve(form, fa, None, x)["mid"] - _curve(form, fb, None, x)["mid"]
    lo = hi = None
    if ba is not None and bb is not None:
      k = min(len(ba.u), len(bb.u))
      diff = (_band(form, {n: ba.params[n][:k] for n in form.param_names}, x)
              - _band(form, {n: bb.params[n][:k] for n in form.param_names}, x))
      lo, hi = np.nanpercentile(diff, 2.5, axis=0), np.nanpercentile(diff, 97.5, axis=0)
    measured = []
    model_head = name_of[int(at["M"])]
    for dp in dp_values:
      sel = lambda d: [p["error"] for p in points if p["dp"] == dp and p["model"] == model_head
                       and p["df"] == int(at["Df"]) and p["arm"] == d]
      a, b = sel("plain"), sel("distilled")
      if a and b:
        measured.append({"dp": dp, "delta": float(np.mean(a) - np.mean(b))})
    delta = {"x": xs["dp"], "mid": mid, "lo": lo, "hi": hi, "at": at, "roots": headline["roots"],
             "measured": measured}

  teacher = "none (plain arm only)"
  if "distilled" in s.arms:
    from jaxscale.study import grid
    t = grid.teacher_of(s)
    teacher = f"{t.model} pretrained on {t.dp:,} images"
  study = {"pretrain_dataset": config.pretrain.dataset, "finetune_dataset": config.finetune.dataset,
           "models": model_params, "dp": dp_values, "df": df_values, "arms": list(s.arms),
           "seeds": list(s.seeds), "teacher": teacher, "records": len(rows),
           "wall_s": float(sum(r.get("wall_s", 0.0) for r in rows))}
  return {"study": study, "summary": summary_text(content, at, name_of, (min(dp_values), max(dp_values))),
          "boundary_text": boundary_text(headline, at, name_of, (min(dp_values), max(dp_values))),
          "law": {"name": form.name, "formula": form.formula, "param_names": list(form.param_names)},
          "fits": fits, "curves": curves, "points": points, "delta": delta, "boundaries": boundaries,
          "backtests": [b for b in backtests if b.get("error") is None], "exponents": exponents}


def _ci(root) -> str:
  if root.get("ci_low") is None or root.get("ci_high") is None:
    return "no bootstrap CI"
  return f"95% CI {root['ci_low']:,.0f} to {root['ci_high']:,.0f}"


def boundary_text(b, at, name_of, dp_range) -> str:
  """One paragraph on the crossing(s) at the headline (M, Df)."""
  if b is None:
    return "The study has one arm only, so there is no distillation boundary to solve for."
  where = f"For {name_of[int(at['M'])]} (M = {at['M']:,.0f} parameters) fine-tuned on Df = {at['Df']:,.0f} images"
  roots = b["roots"]
  if not roots:
    side = {1: "distillation lowers the error", -1: "distillation raises the error", 0: "the arms are equal"}
    return (f"{where}, the fitted curves do not cross for Dp in [{dp_range[0]:,}, {dp_range[1]:,}]: "
            f"{side[b['sign_below']]} throughout the measured range (no crossing in range).")
  parts = [f"Dp* = {r['value']:,.0f} ({_ci(r)})" for r in roots]
  below, above = (("distillation helps", "the plain arm is better") if b["sign_below"] > 0
                  else ("distillation hurts", "distillation helps"))
  return (f"{where}, the distilled and plain error curves cross at {'; '.join(parts)}. Below the "
          f"{'first crossing' if len(roots) > 1 else 'crossing'} {below}; above it {above}.")


def summary_text(content, at, name_of, dp_range) -> str:
  groups = content["groups"]
  fit_bits = []
  for key, g in groups.items():
    st = g["statistics"]
    fit_bits.append(f"{ARMS.get(key, key)} arm: {g['n']} fine-tunes, R² (log) {st['r2_log']:.3f}")
  text = f"The joint law {content['law']} was fitted per arm ({'; '.join(fit_bits)}). "
  text += boundary_text(content.get("boundary"), at, name_of, dp_range)
  n_warn = sum(len(g["warnings"]) for g in groups.values())
  if n_warn:
    text += (f" The fits carry {n_warn} warning(s) (see below): read the parameters and Dp* as "
             f"tentative until they are resolved.")
  return text


def analyze_study(config: ConfigDict, workdir: str, progress: bool = True) -> str:
  """Fits the study in `workdir`, writes fits.json and the report; returns the headline text."""
  from jaxscale.report import render
  from jaxscale.study.runner import paths
  p = paths(workdir)
  rows = records.read(p["records"])
  if not any(r.get("stage") == "finetune" for r in rows):
    raise JaxscaleError(f"{p['records']} has no fine-tune records; run `jaxscale study` on this workdir first")
  content, analysis = analyze_records(config, rows, progress=progress)
  laws.write_fits(p["fits"], content, force=True)  # derived from records: always rebuilt
  out = render.write_report(analysis, p["report"])
  return (f"{analysis['summary']}\nfits: {p['fits']}\nreport: {out['html']} (and {out['markdown']})")
