"""records.jsonl: one JSON object per evaluated run, the contract between training and fitting.

The file's rules (whole-line appends, a torn last line moved aside before the next append, one
record per cell) are those of :mod:`jaxscale.jsonl`, which `jaxscale fit` reads records with too.
"""

from __future__ import annotations

import datetime
import os
from typing import Any, Callable, Sequence

from ml_collections import ConfigDict

import jaxscale
from jaxscale import config as config_lib
from jaxscale import jsonl
from jaxscale.train import steps


def build(config: ConfigDict, stage: str, result: dict[str, Any], *, cell_id: str, dp: int, df: int,
          distilled: bool, teacher: str, alpha: float, seed: int, flops: float,
          arm: str | None = None, selection: str = "random") -> dict[str, Any]:
  """The record of one finished run: everything a fit needs, and how it was measured.

  Fields: ``stage, model, params`` (parameter count of the trained model, the M of the laws),
  ``dp, df, arm`` ("plain", "distilled" or "smoothed", the study arm of the run and, for a fine-tune,
  of its pretraining; default from `distilled`), ``selection`` (how its Dp images were chosen:
  "random" or a prototype rule, :mod:`jaxscale.data.subsets`), ``distilled, teacher`` (False and "" for the plain and
  the smoothed arm), ``alpha`` (the KD weight during this stage; 0 = plain), ``seed,
  subset_hash, steps, batch_size, lr`` (the stage's peak learning rate), ``flops`` (training FLOPs of this stage), ``eval_error, eval_loss,
  eval_count`` (top-1 error and mean cross-entropy on the whole eval split of that many images),
  ``diverged_at`` (the step whose loss or gradient was not finite, else null), ``wall_s`` (the
  run's share of its group's wall time), ``group_size``, ``mesh`` (the group's devices along
  ``[runs, data, fsdp]``; results are bit-identical for the same mesh and group), ``config_hash, version, cell_id, time``.
  """
  return {
      "stage": stage, "model": config.model.name, "params": int(result["params"]), "dp": int(dp),
      "df": int(df), "arm": arm or ("distilled" if distilled else "plain"), "distilled": bool(distilled),
      "teacher": teacher, "alpha": float(alpha), "selection": selection,
      "seed": int(seed), "subset_hash": result["subset_hash"], "steps": int(result["steps"]),
      "batch_size": int(config[stage].optim.batch_size),
      "lr": steps.peak_lr(config[stage].optim, config.model.name), "flops": float(flops),
      "eval_error": float(result["eval_error"]), "eval_loss": float(result["eval_loss"]),
      "eval_count": int(result["eval_count"]), "diverged_at": result["diverged_at"],
      "wall_s": float(result["wall_s"]), "group_size": int(result["group_size"]),
      "mesh": [int(v) for v in result.get("mesh", (1, 1, 1))],
      "config_hash": config_lib.result_hash(config), "version": jaxscale.__version__, "cell_id": cell_id,
      "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }


# Fields of a record that a curves.jsonl line repeats (what a fit over examples seen needs, and its key).
CURVE_FIELDS = ("stage", "cell_id", "model", "params", "dp", "df", "arm", "selection", "distilled", "seed",
                "steps", "batch_size")


CURVES_FILE = "curves.jsonl"   # beside records.jsonl: every run's points along its budget


def workdir_paths(workdir: str) -> dict[str, str]:
  """The files and folders of a study's workdir, by role (the one place their names are spelled)."""
  return {
      "study": os.path.join(workdir, "study.json"),
      "records": os.path.join(workdir, "records.jsonl"),
      "curves": os.path.join(workdir, CURVES_FILE),
      "cells": os.path.join(workdir, "cells"),
      "groups": os.path.join(workdir, "groups"),
      "fits": os.path.join(workdir, "fits.json"),
      "report": os.path.join(workdir, "report"),
  }


def curves_path(records_path: str) -> str:
  """curves.jsonl, beside records.jsonl."""
  return os.path.join(os.path.dirname(os.path.abspath(records_path)), CURVES_FILE)


def curve(record: dict[str, Any], points: Sequence[dict]) -> dict[str, Any]:
  """The curves.jsonl line of one run: `CURVE_FIELDS` of its record and ``points``, the evaluations
  along its budget in step order (:mod:`jaxscale.train.evals`): ``step, examples`` (images seen),
  ``train_loss`` (mean over the last 5% of the budget), ``eval_error, eval_loss, eval_count`` (on a fixed
  subset of the eval split before the end; the last point is the record's own, on the whole split)."""
  return {**{k: record[k] for k in CURVE_FIELDS}, "points": list(points)}


def append(path: str, record: dict[str, Any]) -> None:
  """Appends `record` as one whole line of `path`; a second record of its cell is refused
  (:func:`jaxscale.jsonl.append`)."""
  jsonl.append(path, record)


def read(path: str) -> list[dict[str, Any]]:
  """All complete records of `path`, each cell once (missing file: empty list; a torn last line is
  skipped with a warning, repeats of a cell dropped, two different results of one cell refused)."""
  return jsonl.read(path)


def by_cell(path: str) -> dict[str, dict[str, Any]]:
  """Records keyed by ``cell_id``."""
  return {record.get("cell_id", ""): record for record in read(path)}


def resume(path: str) -> dict[str, dict[str, Any]]:
  """What a study that is about to append finds done: a torn last line is moved aside first
  (:func:`jaxscale.jsonl.heal`), then the records by cell."""
  jsonl.heal(path)
  return by_cell(path)


def add_results(path: str, done: dict[str, dict[str, Any]], cells: Sequence[Any], results: Sequence[dict],
                make: Callable[[Any, dict], dict[str, Any]], write: bool = True) -> None:
  """Records each of `cells` (with its `results` entry) that `done` lacks: ``make(cell, result)``
  builds the record, which joins `done` and, when `write`, is appended to `path`; its curve (a result's
  ``curve``) goes to :func:`curves_path` first, once (a process killed between the two appends wrote it)."""
  curved = None
  for cell, result in zip(cells, results):
    if cell.id not in done:
      done[cell.id] = make(cell, result)
      if write and result.get("curve"):
        if curved is None:
          curved = {jsonl.key(row) for row in jsonl.read(curves_path(path))}
        line = curve(done[cell.id], result["curve"])
        if jsonl.key(line) not in curved:
          jsonl.append(curves_path(path), line)
      if write:
        append(path, done[cell.id])
