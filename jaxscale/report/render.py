"""report.md and a self-contained report.html from one list of blocks.

A block is ``("h", level, text)``, ``("p", text)``, ``("table", header, rows)`` or
``("img", filename, caption)``. Markdown links the PNGs beside it; HTML embeds them as base64
so the one file can be mailed or opened anywhere.
"""

from __future__ import annotations

import base64
import html
import math
import os
from typing import Any, Sequence

from jaxscale.fileio import atomic_write_text
from jaxscale.report import plots

Block = tuple


def fmt(v: Any, digits: int = 3) -> str:
  """Numbers for tables: 3 significant digits, '–' for missing."""
  if v is None:
    return "–"
  if isinstance(v, bool):
    return "yes" if v else "no"
  if isinstance(v, (int, float)):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
      return "–"
    if isinstance(v, int) or float(v).is_integer() and abs(v) >= 1:
      return f"{int(v):,}" if abs(v) < 1e7 else f"{v:.3g}"
    return f"{v:.{digits}g}"
  return str(v)


def with_ci(value, low, high) -> str:
  if low is None or high is None:
    return fmt(value)
  return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"


def to_markdown(blocks: Sequence[Block]) -> str:
  out = []
  for b in blocks:
    if b[0] == "h":
      out.append("#" * b[1] + " " + b[2])
    elif b[0] == "p":
      out.append(b[1])
    elif b[0] == "table":
      header, rows = b[1], b[2]
      out.append("| " + " | ".join(header) + " |")
      out.append("|" + "---|" * len(header))
      out.extend("| " + " | ".join(str(c) for c in row) + " |" for row in rows)
    elif b[0] == "img":
      out.append(f"![{b[2]}]({b[1]})\n\n*{b[2]}*")
    out.append("")
  return "\n".join(out)


def to_html(blocks: Sequence[Block], folder: str, title: str) -> str:
  body = []
  for b in blocks:
    if b[0] == "h":
      body.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
    elif b[0] == "p":
      body.append(f"<p>{html.escape(b[1])}</p>")
    elif b[0] == "table":
      head = "".join(f"<th>{html.escape(h)}</th>" for h in b[1])
      rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in b[2])
      body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    elif b[0] == "img":
      with open(os.path.join(folder, b[1]), "rb") as f:
        data = base64.b64encode(f.read()).decode()
      body.append(f'<figure><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}">'
                  f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
  style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
           "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
           "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
           "img{max-width:100%}figcaption{font-size:0.85em;color:#555}")
  return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
          f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def blocks_for(analysis: dict[str, Any], figures: Sequence[str]) -> list[Block]:
  """The report's content: summary, study, fitted laws, boundary, figures, backtests."""
  s = analysis["study"]
  blocks: list[Block] = [("h", 1, "jaxscale study report"), ("h", 2, "Summary"),
                         ("p", analysis["summary"])]
  blocks += [("h", 2, "Study"), ("table", ["quantity", "values"], [
      ["pretraining data", s["pretrain_dataset"]], ["downstream data", s["finetune_dataset"]],
      ["models (M = parameters)", ", ".join(f"{m} ({fmt(p)})" for m, p in s["models"])],
      ["Dp", ", ".join(fmt(v) for v in s["dp"])], ["Df", ", ".join(fmt(v) for v in s["df"])],
      ["arms", ", ".join(s["arms"])], ["seeds", ", ".join(str(v) for v in s["seeds"])],
      ["teacher", s["teacher"]], ["records", fmt(s["records"])],
      ["training wall time", f"{s['wall_s'] / 60:.1f} min"]])]
  law = analysis["law"]
  blocks += [("h", 2, f"Fitted law: {law['name']}"), ("p", law["formula"])]
  names = law["param_names"]
  rows = []
  for arm, fit in analysis["fits"].items():
    rows.append([arm] + [with_ci(fit["params"][n]["value"], fit["params"][n].get("ci_low"),
                                 fit["params"][n].get("ci_high")) for n in names]
                + [fmt(fit["stats"].get("r2_log")), fmt(fit["stats"].get("rmse_log")), fmt(fit["stats"].get("n"))])
  blocks.append(("table", ["arm"] + list(names) + ["R² (log)", "RMSE (log)", "points"], rows))
  blocks.append(("p", "Values are the best of a multi-start Huber fit on log-residuals; brackets are "
                      "95% bootstrap percentile intervals."))
  warnings = [f"{arm}: {w}" for arm, fit in analysis["fits"].items() for w in fit.get("warnings", [])]
  if warnings:
    blocks += [("h", 3, "Fit warnings"), ("p", "; ".join(warnings))]
  blocks += [("h", 2, "Distillation boundary"), ("p", analysis["boundary_text"])]
  if analysis.get("boundaries"):
    blocks.append(("table", ["M", "Df", "Dp* (95% CI)", "ΔE below the first root"], [
        [fmt(b["M"]), fmt(b["Df"]),
         "; ".join(with_ci(r["value"], r.get("ci_low"), r.get("ci_high")) for r in b["roots"]) or "no crossing in range",
         b.get("sign_below") or "–"] for b in analysis["boundaries"]]))
  blocks.append(("h", 2, "Figures"))
  captions = {
      "error_vs_dp.png": "Error vs pretraining data Dp per model size (lines: joint law; bands: 95% bootstrap).",
      "error_vs_df.png": "Error vs fine-tuning data Df per model size.",
      "error_vs_m.png": "Error vs model size M per Dp.",
      "delta_e.png": "ΔE(Dp) = E_plain − E_distilled with the crossing Dp* and its CI.",
      "predicted_vs_measured.png": "Measured error against the joint law's prediction.",
  }
  blocks += [("img", f, captions.get(f, f)) for f in figures]
  if analysis.get("backtests"):
    blocks += [("h", 2, "Extrapolation backtests"),
               ("p", "Fit on the smaller scales, predict the held-out largest value of one input."),
               ("table", ["arm", "held out", "points", "log-RMSE", "abs. rel. error"],
                [[b["arm"], b["held_out"], fmt(b["n"]), fmt(b["log_rmse"]), fmt(b["are"])]
                 for b in analysis["backtests"]])]
  if analysis.get("exponents"):
    blocks += [("h", 2, "One-dimensional laws"),
               ("p", "E(Dp) = E_inf + A·Dp^-alpha fitted per model, Df and arm."),
               ("table", ["arm", "model", "Df", "alpha", "E_inf", "R² (log)"],
                [[e["arm"], e["model"], fmt(e["df"]), fmt(e["alpha"]), fmt(e["E_inf"]), fmt(e["r2_log"])]
                 for e in analysis["exponents"]])]
  return blocks


def write_report(analysis: dict[str, Any], folder: str) -> dict[str, str]:
  """Draws every figure and writes report.md and report.html into `folder`; returns their paths."""
  os.makedirs(folder, exist_ok=True)
  figures = []
  for name, draw in plots.FIGURES.items():
    if name == "delta_e.png" and not analysis.get("delta"):
      continue
    draw(analysis, os.path.join(folder, name))
    figures.append(name)
  blocks = blocks_for(analysis, figures)
  md, page = os.path.join(folder, "report.md"), os.path.join(folder, "report.html")
  atomic_write_text(md, to_markdown(blocks))
  atomic_write_text(page, to_html(blocks, folder, "jaxscale study report"))
  return {"markdown": md, "html": page, "folder": folder}
