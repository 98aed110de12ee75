"""Drawing only: PNG figures from plain numbers (lists and dicts built in `report.figures`).

Conventions shared by every figure: one colour per series (a model size, a Dp or a Df), the
plain arm drawn with circles and solid lines, the distilled arm with triangles and dashed lines;
markers are measured means over seeds with 95% CI error bars; a fitted law is a thin line drawn
only over the measured range. Every mark is named in the figure's legend, which sits below the
panels so it never covers data. Figures are sized for a page 1,100 px wide at 100 dpi.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

ARM_STYLE = {"plain": dict(ls="-", marker="o"), "distilled": dict(ls="--", marker="^"),
             "smoothed": dict(ls="-.", marker="v"), "teacher": dict(ls=":", marker="s")}
DPI = 100
PANEL_W, PANEL_H = 3.6, 3.0
FONT = 9


def colors(n: int) -> list:
  """n colours of the viridis map, dark to light (yellow end left out: too faint on white)."""
  cmap = plt.get_cmap("viridis")
  return [cmap(v) for v in np.linspace(0.05, 0.8, max(n, 1))]


def short(v: float) -> str:
  """Tick labels: 60K, 1.2M, 300."""
  if v >= 1e6:
    return f"{v / 1e6:.3g}M"
  if v >= 1e4:
    return f"{v / 1e3:.3g}K"
  return f"{v:,.0f}"


def _figure(n_panels: int, ncols: int, sharey: bool = True):
  ncols = max(1, min(ncols, n_panels))
  nrows = -(-n_panels // ncols)
  width = max(PANEL_W * ncols + 0.6, 6.0)  # room for a two-column legend under one panel
  fig, axes = plt.subplots(nrows, ncols, figsize=(width, PANEL_H * nrows + 0.9),
                           squeeze=False, sharey=sharey)
  flat = list(axes.ravel())
  for ax in flat[n_panels:]:
    ax.set_visible(False)
  return fig, flat[:n_panels]


def _log_ticks(ax, axis: str, values: Sequence[float]) -> None:
  """Ticks only at the measured values, so labels never crowd or overlap."""
  target = ax.xaxis if axis == "x" else ax.yaxis
  target.set_major_locator(FixedLocator(list(values)))
  target.set_minor_locator(NullLocator())
  target.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: short(v)))


def _finish(fig, path: str, handles: list, ncol: int) -> str:
  """Puts the legend below the panels (its rows reserved in inches), saves the PNG, closes."""
  ncol = max(1, min(ncol, len(handles)))
  rows = -(-len(handles) // ncol)
  fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=FONT, frameon=False)
  bottom = (0.1 + 0.2 * rows) / fig.get_figheight()
  fig.tight_layout(rect=(0, bottom, 1, 1))
  fig.savefig(path, dpi=DPI)
  plt.close(fig)
  return path


def _style_axes(ax, title: str, xlabel: str, xticks: Sequence[float]) -> None:
  ax.set_xscale("log")
  _log_ticks(ax, "x", xticks)
  ax.set_title(title, fontsize=FONT + 1)
  ax.set_xlabel(xlabel, fontsize=FONT)
  ax.tick_params(labelsize=FONT)
  ax.grid(True, alpha=0.25)


def _means(ax, s: Mapping[str, Any], color, shift: float) -> None:
  """One series: means with CI bars (joined by a thin line when no law curve is drawn), its curve."""
  style = ARM_STYLE[s["arm"]]
  x, m = np.asarray(s["x"], float), np.asarray(s["mean"], float)
  err = np.abs(np.vstack([m - np.asarray(s["lo"], float), np.asarray(s["hi"], float) - m]))
  ax.errorbar(x * shift, m, yerr=err, color=color, marker=style["marker"], ms=5, capsize=2,
              elinewidth=0.9, zorder=3, ls="none" if s.get("curve") else style["ls"], lw=0.7)
  if s.get("curve"):
    ax.plot(s["curve"]["x"], s["curve"]["y"], color=color, ls=style["ls"], lw=1.1, alpha=0.9)


def _note(ax, text: str | None) -> None:
  if text:
    ax.text(0.03, 0.03, text, transform=ax.transAxes, fontsize=FONT - 1, color="C3", va="bottom",
            bbox=dict(fc="white", ec="C3", lw=0.6, alpha=0.9))


def _means_legend(numbers: Mapping[str, Any], color: Mapping, arms: Sequence[str], curves: bool) -> list:
  """Legend entries: a colour per key, a marker per arm, the law's line per arm, each reference line."""
  handles = [Line2D([], [], color=color[k], marker="s", ls="none", ms=7, label=label)
             for k, label in numbers["keys"]]
  handles += [Line2D([], [], color="0.3", marker=ARM_STYLE[a]["marker"], lw=0.7,
                     ls="none" if curves else ARM_STYLE[a]["ls"], label=f"{a}: mean over seeds, 95% CI")
              for a in arms]
  if curves:
    handles += [Line2D([], [], color="0.3", ls=ARM_STYLE[a]["ls"], label=f"fitted law ({a})") for a in arms]
  return handles + [Line2D([], [], color="0.4", ls=h.get("style", ":"), label=h["label"])
                    for h in numbers.get("hlines", [])]


