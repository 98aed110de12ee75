"""PNG figures of a study, drawn from the numbers `jaxscale.study.analysis` computed.

Every function takes the analysis dict (see `jaxscale.study.analysis.analyze_study`) and a
path, draws with matplotlib's Agg backend and writes one PNG. Plain arm: solid lines and circles;
distilled arm: dashed lines and triangles; one colour per model size; shaded bands are bootstrap
percentile intervals of the fitted law.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ARM_STYLE = {"plain": dict(ls="-", marker="o"), "distilled": dict(ls="--", marker="^")}


def _colors(n: int):
  cmap = plt.get_cmap("viridis")
  return [cmap(v) for v in np.linspace(0.1, 0.85, max(n, 1))]


def _points(analysis, **match):
  return [p for p in analysis["points"] if all(p[k] == v for k, v in match.items())]


def _save(fig, path: str) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _panels(analysis, axis: str, panel_key: str, line_key: str, xlabel: str, title_fmt: str, path: str) -> str:
  """Error vs `axis` with one panel per value of `panel_key` and one line per `line_key` and arm."""
  curves = analysis["curves"][axis]
  panels = curves["panels"]
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False, sharey=True)
  line_values = sorted({line[line_key] for panel in panels for line in panel["lines"]})
  color = dict(zip(line_values, _colors(len(line_values))))
  for ax, panel in zip(axes[0], panels):
    x = np.asarray(curves["x"])
    for line in panel["lines"]:
      c = color[line[line_key]]
      style = ARM_STYLE[line["arm"]]
      ax.plot(x, line["mid"], color=c, ls=style["ls"], lw=1.5,
              label=f"{line['label']} ({line['arm']})")
      if line.get("lo") is not None:
        ax.fill_between(x, line["lo"], line["hi"], color=c, alpha=0.12, lw=0)
      pts = _points(analysis, arm=line["arm"], **{line_key: line[line_key], panel_key: panel[panel_key]})
      if pts:
        ax.scatter([p[axis] for p in pts], [p["error"] for p in pts], color=c, marker=style["marker"],
                   s=18, zorder=3, edgecolors="none")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title_fmt.format(panel[panel_key]))
    ax.grid(True, which="both", alpha=0.25)
  axes[0][0].set_ylabel("downstream top-1 error")
  axes[0][-1].legend(fontsize=6.5, loc="best")
  return _save(fig, path)


def error_vs_dp(analysis, path: str) -> str:
  """Error vs pretraining images Dp, one line per model size and arm, one panel per Df."""
  return _panels(analysis, "dp", "df", "M", "pretraining images Dp", "Df = {}", path)


def error_vs_df(analysis, path: str) -> str:
  """Error vs downstream images Df, one line per model size and arm, one panel per Dp."""
  return _panels(analysis, "df", "dp", "M", "fine-tuning images Df", "Dp = {}", path)


def error_vs_m(analysis, path: str) -> str:
  """Error vs parameters M, one line per Dp and arm, one panel per Df."""
  return _panels(analysis, "M", "df", "dp", "parameters M", "Df = {}", path)


def delta_e(analysis, path: str) -> str:
  """Delta E(Dp) = E_plain - E_distilled with its band, the crossing(s) and their CIs."""
  d = analysis["delta"]
  x = np.asarray(d["x"])
  fig, ax = plt.subplots(figsize=(5.6, 3.8))
  ax.axhline(0.0, color="k", lw=0.8)
  ax.plot(x, d["mid"], color="C3", lw=1.8, label="fitted ΔE = E_plain − E_distilled")
  if d.get("lo") is not None:
    ax.fill_between(x, d["lo"], d["hi"], color="C3", alpha=0.15, lw=0, label="95% bootstrap band")
  if d.get("measured"):
    ax.scatter([m["dp"] for m in d["measured"]], [m["delta"] for m in d["measured"]], color="k", s=16,
               zorder=3, label="measured (seed mean)")
  for root in d.get("roots", []):
    ax.axvline(root["value"], color="C0", lw=1.2)
    if root.get("ci_low") is not None and root.get("ci_high") is not None:
      ax.axvspan(root["ci_low"], root["ci_high"], color="C0", alpha=0.12)
    ax.annotate(f"Dp* ≈ {root['value']:.3g}", (root["value"], 0), textcoords="offset points",
                xytext=(4, 8), fontsize=8, color="C0")
  ax.set_xscale("log")
  ax.set_xlabel("pretraining images Dp")
  ax.set_ylabel("ΔE (positive: distillation helps)")
  at = d["at"]
  ax.set_title(f"distillation boundary at M = {at['M']:.3g}, Df = {at['Df']:.0f}", fontsize=9)
  ax.grid(True, alpha=0.25)
  ax.legend(fontsize=7)
  return _save(fig, path)


def predicted_vs_measured(analysis, path: str) -> str:
  """Each fine-tune's measured error against the joint law's prediction, per arm."""
  fig, ax = plt.subplots(figsize=(4.2, 4.0))
  values = []
  for arm, style in ARM_STYLE.items():
    pts = [p for p in analysis["points"] if p["arm"] == arm and p.get("pred") is not None]
    if pts:
      ax.scatter([p["pred"] for p in pts], [p["error"] for p in pts], marker=style["marker"], s=16, label=arm)
      values += [p["pred"] for p in pts] + [p["error"] for p in pts]
  if values:
    lo, hi = min(values) * 0.8, max(values) * 1.25
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("predicted error")
  ax.set_ylabel("measured error")
  ax.grid(True, which="both", alpha=0.25)
  ax.legend(fontsize=8)
  return _save(fig, path)


FIGURES = {
    "error_vs_dp.png": error_vs_dp,
    "error_vs_df.png": error_vs_df,
    "error_vs_m.png": error_vs_m,
    "delta_e.png": delta_e,
    "predicted_vs_measured.png": predicted_vs_measured,
}
