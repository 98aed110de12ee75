"""JSON-lines files of records: whole-line appends, torn last lines, one record per run.

A file holds one JSON object per line. An append is one ``write`` of a whole line on an
``O_APPEND`` descriptor, then ``fsync``; a write the disk cannot take whole is cut back off, so a
full disk leaves the lines before it intact. A writer killed mid-append can still leave a **torn**
last line: no newline at the end and not valid JSON. Readers skip it with a warning; the writer
(:func:`heal`) moves it aside to ``<file>.torn-<time>`` and rewrites the file without it before it
appends, so it never becomes an inner line. Any other line that is not a JSON object is refused.

A record that names a ``cell_id`` is keyed by ``(stage, cell_id)`` (`key`): a file holds one
record per key. Appending a second record for a key is refused; readers (:func:`unique`) drop a
record that repeats an earlier one (the same result, `MEASUREMENT_FIELDS` aside) with one warning,
and refuse one that disagrees with it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from typing import Any, Iterable

from jaxscale.errors import JaxscaleError
from jaxscale.fileio import atomic_write_text

logger = logging.getLogger("jaxscale")

Row = tuple[int, dict]   # (file line, record)

# What a record identifies: the run's stage and cell (`jaxscale train` writes cell "run" per stage).
KEY_FIELDS = ("stage", "cell_id")
# Fields that say how or when a run was measured, not what it measured: two records of one key
# that differ only here hold the same result (e.g. one cell written by two processes).
MEASUREMENT_FIELDS = ("wall_s", "time", "group_size", "mesh", "version")

# path -> (file identity and size after our last look, the keys it holds): appends need not reread.
_KEYS: dict[str, tuple[tuple[int, int, int], set]] = {}


def key(record: dict) -> tuple | None:
  """``(stage, cell_id)`` of a record, or None for a row without a ``cell_id``."""
  if "cell_id" not in record:
    return None
  return tuple(str(record.get(f, "")) for f in KEY_FIELDS)


def _lines(path: str) -> list[str]:
  try:
    with open(path, encoding="utf-8-sig", newline="") as f:
      return f.read().split("\n")
  except UnicodeDecodeError as e:
    raise JaxscaleError(f"{path} is not UTF-8 text (byte {e.start} is {e.object[e.start:e.start + 1]!r}); "
                        "save it as UTF-8") from None


def parse(path: str) -> tuple[list[Row], tuple[int, str] | None]:
  """(every record with its line number, (line number, text) of a torn last line or None).

  A missing file has no records. A line that is not a JSON object, other than a torn last one,
  raises a one-line error naming it.
  """
  if not os.path.exists(path):
    return [], None
  lines = _lines(path)
  rows, torn = [], None
  for i, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      if i == len(lines):  # no newline after it: a write that was cut off
        torn = (i, line)
        continue
      raise JaxscaleError(f"{path} line {i} is not valid JSON ({e.msg}); fix or remove it (a record torn by "
                          "an interrupted write: its run is trained again)") from None
    if not isinstance(row, dict):
      raise JaxscaleError(f"{path} line {i} is not a JSON object; fix or remove it")
    rows.append((i, row))
  return rows, torn


def _result(record: dict) -> str:
  return json.dumps({k: v for k, v in record.items() if k not in MEASUREMENT_FIELDS}, sort_keys=True)


def unique(rows: Iterable[Row], path: str) -> list[Row]:
  """`rows` with repeats of a key dropped (one warning); two different results of a key refused."""
  first: dict[tuple, Row] = {}
  out, dropped = [], []
  for line, row in rows:
    k = key(row)
    if k is not None and k in first:
      line0, row0 = first[k]
      if _result(row0) != _result(row):
        field = next(f for f in sorted(set(row0) | set(row)) if f not in MEASUREMENT_FIELDS
                     and json.dumps(row0.get(f)) != json.dumps(row.get(f)))
        raise JaxscaleError(
            f"{path} lines {line0} and {line} hold different results for {k[0]} cell {k[1]} ({field} "
            f"{row0.get(field)!r} vs {row.get(field)!r}); delete the line that is wrong")
      dropped.append(line)
      continue
    if k is not None:
      first[k] = (line, row)
    out.append((line, row))
  if dropped:
    shown = ", ".join(map(str, dropped[:5])) + (", ..." if len(dropped) > 5 else "")
    logger.warning("%s: dropped %d record(s) that repeat an earlier one of the same cell (line%s %s); "
                   "one process writes a workdir at a time now", path, len(dropped),
                   "s" if len(dropped) > 1 else "", shown)
  return out


def read(path: str) -> list[dict]:
  """The records of `path`, each key once (`unique`); a torn last line is skipped with a warning."""
  rows, torn = parse(path)
  if torn is not None:
    logger.warning("%s: skipped its torn last line %d (a writer was interrupted)", path, torn[0])
  return [row for _, row in unique(rows, path)]


def heal(path: str) -> str | None:
  """Moves a torn last line of `path` to ``<path>.torn-<time>`` and rewrites `path` without it
  (atomically); says so once. Returns where the fragment went, or None when nothing was torn."""
  rows, torn = parse(path)
  if torn is None:
    return None
  with open(path, encoding="utf-8", newline="") as f:
    text = f.read()
  aside = f"{path}.torn-{time.strftime('%Y%m%d-%H%M%S')}"
  atomic_write_text(aside, torn[1])
  atomic_write_text(path, text[: text.rfind("\n") + 1])
  logger.warning("%s: its last line %d was torn by an interrupted write; moved it to %s and kept the %d "
                 "complete records", path, torn[0], aside, len(rows))
  return aside


def _identity(fd: int) -> tuple[int, int, int]:
  st = os.fstat(fd)
  return (st.st_dev, st.st_ino, st.st_size)


def _keys(path: str, fd: int) -> set:
  ident = _identity(fd)
  cached = _KEYS.get(path)
  if cached is None or cached[0] != ident:
    rows, _ = parse(path)
    cached = (ident, {key(r) for _, r in rows} - {None})
    _KEYS[path] = cached
  return cached[1]


def append(path: str, record: dict[str, Any]) -> None:
  """Appends `record` as one line of `path` (creating it and its folder), healing a torn last line
  first. A record whose key the file already holds is refused; a write the disk cannot take whole
  is cut back off and raised as a one-line error that says the earlier records are intact."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if not _ends_in_newline(path):
    heal(path)
  line = json.dumps(record, sort_keys=True, allow_nan=True) + "\n"
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    k = key(record)
    if k is not None and k in _keys(path, fd):
      raise JaxscaleError(f"{path} already holds a record of {k[0]} cell {k[1]}; a run is recorded once")
    size = os.fstat(fd).st_size
    if not _ends_in_newline(path):  # a complete last record without its newline: ours on a line of its own
      line = "\n" + line
    _write_whole(fd, path, line.encode(), size)
    if k is not None:
      _KEYS[path][1].add(k)
      _KEYS[path] = (_identity(fd), _KEYS[path][1])
  finally:
    os.close(fd)


def _ends_in_newline(path: str) -> bool:
  """True for a missing or empty file and for one whose last byte is a newline."""
  try:
    with open(path, "rb") as f:
      f.seek(0, os.SEEK_END)
      if f.tell() == 0:
        return True
      f.seek(-1, os.SEEK_END)
      return f.read(1) == b"\n"
  except FileNotFoundError:
    return True


def _write_whole(fd: int, path: str, data: bytes, size: int) -> None:
  """Writes `data` at the end of `fd` and syncs it, or cuts the file back to `size` and raises."""
  try:
    written = os.write(fd, data)
    if written != len(data):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    os.fsync(fd)
  except OSError as e:
    try:
      os.ftruncate(fd, size)
    except OSError:
      pass
    n = len(parse(path)[0])
    name = errno.errorcode.get(e.errno, e.errno)
    raise JaxscaleError(f"cannot append a record to {path}: {e.strerror or e} ({name}); its "
                        f"{n} earlier records are intact: free space (or fix the path) and run the same "
                        "command again to resume") from None