def measured_panels(numbers: Mapping[str, Any], path: str) -> str:
  """Error against one input: a panel per value of another, a series per colour key and arm.

  numbers: {"xlabel", "ylabel", "ncols", "xticks": [values], "panels": [{"title", "note",
  "series": [{"key", "arm", "x", "mean", "lo", "hi", "curve": {"x", "y"} | None}]}],
  "keys": [(key, label)], "hlines": [{"y", "label", "style"}]}. Series are shifted slightly along
  x so error bars do not cover each other; without law curves thin lines join the means.
  """
  panels = numbers["panels"]
  fig, axes = _figure(len(panels), numbers.get("ncols", 3))
  color = dict(zip([k for k, _ in numbers["keys"]], colors(len(numbers["keys"]))))
  slots = [(k, arm) for k, _ in numbers["keys"] for arm in ARM_STYLE]
  for ax, panel in zip(axes, panels):
    for s in panel["series"]:
      _means(ax, s, color[s["key"]], 1.0 + 0.025 * (slots.index((s["key"], s["arm"])) - (len(slots) - 1) / 2))
    for h in numbers.get("hlines", []):
      ax.axhline(h["y"], color="0.4", lw=0.9, ls=h.get("style", ":"))
    _style_axes(ax, panel["title"], numbers["xlabel"], numbers["xticks"])
    _note(ax, panel.get("note"))
  axes[0].set_ylabel(numbers["ylabel"], fontsize=FONT)
  arms = list(dict.fromkeys(s["arm"] for p in panels for s in p["series"]))
  curves = any(s.get("curve") for p in panels for s in p["series"])
  return _finish(fig, path, _means_legend(numbers, color, arms, curves),
                 ncol=int(fig.get_figwidth() // 2.6))


def _pairs(ax, s: Mapping[str, Any], color, shift: float) -> None:
  """One series of ΔE: faint dots per seed pair, the mean with its CI bars, the stated Dp*."""
  if s["seeds"]:
    sx, sy = zip(*s["seeds"])
    ax.scatter(np.asarray(sx) * shift, sy, color=color, s=9, alpha=0.35, lw=0, zorder=2)
  pts = s["points"]
  m = np.array([p["mean"] for p in pts], float)
  lo = np.array([p["mean"] if p["lo"] is None else p["lo"] for p in pts], float)
  hi = np.array([p["mean"] if p["hi"] is None else p["hi"] for p in pts], float)
  ax.errorbar(np.array([p["dp"] for p in pts], float) * shift, m, yerr=np.vstack([m - lo, hi - m]),
              color=color, marker="D", ms=4.5, lw=0.9, capsize=2.5, zorder=3)
  if s.get("dp_star"):
    ax.axvline(s["dp_star"], color=color, lw=1.0, ls="--", alpha=0.8)


def paired_differences(numbers: Mapping[str, Any], path: str) -> str:
  """ΔE = E_plain − E_distilled against Dp: a panel per model size, a series per task.

  numbers: {"panels": [{"title", "series": [{"key", "points": [{"dp", "mean", "lo", "hi"}],
  "seeds": [(dp, delta)], "dp_star": float | None}]}], "keys": [(key, label)], "dp": [values],
  "margin"?: δ (a grey band ±δ: no practical difference inside)}.
  Series are shifted slightly along Dp so their error bars do not hide each other; the pretraining
  task (key "pretrain") is drawn in near-black.
  """
  panels = numbers["panels"]
  fig, axes = _figure(len(panels), 3)
  keys = [k for k, _ in numbers["keys"]]
  pre = bool(keys) and keys[0] == "pretrain"
  color = dict(zip(keys, (["0.15"] + colors(len(keys) - 1)) if pre else colors(len(keys))))
  for ax, panel in zip(axes, panels):
    ax.axhline(0.0, color="k", lw=0.8)
    if numbers.get("margin"):
      ax.axhspan(-numbers["margin"], numbers["margin"], color="0.9", zorder=0)
    for s in panel["series"]:
      _pairs(ax, s, color[s["key"]], 1.0 + 0.06 * (keys.index(s["key"]) - (len(keys) - 1) / 2))
    _style_axes(ax, panel["title"], "pretraining images Dp", numbers["dp"])
  axes[0].set_ylabel("ΔE = E_plain − E_distilled\n(> 0: distillation helps)", fontsize=FONT)
  handles = [Line2D([], [], color=color[k], marker="D", ms=5, label=f"{label}: mean, interval")
             for k, label in numbers["keys"]]
  handles += [Line2D([], [], color="0.5", marker="o", ls="none", ms=4, alpha=0.5, label="one seed's pair"),
              Line2D([], [], color="0.5", ls="--", label="crossing Dp* (stated verdicts only)")]
  return _finish(fig, path, handles, ncol=3)


def predicted_vs_measured(numbers: Mapping[str, Any], path: str) -> str:
  """Each fine-tune's measured error against the joint law's prediction, one panel per arm.

  numbers: {"panels": [{"title", "arm", "pred": [...], "measured": [...], and optionally the
  cells' "cell_pred": [...], "cell_measured": [...] (drawn larger, outlined)}]}.
  """
  panels = numbers["panels"]
  fig, axes = _figure(len(panels), 2, sharey=False)
  fig.subplots_adjust(wspace=0.3)
  for ax, panel in zip(axes, panels):
    style = ARM_STYLE[panel["arm"]]
    ax.scatter(panel["pred"], panel["measured"], marker=style["marker"], s=12, color="C0", alpha=0.45, lw=0)
    cells = panel.get("cell_pred") is not None
    if cells:
      ax.scatter(panel["cell_pred"], panel["cell_measured"], marker=style["marker"], s=36, color="C1",
                 edgecolors="k", linewidths=0.6, zorder=3)
    values = list(panel["pred"]) + list(panel["measured"]) + list(panel.get("cell_measured") or [])
    lo, hi = min(values) * 0.9, max(values) * 1.1
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):  # 0.2, 0.5, 1 rather than crowded 3x10^-1 labels
      axis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
      axis.set_minor_locator(NullLocator())
      axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("predicted error", fontsize=FONT)
    ax.set_title(panel["title"], fontsize=FONT + 1)
    ax.tick_params(labelsize=FONT)
    ax.grid(True, which="both", alpha=0.25)
  axes[0].set_ylabel("measured error", fontsize=FONT)
  arms = [p["arm"] for p in panels]
  handles = [Line2D([], [], color="C0", marker=ARM_STYLE[a]["marker"], ls="none", label=f"{a}: one fine-tune")
             for a in arms]
  if any(p.get("cell_pred") is not None for p in panels):
    handles += [Line2D([], [], color="C1", marker=ARM_STYLE[a]["marker"], mec="k", ls="none",
                       label=f"{a}: cell mean over seeds") for a in arms]
  handles += [Line2D([], [], color="k", lw=0.8, label="measured = predicted")]
  return _finish(fig, path, handles, ncol=3)


def learning_curves(numbers: Mapping[str, Any], path: str) -> str:
  """Error against images seen, one panel per model: per (Dp, arm) the seed mean (line) and its 95%
  t band (shaded); colour by Dp (smallest, largest), line style by arm.

  numbers: {"panels": [{"title", "series": [{"dp", "arm", "x", "mean", "low", "high", "seeds"}]}],
  "dp": [the Dp shown, ascending]}.
  """
  panels = numbers["panels"]
  fig, axes = _figure(len(panels), 4)
  palette = dict(zip(numbers["dp"], colors(len(numbers["dp"]))))
  for ax, panel in zip(axes, panels):
    for s in panel["series"]:
      color, style = palette[s["dp"]], ARM_STYLE[s["arm"]]
      x = np.asarray(s["x"], float)
      ax.plot(x, s["mean"], color=color, ls=style["ls"], marker=style["marker"], ms=3, lw=1.1)
      ax.fill_between(x, s["low"], s["high"], color=color, alpha=0.15, lw=0)
    ax.set_xscale("log")
    ax.set_title(panel["title"], fontsize=FONT + 1)
    ax.set_xlabel("images seen", fontsize=FONT)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: short(v)))
    ax.tick_params(labelsize=FONT)
    ax.grid(True, which="both", alpha=0.25)
  axes[0].set_ylabel("error (test split)", fontsize=FONT)
  arms = list(dict.fromkeys(s["arm"] for p in panels for s in p["series"]))
  handles = [Line2D([], [], color=palette[d], lw=2, label=f"Dp = {d:,}") for d in numbers["dp"]]
  handles += [Line2D([], [], color="0.3", ls=ARM_STYLE[a]["ls"], marker=ARM_STYLE[a]["marker"], ms=3,
                     label=a) for a in arms]
  return _finish(fig, path, handles, ncol=len(handles))


