"""report.md and a self-contained report.html from one list of blocks.

A block is ``("h", level, text)``, ``("p", text)``, ``("table", header, rows)`` or
``("img", filename, caption)``. Markdown links the PNGs beside it; HTML embeds them as base64
so the one file can be mailed or opened anywhere.
"""

from __future__ import annotations

import base64
import html
import os
import re
from typing import Sequence

from jaxscale.fileio import atomic_write_text
from jaxscale.report import figures, sections
from jaxscale.report.sections import Block, fmt, with_ci  # noqa: F401  (re-exported for callers)
from jaxscale.study.analysis import StudyAnalysis

TITLE = "jaxscale study report"
NUMBER = re.compile(r"^[-+–]?[\d.,]+(e[-+]?\d+)?( |%|$)")
STYLE = ("body{font-family:sans-serif;max-width:1150px;margin:1.5em auto;padding:0 1em;color:#222;"
         "line-height:1.4}table{border-collapse:collapse;margin:0.8em 0;font-size:0.85em}"
         "td,th{border:1px solid #ccc;padding:2px 7px;text-align:left}th{background:#f3f3f3}"
         "td.n{text-align:right}img{max-width:100%}figure{margin:1em 0}"
         "figcaption{font-size:0.85em;color:#444;max-width:60em}")


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
      out.append(f"![{b[1]}]({b[1]})\n\n*{b[2]}*")
    out.append("")
  return "\n".join(out)


def _cell(value) -> str:
  """A table cell; numbers (with their CIs) align right, words left."""
  text = str(value)
  cls = ' class="n"' if NUMBER.match(text) else ""
  return f"<td{cls}>{html.escape(text)}</td>"


def to_html(blocks: Sequence[Block], folder: str, title: str = TITLE) -> str:
  body = []
  for b in blocks:
    if b[0] == "h":
      body.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
    elif b[0] == "p":
      body.append(f"<p>{html.escape(b[1])}</p>")
    elif b[0] == "table":
      head = "".join(f"<th>{html.escape(h)}</th>" for h in b[1])
      rows = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in b[2])
      body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    elif b[0] == "img":
      with open(os.path.join(folder, b[1]), "rb") as f:
        data = base64.b64encode(f.read()).decode()
      body.append(f'<figure><img alt="{html.escape(b[1])}" src="data:image/png;base64,{data}">'
                  f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
  return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
          f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def draw_figures(analysis: StudyAnalysis, folder: str) -> dict[str, Block]:
  """Draws every figure that has numbers; returns {name: its "img" block}."""
  out = {}
  for fig in figures.FIGURES:
    numbers = fig.numbers(analysis)
    if numbers is None:
      continue
    fig.draw(numbers, os.path.join(folder, fig.name))
    out[fig.name] = ("img", fig.name, fig.caption(analysis, numbers))
  return out


def blocks_for(analysis: StudyAnalysis, imgs: dict[str, Block], rounds: dict | None = None) -> list[Block]:
  """The page in reading order: first screen, evidence, setup (and an adaptive study's rounds),
  measurements, the law, appendix."""
  def img(*names: str) -> list[Block]:
    return [imgs[n] for n in names if n in imgs]
  return (sections.first_screen(analysis) + sections.verdict_table(analysis) + img("delta_e.png")
          + sections.setup_blocks(analysis) + sections.rounds_blocks(rounds) + sections.means_tables(analysis)
          + img("error_vs_dp.png", "error_vs_df.png", "error_vs_m.png", "pretrain_error.png")
          + sections.pruning_blocks(analysis) + img("error_vs_dp_selection.png")
          + sections.budget_blocks(analysis) + img("learning_curves.png")
          + sections.law_blocks(analysis) + img("predicted_vs_measured.png")
          + sections.exponent_blocks(analysis))


def write_report(analysis: StudyAnalysis, folder: str, rounds: dict | None = None) -> dict[str, str]:
  """Draws the figures and writes report.md and report.html into `folder`; returns their paths.
  `rounds`: an adaptive study's rounds log (shown in a "Rounds" section)."""
  os.makedirs(folder, exist_ok=True)
  blocks = blocks_for(analysis, draw_figures(analysis, folder), rounds)
  md, page = os.path.join(folder, "report.md"), os.path.join(folder, "report.html")
  atomic_write_text(md, to_markdown(blocks))
  atomic_write_text(page, to_html(blocks, folder))
  return {"markdown": md, "html": page, "folder": folder}
