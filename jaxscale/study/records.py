"""records.jsonl: one JSON object per evaluated run, the contract between training and fitting.

Appends are a single ``write`` of one complete line on an ``O_APPEND`` descriptor followed by
``fsync``, so a crash leaves either the whole record or, at worst, a torn final line that readers
skip (and that the next append terminates first).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from typing import Any

from ml_collections import ConfigDict

import jaxscale
from jaxscale import config as config_lib
from jaxscale.train import steps

logger = logging.getLogger("jaxscale")

def build(config: ConfigDict, stage: str, result: dict[str, Any], *, cell_id: str, dp: int, df: int,
          distilled: bool, teacher: str, alpha: float, seed: int, flops: float,
          arm: str | None = None, selection: str = "random") -> dict[str, Any]:
  """The record of one finished run: everything a fit needs, and how it was measured.

  Fields: ``stage, model, params`` (parameter count of the trained model, the M of the laws),
  ``dp, df, arm`` ("plain", "distilled" or "smoothed", the study arm of the run and, for a fine-tune,
  of its pretraining; default from `distilled`), ``selection`` (how its Dp images were chosen:
  "random" or a prototype rule, :mod:`jaxscale.data.subsets`), ``distilled, teacher`` (False and "" for the plain and
  the smoothed arm), ``alpha`` (the KD weight during this stage; 0 = plain), ``seed,
  subset_hash, steps, batch_size, flops`` (training FLOPs of this stage), ``eval_error, eval_loss,
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


def append(path: str, record: dict[str, Any]) -> None:
  """Appends `record` as one line of `path` atomically (creating the file and its folder)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  line = json.dumps(record, sort_keys=True, allow_nan=True) + "\n"
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    size = os.fstat(fd).st_size
    if size:
      with open(path, "rb") as f:
        f.seek(size - 1)
        if f.read(1) != b"\n":  # a torn line from a crash: terminate it so ours stays whole
          line = "\n" + line
    os.write(fd, line.encode())
    os.fsync(fd)
  finally:
    os.close(fd)


def read(path: str) -> list[dict[str, Any]]:
  """All complete records of `path` (missing file: empty list; torn lines skipped with a warning)."""
  if not os.path.exists(path):
    return []
  out = []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        logger.warning("%s:%d is not a complete record (an interrupted write?); skipped", path, n)
  return out


def by_cell(path: str) -> dict[str, dict[str, Any]]:
  """Records keyed by ``cell_id`` (the first record of a cell wins)."""
  out: dict[str, dict[str, Any]] = {}
  for record in read(path):
    out.setdefault(record.get("cell_id", ""), record)
  return out
