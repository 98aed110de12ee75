"""Reading measurements (records.jsonl or CSV) into named columns.

A table is ``dict[str, np.ndarray]``, every column of one length N. Column types are inferred:
all-bool -> bool, all-integer -> int64, all-numeric -> float64 (a missing value becomes NaN),
anything else -> object (missing values are None). In CSV, ``true``/``false`` (any case) are
booleans and an empty cell is missing.

Every table read from a file also holds the column `LINE` ("__line__"): the file line of each row
(the header is line 1 of a CSV), so messages name the lines a user can open; it is not a data
column (`data_columns`). A CSV whose header names a column twice is refused. A records.jsonl whose
last line is torn (no newline at the end and not valid JSON: a writer was killed) is read without it.

Group keys (the names of groups in fits.json) are values written as strings by `key`: booleans as
``"true"``/``"false"``, integral numbers as integers (``1``, ``1.0`` -> ``"1"``), other floats by
``repr`` (``"0.5"``), strings as they are.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
from typing import Any, Sequence

import numpy as np

from jaxscale import jsonl
from jaxscale.errors import JaxscaleError

Table = dict[str, np.ndarray]
LINE = "__line__"
logger = logging.getLogger("jaxscale")


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
  for _, r in rows:
    names.update(dict.fromkeys(r))
  table = {n: _column([r.get(n) for _, r in rows]) for n in names}
  table[LINE] = np.array([i for i, _ in rows], np.int64)
  return table


def _read_jsonl(path: str) -> list[tuple[int, dict]]:
  """(line number, object) of every record (:mod:`jaxscale.jsonl`: a torn last line skipped with a
  warning, an inner bad line refused, a record repeating an earlier one of its cell dropped with a
  warning, two different results of one cell refused)."""
  rows, torn = jsonl.parse(path)
  if torn is not None:
    logger.warning("%s: skipped the torn last line %d (a writer was interrupted)", path, torn[0])
  return jsonl.unique(rows, path)


def _read_csv(path: str, delimiter: str) -> list[tuple[int, dict]]:
  """(line number, row) of every data row; the header must name each column once. The file is read
  as UTF-8, a byte-order mark at its start allowed; any other encoding is refused in one line."""
  try:
    with open(path, encoding="utf-8-sig", newline="") as f:
      return _csv_rows(path, f, delimiter)
  except UnicodeDecodeError:
    with open(path, "rb") as f:
      utf16 = f.read(2) in (b"\xff\xfe", b"\xfe\xff")
    raise JaxscaleError(f"{path} is {'UTF-16' if utf16 else 'not UTF-8'} text; save it as UTF-8 (a "
                        "spreadsheet's 'CSV UTF-8'), which is what jaxscale reads") from None


def _csv_rows(path: str, f, delimiter: str) -> list[tuple[int, dict]]:
  """The rows of an open CSV file `f` (see `_read_csv`)."""
  reader = csv.reader(f, delimiter=delimiter)
  header = next(reader, None)
  if not header or not any(h.strip() for h in header):
    raise JaxscaleError(f"{path} has no header row naming its columns")
  names = [h.strip() for h in header]
  seen: dict[str, int] = {}
  for j, n in enumerate(names, 1):
    if n in seen:
      raise JaxscaleError(f"{path} line 1 names column '{n}' twice (columns {seen[n]} and {j}); "
                          f"rename one of them")
    seen[n] = j
  rows = []
  for cells in reader:
    line = reader.line_num
    if not any(c.strip() for c in cells):
      continue
    if len(cells) > len(names):
      raise JaxscaleError(f"{path} line {line} has {len(cells)} cells but the header names "
                          f"{len(names)} columns")
    rows.append((line, {n: parse_cell(c) for n, c in zip(names, cells)}))
  return rows


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


def data_columns(table: Table) -> list[str]:
  """The data column names (without `LINE`)."""
  return [k for k in table if k != LINE]


def n_rows(table: Table) -> int:
  return len(next(iter(table.values()))) if table else 0


def lines(table: Table) -> np.ndarray:
  """The file line of every row [N] (row indices + 1 when the table did not come from a file)."""
  return table[LINE] if LINE in table else np.arange(1, n_rows(table) + 1)


def column(table: Table, name: str) -> np.ndarray:
  """The column `name`, or a one-line error listing the columns there are."""
  if name not in table or name == LINE:
    raise JaxscaleError(f"no column '{name}' in the data; columns are: "
                        f"{', '.join(sorted(data_columns(table)))}")
  return table[name]


def numeric(table: Table, name: str) -> np.ndarray:
  """Column `name` as float64 [N], or a one-line error naming the first line that is not."""
  col = column(table, name)
  if col.dtype == object:
    bad = [i for i, v in enumerate(col)
           if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool))]
    if bad:
      raise JaxscaleError(f"column '{name}' must be numeric, found {col[bad[0]]!r} on line "
                          f"{int(lines(table)[bad[0]])}" + (f" (and {len(bad) - 1} more lines)"
                                                             if len(bad) > 1 else ""))
    return np.array([np.nan if v is None else float(v) for v in col], np.float64)
  return col.astype(np.float64)


_WHERE = re.compile(r"^\s*([^<>=!]+?)\s*(>=|<=|!=|==|=|>|<)\s*(.*?)\s*$", re.S)


def parse_where(text: str) -> tuple[str, str, str]:
  """'dp>=1000' -> ('dp', '>=', '1000'); the value is everything after the operator (commas too)."""
  m = _WHERE.match(text or "")
  if not m or not m.group(3):
    raise JaxscaleError(f"--where expects COLUMN=VALUE or a comparison COLUMN>=VALUE (also >, <, "
                        f"<=, !=), one condition per flag; got '{text}'")
  return m.group(1), m.group(2), m.group(3)


def where(table: Table, text: str) -> np.ndarray:
  """Rows satisfying one `--where` condition (`parse_where`); bool [N].

  = and != compare as group keys (`matches`); <, <=, >, >= compare numbers.
  """
  name, op, value = parse_where(text)
  if op in ("=", "=="):
    return matches(table, name, value)
  if op == "!=":
    return ~matches(table, name, value)
  try:
    v = float(value)
  except ValueError:
    raise JaxscaleError(f"--where {text}: {op} needs a number, got '{value}'") from None
  col = numeric(table, name)
  with np.errstate(invalid="ignore"):
    return {"<": col < v, "<=": col <= v, ">": col > v, ">=": col >= v}[op]


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
