"""records.jsonl: one JSON object per evaluated run, the contract between training and fitting.

Appends are a single ``write`` of one complete line on an ``O_APPEND`` descriptor followed by
``fsync``, so a crash leaves either the whole record or, at worst, a torn final line that readers
skip (and that the next append terminates first).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

logger = logging.getLogger("jaxscale")

# The fields every record carries (see DESIGN.md); fits read dp, params, df, distilled, eval_error.
FIELDS = ("stage", "model", "params", "dp", "df", "distilled", "teacher", "seed", "subset_hash",
          "steps", "flops", "eval_error", "eval_loss", "wall_s", "config_hash", "version",
          "cell_id", "time")


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
