"""Reading measurements (records.jsonl or CSV) into named columns.

A table is ``dict[str, np.ndarray]``, every column of one length N. Column types are inferred:
all-bool -> bool, all-integer -> int64, all-numeric -> float64 (a missing value becomes NaN),
anything else -> object (missing values are None). In CSV, ``true``/``false`` (any case) are
booleans and an empty cell is missing.

Group keys (the names of groups in fits.json) are values written as strings by `key`: booleans as
``"true"``/``"false"``, integral numbers as integers (``1``, ``1.0`` -> ``"1"``), other floats by
``repr`` (``"0.5"``), strings as they are.
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Sequence

import numpy as np

from jaxscale.errors import JaxscaleError

Table = dict[str, np.ndarray]


def read_table(path: str | os.PathLike) -> Table:
  """Reads a .jsonl (one JSON object per line) or .csv file (header row) into columns."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise JaxscaleError(f"no such file: {path}")
  lower = path.lower()
  if lower.endswith((".jsonl", ".json", ".ndjson")):
    rows = _read_jsonl(path)
  elif lower.endswith((".csv", ".tsv")):
    rows = _read_csv(path, "\t" if lower.endswith(".tsv") else ",")
  else:
    raise JaxscaleError(f"cannot read {path}: use a .jsonl (records) or .csv file")
  if not rows:
    raise JaxscaleError(f"{path} holds no rows")
  names: dict[str, None] = {}
  for r in rows:
    names.update(dict.fromkeys(r))
  return {n: _column([r.get(n) for r in rows]) for n in names}


def _read_jsonl(path: str) -> list[dict]:
  rows = []
  with open(path, encoding="utf-8") as f:
    for i, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise JaxscaleError(f"{path} line {i} is not valid JSON ({e.msg}); fix or remove it") from None
      if not isinstance(row, dict):
        raise JaxscaleError(f"{path} line {i} is not a JSON object")
      rows.append(row)
  return rows


def _read_csv(path: str, delimiter: str) -> list[dict]:
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.DictReader(f, delimiter=delimiter)
    if not reader.fieldnames:
      raise JaxscaleError(f"{path} has no header row naming its columns")
    return [{k.strip(): parse_cell(v) for k, v in row.items() if k is not None} for row in reader]


def parse_cell(text: Any) -> Any:
  """A CSV cell as bool, int, float, None (empty) or the stripped string."""
  if not isinstance(text, str):
    return text
  s = text.strip()
  if s == "":
    return None
  if s.lower() in ("true", "false"):
    return s.lower() == "true"
  for conv in (int, float):
    try:
      return conv(s)
    except ValueError:
      pass
  return s


def _column(values: Sequence[Any]) -> np.ndarray:
  present = [v for v in values if v is not None]
  if present and all(isinstance(v, (bool, np.bool_)) for v in present) and len(present) == len(values):
    return np.array(values, dtype=bool)
  numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                for v in present)
  if present and numeric:
    if len(present) == len(values) and all(isinstance(v, (int, np.integer)) for v in present):
      return np.array(values, dtype=np.int64)
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
  out = np.empty(len(values), dtype=object)
  out[:] = list(values)
  return out


def key(value: Any) -> str:
  """The group key of a value: "true"/"false", "1" for 1 and 1.0, repr for other floats."""
  if isinstance(value, (bool, np.bool_)):
    return "true" if value else "false"
  if isinstance(value, (int, np.integer)):
    return str(int(value))
  if isinstance(value, (float, np.floating)):
    v = float(value)
    if math.isfinite(v) and v == int(v) and abs(v) < 2 ** 63:
      return str(int(v))
    return repr(v)
  return str(value)


def column(table: Table, name: str) -> np.ndarray:
  """The column `name`, or a one-line error listing the columns there are."""
  if name not in table:
    raise JaxscaleError(f"no column '{name}' in the data; columns are: {', '.join(sorted(table))}")
  return table[name]


def numeric(table: Table, name: str) -> np.ndarray:
  """Column `name` as float64 [N], or a one-line error if it is not numeric."""
  col = column(table, name)
  if col.dtype == object:
    bad = next((v for v in col if not isinstance(v, (int, float)) or isinstance(v, bool)), None)
    raise JaxscaleError(f"column '{name}' must be numeric, found {bad!r}")
  return col.astype(np.float64)


def matches(table: Table, name: str, value: Any) -> np.ndarray:
  """Rows whose `name` equals `value` (compared as group keys; "1e5" matches 100000); bool [N]."""
  col = column(table, name)
  want = key(parse_cell(value) if isinstance(value, str) else value)
  return np.array([key(v) == want for v in col], dtype=bool)


def groups(table: Table, name: str) -> list[tuple[str, np.ndarray]]:
  """(key, row mask) for each distinct value of column `name`, in sorted order of the values."""
  col = column(table, name)
  keys = np.array([key(v) for v in col])
  uniq = sorted(set(keys.tolist()), key=lambda k: _sort_key(k))
  return [(k, keys == k) for k in uniq]


def _sort_key(k: str):
  order = {"false": 0, "true": 1}
  if k in order:
    return (0, order[k], "")
  try:
    return (1, float(k), "")
  except ValueError:
    return (2, 0.0, k)


def select(table: Table, mask: np.ndarray) -> Table:
  """The rows where mask [N] is True."""
  return {k: v[mask] for k, v in table.items()}
