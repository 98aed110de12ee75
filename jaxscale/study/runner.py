"""Runs a study's cells in dependency order, resumably, then fits the laws and writes the report.

Workdir layout::

  study.json       the study's config and its hash (a different config is refused)
  records.jsonl    one record per finished cell (teacher, pretrain and fine-tune stages)
  cells/<id>/      each cell's checkpoints (a killed cell resumes from here)
  fits.json        fitted laws per arm and the distillation boundary
  report/          report.md, report.html and the PNG figures

A finished cell is never run again: its record in records.jsonl is the proof it is done.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from typing import Any

from ml_collections import ConfigDict

from jaxscale import config as config_lib
from jaxscale.errors import JaxscaleError
from jaxscale.fileio import atomic_write_text
from jaxscale.progress import Progress, format_duration
from jaxscale.study import grid, records

logger = logging.getLogger("jaxscale")

# Fields that change only the analysis, not any cell: editing them keeps the study's identity.
ANALYSIS_FIELDS = ("law", "bootstrap")
# Assumed sustained training throughput for --dry-run estimates when the workdir has no records yet.
DEFAULT_FLOPS_PER_S = 2e10


def study_hash(config: ConfigDict) -> str:
  """Hash of everything that determines the cells' results (analysis-only fields excluded)."""
  c = ConfigDict(config.to_dict())
  for field in ANALYSIS_FIELDS:
    del c.study[field]
  return config_lib.config_hash(c)


def paths(workdir: str) -> dict[str, str]:
  return {
      "study": os.path.join(workdir, "study.json"),
      "records": os.path.join(workdir, "records.jsonl"),
      "cells": os.path.join(workdir, "cells"),
      "fits": os.path.join(workdir, "fits.json"),
      "report": os.path.join(workdir, "report"),
  }