def selection_panels(numbers: Mapping[str, Any], path: str) -> str:
  """Error against Dp, a line per selection of the Dp images, a panel per model (and stage).

  numbers: {"panels": [{"title", "ylabel", "series": [{"key" (the selection), "arm", "x", "mean", "lo",
  "hi"}]}], "keys": [(selection, label)], "xticks", "xlabel", "ncols"}. Random is drawn in near-black,
  each pruned selection in a colour; series are shifted slightly along Dp.
  """
  panels = numbers["panels"]
  fig, axes = _figure(len(panels), numbers.get("ncols", 3), sharey=False)
  keys = [k for k, _ in numbers["keys"]]
  rest = [k for k in keys if k != "random"]
  color = {"random": "0.15", **dict(zip(rest, colors(len(rest) + 1)[1:]))}  # the darkest is near random's
  for i, (ax, panel) in enumerate(zip(axes, panels)):
    for s in panel["series"]:
      _means(ax, s, color[s["key"]], 1.0 + 0.04 * (keys.index(s["key"]) - (len(keys) - 1) / 2))
    _style_axes(ax, panel["title"], numbers["xlabel"], numbers["xticks"])
    if i % max(1, min(numbers.get("ncols", 3), len(panels))) == 0:
      ax.set_ylabel(panel["ylabel"], fontsize=FONT)
  handles = [Line2D([], [], color=color[k], marker="o", lw=1.1, ms=5, label=label) for k, label in numbers["keys"]]
  handles.append(Line2D([], [], color="0.5", marker="|", ls="none", ms=9,
                        label="bars: random's mean + paired interval of the difference"))
  return _finish(fig, path, handles, ncol=2)
