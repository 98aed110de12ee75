"""What `jaxscale study` (and `jaxscale plan`) print about a study before it trains: a summary of the
plan (cells and runs per stage and model, FLOPs), one ETA, and on request the per-cell table.

The ETA comes from a speed measured on this machine: the training FLOPs and wall time of the
workdir's own records when a study resumes, else one of the study's train programs timed here
(:func:`jaxscale.study.plan.measure_rate`), plus one compile per group still to train (a compile
costs what timing that program's compile cost: a second or two once the compilation cache holds
it, ten or more on a small CPU without). It covers training and evaluating every run (the
evaluations' forward FLOPs counted at the training rate); fitting the laws and writing the report
come after it.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

from ml_collections import ConfigDict

from jaxscale.progress import format_duration, format_flops
from jaxscale.study import grid

logger = logging.getLogger("jaxscale")

def format_rate(flops_per_s: float) -> str:
  """``16.6 GFLOP/s``."""
  return format_flops(flops_per_s).replace("FLOPs", "FLOP/s")


STAGE_WORDS = {grid.TEACHER: "teacher", grid.PRETRAIN: "pretrain", grid.FINETUNE: "fine-tune"}


def study_plan(config: ConfigDict, workdir: str | None = None) -> dict[str, Any]:
  """:func:`jaxscale.study.runner.grid_status` of `workdir`, or of a study with nothing done (None), plus
  ``todo_groups`` (groups with a cell still to train)."""
  from jaxscale.study import runner
  p = runner.grid_status(config, workdir)
  done = {r["cell"].id for r in p["rows"] if r["done"]}
  p["todo_groups"] = sum(any(c.id not in done for c in g.cells) for g in grid.groups(config))
  p["eval_flops"] = eval_flops(config, [r["cell"] for r in p["rows"] if not r["done"]])
  return p


def eval_flops(config: ConfigDict, cells: list[grid.Cell]) -> float:
  """Forward FLOPs of evaluating `cells` on their stage's whole eval split (every run is evaluated
  once, on every image of it); a split not prepared yet (a dry run) counts 0."""
  from jaxscale import models
  from jaxscale.data import sources
  from jaxscale.errors import JaxscaleError
  size, total, images = int(config.data.image_size), 0.0, {}
  for c in cells:
    stage = config[c.stage]
    if c.stage not in images:
      try:
        images[c.stage] = len(sources.load_labels(stage.dataset, stage.eval_split, config.data.data_dir))
      except JaxscaleError:
        images[c.stage] = 0
    classes = sources.num_classes(stage.dataset, config.data.data_dir)
    total += images[c.stage] * models.flops_per_image(c.model, classes, size)
  return total


def summary_lines(p: dict[str, Any]) -> list[str]:
  """Cells, cells still to run and their FLOPs per (stage, model), then the totals."""
  table: dict[tuple[str, str], list[float]] = collections.defaultdict(lambda: [0, 0, 0.0])
  for r in p["rows"]:
    entry = table[(r["cell"].kind, r["cell"].model)]
    entry[0] += 1
    if not r["done"]:
      entry[1] += 1
      entry[2] += r["flops"]
  counts = grid.count(r["cell"] for r in p["rows"])
  todo = sum(not r["done"] for r in p["rows"])
  lines = [f"plan: {len(p['rows'])} cells ({counts['teacher']} teacher, {counts['pretrain']} pretrain, "
           f"{counts['finetune']} fine-tune), {todo} to run in {p['todo_groups']} group(s) of runs "
           f"trained together",
           f"  {'stage':<10} {'model':<18} {'cells':>6} {'to run':>7} {'FLOPs to run':>14}"]
  order = {grid.TEACHER: 0, grid.PRETRAIN: 1, grid.FINETUNE: 2}
  for (kind, model), (n, left, flops) in sorted(table.items(), key=lambda kv: order[kv[0][0]]):
    lines.append(f"  {STAGE_WORDS[kind]:<10} {model:<18} {n:>6} {left:>7} {format_flops(flops):>14}")
  lines.append(f"  {'total':<10} {'':<18} {len(p['rows']):>6} {todo:>7} {format_flops(p['todo_flops']):>14}")
  return lines


def cell_lines(p: dict[str, Any]) -> list[str]:
  """The per-cell table: id, stage, GFLOPs, done or todo."""
  lines = [f"{'cell':<48} {'stage':<9} {'GFLOPs':>9}  status"]
  for r in p["rows"]:
    c = r["cell"]
    lines.append(f"{c.id:<48} {c.stage:<9} {r['flops'] / 1e9:>9.1f}  {'done' if r['done'] else 'todo'}")
  return lines


def estimate(p: dict[str, Any], config: ConfigDict) -> tuple[float, str]:
  """(seconds, how) of training what `p` has still to run, at a speed measured on this machine."""
  if p["rate_measured"]:  # the records' wall time holds their groups' compiles and evaluations
    rate = p["flops_per_s"]
    return p["todo_flops"] / rate, f"at {format_rate(rate)}, the speed of this workdir's records"
  from jaxscale.study import plan
  logger.info("timing one of the study's train programs to estimate its duration...")
  r = plan.measure_rate(config)
  seconds = (p["todo_flops"] + p["eval_flops"]) / r.flops_per_s + p["todo_groups"] * r.compile_s
  return seconds, (f"{format_flops(p['todo_flops'] + p['eval_flops'])} with the evaluations, at "
                   f"{format_rate(r.flops_per_s)} measured here on {r.what}, plus "
                   f"{p['todo_groups']} compile(s) of ~{r.compile_s:.0f}s")


def eta_line(p: dict[str, Any], config: ConfigDict, measure: bool = True) -> str:
  """The one ETA line: training time left, how it was estimated, and what comes after. Without
  `measure` (the groups train elsewhere, e.g. on Ray workers) only records can give a speed."""
  if not p["todo_flops"]:
    return "ETA: nothing left to train; the fits and the report follow"
  if not (measure or p["rate_measured"]):
    return ("ETA: not estimated here (the groups train on other machines); the progress line "
            "estimates it as groups finish")
  seconds, how = estimate(p, config)
  return f"ETA: training about {format_duration(seconds)} ({how}); then the fits and the report"


def print_plan(config: ConfigDict, workdir: str | None, cells: bool = False, eta: bool = True,
               measure: bool = True) -> dict[str, Any]:
  """Prints the per-cell table when `cells`, the summary and, with `eta`, the ETA; returns the plan."""
  p = study_plan(config, workdir)
  print("\n".join((cell_lines(p) if cells else []) + summary_lines(p)), flush=True)
  if eta:
    print(eta_line(p, config, measure), flush=True)
  return p