def prepare_workdir(config: ConfigDict, workdir: str, force_new: bool = False) -> None:
  """Creates `workdir` or checks it holds this same study; `force_new` archives a different one."""
  p = paths(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write-test-{os.getpid()}")
    open(probe, "w").close()
    os.remove(probe)
  except OSError as e:
    raise JaxscaleError(f"cannot write to workdir {workdir!r} ({e.strerror}); pass a writable --workdir") from None
  digest = study_hash(config)
  if os.path.exists(p["study"]):
    with open(p["study"], encoding="utf-8") as f:
      old = json.load(f)
    if old.get("hash") != digest:
      if not force_new:
        raise JaxscaleError(
            f"workdir {workdir!r} holds a study with a different config (hash {old.get('hash')} != {digest}); "
            "use another --workdir, or pass --force-new to archive the old study and start again")
      archive = os.path.join(workdir, f"previous-{time.strftime('%Y%m%d-%H%M%S')}")
      os.makedirs(archive)
      for name in os.listdir(workdir):
        if not name.startswith("previous-"):
          shutil.move(os.path.join(workdir, name), os.path.join(archive, name))
      logger.info("archived the previous study to %s", archive)
  elif os.path.exists(p["records"]):
    raise JaxscaleError(f"workdir {workdir!r} has records.jsonl but no study.json; use an empty --workdir")
  atomic_write_text(p["study"], json.dumps(
      {"hash": digest, "config": config.to_dict()}, indent=2, sort_keys=True, default=str))


def check_sizes(config: ConfigDict, dry_run: bool) -> None:
  """Fails early if any Dp or Df is larger than its split (datasets built first unless dry-run)."""
  from jaxscale.data import builders, sources
  s = config.study
  teacher_dp = grid.teacher_of(s).dp if "distilled" in s.arms else 0
  for stage, sizes in (("pretrain", list(s.dp) + [teacher_dp]), ("finetune", list(s.df))):
    name, split = config[stage].dataset, config[stage].train_split
    if not dry_run and name.startswith("jaxscale_"):
      builders.ensure_built(name, config.data.data_dir)
    try:
      n = len(sources.load_labels(name, split, config.data.data_dir))
    except JaxscaleError:
      if dry_run:
        continue  # not prepared yet: a real run builds it (embedded) or says how
      raise
    key = "dp" if stage == "pretrain" else "df"
    if max(sizes) > n:
      raise JaxscaleError(
          f"config.study.{key} asks for {max(sizes)} images but {name}:{split} has {n}; "
          f"use values up to {n}" + (" (teacher_dp included)" if stage == "pretrain" else ""))


def cell_flops(config: ConfigDict, cell: grid.Cell) -> float:
  """Estimated training FLOPs of a cell: 3 x forward FLOPs per image x images seen."""
  from jaxscale import models
  from jaxscale.data import sources
  from jaxscale.train.steps import num_train_steps
  stage = config[cell.stage]
  size = cell.df if cell.kind == grid.FINETUNE else cell.dp
  classes = sources.num_classes(stage.dataset, config.data.data_dir)
  per_image = models.flops_per_image(cell.model, classes, config.data.image_size)
  images = num_train_steps(stage.optim, size) * stage.optim.batch_size
  flops = 3.0 * per_image * images
  if cell.arm == "distilled" and config.distill.stage in (cell.stage, "both"):
    teacher = grid.teacher_of(config.study).model
    flops += models.flops_per_image(teacher, classes, config.data.image_size) * images
  return flops


def plan(config: ConfigDict, workdir: str) -> dict[str, Any]:
  """The cells with their status and FLOPs, and an ETA from measured or assumed throughput."""
  cells = grid.expand(config)
  done = records.by_cell(paths(workdir)["records"])
  rows = [{"cell": c, "done": c.id in done, "flops": cell_flops(config, c)} for c in cells]
  measured = [r for r in done.values() if r.get("flops") and r.get("wall_s")]
  rate = (sum(r["flops"] for r in measured) / sum(r["wall_s"] for r in measured)
          if measured else DEFAULT_FLOPS_PER_S)
  todo = sum(r["flops"] for r in rows if not r["done"])
  return {"rows": rows, "flops_per_s": rate, "rate_measured": bool(measured),
          "todo_flops": todo, "eta_s": todo / rate}


def print_plan(p: dict[str, Any]) -> None:
  rows = p["rows"]
  print(f"{'cell':<48} {'stage':<9} {'GFLOPs':>9}  status")
  for r in rows:
    c = r["cell"]
    print(f"{c.id:<48} {c.stage:<9} {r['flops'] / 1e9:>9.1f}  {'done' if r['done'] else 'todo'}")
  counts = grid.count(r["cell"] for r in rows)
  todo = sum(not r["done"] for r in rows)
  source = "measured in this workdir" if p["rate_measured"] else "assumed"
  print(f"{len(rows)} cells ({counts['teacher']} teacher, {counts['pretrain']} pretrain, "
        f"{counts['finetune']} fine-tune), {todo} to run: {p['todo_flops'] / 1e12:.2f} TFLOPs, "
        f"about {format_duration(p['eta_s'])} at {p['flops_per_s'] / 1e9:.1f} GFLOP/s ({source})")


def run_cells(config: ConfigDict, workdir: str, show_progress: bool = True) -> list[dict[str, Any]]:
  """Runs every unfinished cell in order; returns all records of the study."""
  from jaxscale.train import loop
  p = paths(workdir)
  cells = grid.expand(config)
  done = records.by_cell(p["records"])
  todo = [c for c in cells if c.id not in done]
  if done:
    logger.info("resuming: %d of %d cells already done", len(cells) - len(todo), len(cells))
  with Progress(total=len(cells), desc="study", unit="cell", initial=len(cells) - len(todo),
                enabled=show_progress, interval_s=0) as bar:
    for cell in todo:
      cfg = grid.cell_config(config, cell, p["cells"])
      t0 = time.time()
      # run_stage appends the record, also for a stage that finished before its record landed.
      record = loop.run_stage(cfg, cell.stage, os.path.join(p["cells"], cell.id),
                              records_path=p["records"], cell_id=cell.id, show_progress=show_progress,
                              progress_delay_s=5.0)  # only long cells show their steps
      bar.update(1, cell=cell.id, err=round(float(record.get("eval_error", float("nan"))), 4),
                 s=round(time.time() - t0, 1))
  return records.read(p["records"])
