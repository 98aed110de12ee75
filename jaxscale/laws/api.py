"""`analyze`: one call from a table of measurements to fitted laws, their uncertainty, the boundary.

It returns an `Analysis` (typed: one `GroupFit` per group with its fit, bootstrap and rows; the
boundary; the fits.json content). The fits.json schema (version 2) is documented, key by key, in
docs/laws.md and checked against what is written by tests/laws/test_schema.py. In short::

  {"schema_version": 2, "law", "formula", "target", "inputs": {INPUT: COLUMN}, "split_by",
   "fixed": {NAME: VALUE}, "bounds": {NAME: [LO, HI]},
   "objective": {"loss": "huber" | "squared", "delta"},
   "effort": {"starts", "steps", "tol", "screen_rows", "refine"},
   "bootstrap": {"n", "unit", "level", "seed"}, "floor", "holdout": {"column", "value"} | null,
   "groups": {KEY: GROUP}, "boundary": BOUNDARY | null}

KEY is the split value as a string (`table.key`) or "all". Every NaN is written as null.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from jaxscale.errors import JaxscaleError
from jaxscale.fileio import atomic_write_bytes, atomic_write_text
from jaxscale.laws import boundary as boundary_lib
from jaxscale.laws import fit as fit_lib
from jaxscale.laws import forms as forms_lib
from jaxscale.laws import table as table_lib
from jaxscale.laws import uncertainty
from jaxscale.laws import validate
from jaxscale.laws.forms import LawForm
from jaxscale.laws.inputs import input_or_column, resolve_inputs, target_values

SCHEMA_VERSION = 2
# Per-row fitted values and log-residuals stay in fits.json for groups of up to this many rows (fitted
# plus held out); a larger group's go to the side file `rows_path(fits.json)` (an .npz), so a fit of
# millions of rows writes a small fits.json (a 2M-row fit wrote 136 MB of JSON lists). `jaxscale fit
# --max-json-rows` changes it.
MAX_JSON_ROWS = 20_000
__all__ = ["analyze", "Analysis", "GroupFit", "write_fits", "read_rows", "rows_path", "sanitize",
           "resolve_inputs", "target_values", "SCHEMA_VERSION", "MAX_JSON_ROWS"]


@dataclasses.dataclass
class Rows:
  """Rows of one group: inputs x (name -> float64 [n]), target y [n], file lines [n]."""
  x: dict[str, np.ndarray]
  y: np.ndarray
  lines: np.ndarray
  n_floored: int = 0


@dataclasses.dataclass
class GroupFit:
  """One group's law: the fit, its bootstrap (or None), the fitted rows and held-out rows."""
  key: str
  fit: fit_lib.FitResult
  bootstrap: uncertainty.Bootstrap | None
  rows: Rows
  holdout: Rows | None

  @property
  def x(self) -> dict[str, np.ndarray]:
    return self.rows.x


@dataclasses.dataclass
class Analysis:
  """What `analyze` found: groups by key, the boundary and extra boundaries, fits.json content."""
  content: dict[str, Any]
  groups: dict[str, GroupFit]
  boundary: dict | None
  boundaries: list[dict]
  warnings: list[str]


def _plan_groups(table, split_by, columns, target, floor, hold_mask, form):
  """(key, fitted Rows, held-out Rows | None) per group; every data problem raised up front."""
  n = table_lib.n_rows(table)
  split = table_lib.groups(table, split_by) if split_by else [("all", np.ones(n, bool))]
  plans = []
  for key, gmask in split:
    where = f" in group {split_by}={key}" if split_by else ""
    try:
      parts = []
      for mask in (gmask & ~hold_mask, gmask & hold_mask):
        sub = table_lib.select(table, mask)
        x = {k: table_lib.numeric(sub, c) for k, c in columns.items()}
        y, n_floored = target_values(sub, target, floor)
        parts.append(Rows(x, y, table_lib.lines(sub), n_floored))
      fit_lib.check_data(form, parts[0].x, parts[0].y, columns, target, parts[0].lines)
      if len(parts[1].y):
        fit_lib.check_data(form, parts[1].x, parts[1].y, columns, target, parts[1].lines,
                           require_fit=False)
    except JaxscaleError as e:
      raise JaxscaleError(f"{e}{where}") from None
    plans.append((key, parts[0], parts[1] if hold_mask.any() else None))
  return plans


def _checked_table(table: Mapping[str, np.ndarray], form: LawForm, inputs: Mapping[str, str],
                   target: str, split_by: str | None, holdout: tuple[str, Any] | None):
  """(the table as numpy columns with a "line" column, law input -> column, the held-out rows'
  mask), every named column checked to exist."""
  table = {k: np.asarray(v) for k, v in table.items()}
  if table_lib.LINE not in table and table:  # not from a file: "line" i is row i - 1
    table[table_lib.LINE] = table_lib.lines(table)
  if not table_lib.data_columns(table):
    raise JaxscaleError("the table has no columns")
  columns = resolve_inputs(form, inputs)
  for col in list(columns.values()) + [target] + ([split_by] if split_by else []):
    table_lib.column(table, col)
  hold_mask = np.zeros(table_lib.n_rows(table), bool)
  if holdout is not None:
    hold_mask = table_lib.matches(table, *holdout)
    if not hold_mask.any():
      raise JaxscaleError(f"no rows have {holdout[0]}={holdout[1]}; choose a holdout value present "
                          f"in the data")
  return table, columns, hold_mask


def analyze(table: Mapping[str, np.ndarray], *, law: str, inputs: Mapping[str, str], target: str,
            split_by: str | None = None, bootstrap: int = 0, boundary: str | None = None,
            at: Mapping[str, float] | None = None, holdout: tuple[str, Any] | None = None,
            seed: int = 0, floor: float | None = None, loss: str = fit_lib.DEFAULT_LOSS,
            delta: float = fit_lib.DEFAULT_DELTA, max_starts: int = fit_lib.DEFAULT_MAX_STARTS,
            iters: int = fit_lib.DEFAULT_ITERS, tol: float = fit_lib.DEFAULT_TOL,
            fix: Mapping[str, float] | None = None,
            bounds: Mapping[str, tuple[float, float]] | None = None, level: float = 0.95,
            boundary_range: tuple[float, float] | None = None,
            boundary_at: Sequence[Mapping[str, float]] = (), rows: bool = True,
            progress: bool = True, group_labels: Mapping[str, str] | None = None,
            cluster_by: Sequence[str] | None = None) -> Analysis:
  """Fits `law` per group of `split_by`; returns an `Analysis` (fits.json in `.content`).

  inputs: law input name -> column (e.g. {"Dp": "dp", "M": "params", "Df": "df"}; names match
    case-insensitively, "params"/"N" also name M). target: the column fitted (> 0).
  loss/delta: "huber" (delta on log residuals) or "squared". max_starts/iters/tol: the effort
    (`fit.fit`). fix: parameters held at values; bounds: hard limits (lo, hi) per parameter.
  bootstrap: number of cluster-bootstrap refits for CIs (0: none); a cluster is the rows with equal
    values of every input, or of the inputs in `cluster_by` (e.g. the points of one run's curve).
  boundary: the input (or its column) along which to solve E(first group) = E(second group);
    needs `split_by` with exactly two values and `at` giving every other input. Its range is
    `boundary_range` or the input's range over all rows of both groups (held-out rows included);
    `boundary_at`: further `at` points whose boundaries are solved too (`.boundaries`).
  holdout: (column, value): those rows are not fitted but predicted (per-group "holdout").
  floor: clip targets up to this value instead of failing on zeros (reported as a warning).
  rows: write the fitted value and log-residual of every row into fits.json.
  group_labels: group key -> words for the progress lines (e.g. {"false": "the plain arm"}).
  Every input problem is found before the first fit starts.
  """
  form = forms_lib.get(law).constrain(fix, bounds)
  table, columns, hold_mask = _checked_table(table, form, inputs, target, split_by, holdout)
  plans = _plan_groups(table, split_by, columns, target, floor, hold_mask, form)
  request = (None if boundary is None
             else _boundary_request(form, columns, split_by, len(plans), boundary, at or {}))

  groups = {}
  for gi, (key, fitted, held) in enumerate(plans):
    name = group_name(key, split_by, group_labels)
    res = fit_lib.fit(form, fitted.x, fitted.y, loss=loss, delta=delta, max_starts=max_starts,
                      iters=iters, tol=tol, seed=seed + gi, columns=columns, target=target,
                      lines=fitted.lines, progress=progress, desc=f"fitting {name}")
    boot = _bootstrap(res, fitted, bootstrap, seed + 1000 + gi, progress, name, cluster_by)
    groups[key] = GroupFit(key, res, boot, fitted, held)
  settings = dict(law=law, target=target, columns=columns, split_by=split_by, fix=fix,
                  bounds=bounds, loss=loss, delta=delta, max_starts=max_starts, iters=iters,
                  tol=tol, bootstrap=bootstrap, level=level, seed=seed, floor=floor,
                  holdout=holdout)
  content = _content(form, settings, groups, level, rows)
  head, extra, warnings = None, [], []
  if request is not None:
    inp, at_c = request
    rng, source = _boundary_range(table, columns, plans, inp, boundary_range)
    warnings = _at_warnings(at_c, groups, columns)
    solve = lambda a: _solve_boundary(form, groups, inp, a, rng, level, source, warnings)
    head, extra = solve(at_c), [solve(_boundary_request(form, columns, split_by, len(plans), boundary, a)[1])
                                for a in boundary_at]
  content["boundary"] = head
  return Analysis(content=sanitize(content), groups=groups, boundary=head, boundaries=extra,
                  warnings=warnings)


def _bootstrap(res: fit_lib.FitResult, rows: Rows, n: int, seed: int, progress: bool, name: str,
               cluster_by: Sequence[str] | None) -> uncertainty.Bootstrap | None:
  """`n` cluster-bootstrap refits of one group's fit (None for n <= 0); clusters by `cluster_by`'s
  inputs (None: all)."""
  if n <= 0:
    return None
  clusters = None if cluster_by is None else uncertainty.cluster_ids({k: rows.x[k] for k in cluster_by})
  return uncertainty.bootstrap(res, rows.x, rows.y, n, seed=seed, clusters=clusters, progress=progress,
                               desc=f"bootstrapping {name} ({n} resamples)")


def group_name(key: str, split_by: str | None, labels: Mapping[str, str] | None = None) -> str:
  """A group in words for progress lines: its label, else ``the law`` (one group) or
  ``the rows with COLUMN = VALUE``."""
  if labels and key in labels:
    return labels[key]
  return "the law" if split_by is None else f"the rows with {split_by} = {key}"


def _content(form: LawForm, s: dict, groups: dict[str, GroupFit], level: float, rows: bool) -> dict:
  return {
      "schema_version": SCHEMA_VERSION, "law": s["law"], "formula": form.formula,
      "target": s["target"], "inputs": dict(s["columns"]), "split_by": s["split_by"],
      "fixed": dict(form.fixed), "bounds": {k: list(map(float, v)) for k, v in (s["bounds"] or {}).items()},
      "objective": {"loss": s["loss"], "delta": float(s["delta"]) if s["loss"] == "huber" else None},
      "effort": {"starts": int(s["max_starts"]), "steps": int(s["iters"]), "tol": float(s["tol"]),
                 "screen_rows": fit_lib.DEFAULT_SCREEN_ROWS, "refine": fit_lib.DEFAULT_REFINE},
      "bootstrap": {"n": int(s["bootstrap"]), "unit": "cluster", "level": level,
                    "seed": int(s["seed"])},
      "floor": s["floor"],
      "holdout": None if s["holdout"] is None else {"column": s["holdout"][0],
                                                    "value": _plain(s["holdout"][1])},
      "groups": {k: _group_entry(form, s, g, level, rows) for k, g in groups.items()},
      "boundary": None}


def _group_entry(form: LawForm, s: dict, g: GroupFit, level: float, rows: bool) -> dict:
  res, boot = g.fit, g.bootstrap
  warnings = list(res.warnings)
  if g.rows.n_floored:
    warnings.insert(0, f"{g.rows.n_floored} target value(s) below the floor {s['floor']:g} were "
                       f"clipped up to it")
  free = set(form.param_names)
  params = {}
  for name, value in res.params.items():
    kind = "free" if name in free else "fixed" if name in form.fixed else "derived"
    lo, hi = boot.ci(name, level) if boot is not None else (None, None)
    params[name] = {"value": value, "ci_low": lo, "ci_high": hi, "kind": kind}
    if boot is not None and kind == "free" and lo is not None and np.isfinite(lo) and np.isfinite(hi):
      spec = next(p for p in form.params if p.name == name)
      if (spec.log and spec.limits is None and lo > 0 and hi / lo > 100.0) or \
         (not spec.log and hi - lo > 2.0):
        warnings.append(f"parameter {name} is poorly constrained: {level:.0%} CI "
                        f"[{lo:.4g}, {hi:.4g}]")
  entry = {"law": form.name, "formula": form.formula, "inputs": dict(s["columns"]),
           "target": s["target"], "n": res.n, "n_free": res.n_free, "dof": res.n - res.n_free,
           "range": {n: [float(np.min(v)), float(np.max(v))] for n, v in g.rows.x.items()},
           "params": params, "statistics": res.statistics(), "warnings": warnings}
  pred = forms_lib.predict(form.name, res.params, g.rows.x)
  if rows:
    entry["rows"] = _rows_entry(g.rows, pred)
  if g.holdout is not None:
    hpred = forms_lib.predict(form.name, res.params, g.holdout.x) if len(g.holdout.y) else np.zeros(0)
    entry["holdout"] = validate.holdout_metrics(hpred, g.holdout.y)
    if rows:
      entry["holdout"]["rows"] = _rows_entry(g.holdout, hpred)
  if boot is not None:
    names = list(form.param_names) + list(form.fixed)
    entry["bootstrap_samples"] = {n: boot.params[n].tolist() for n in names}
  return entry


def _rows_entry(r: Rows, pred: np.ndarray) -> dict:
  """{"line": [n], "fitted": [n], "log_residual": [n]} with log_residual = log y - log fitted."""
  return {"line": [int(v) for v in r.lines], "fitted": pred.tolist(),
          "log_residual": (np.log(r.y) - np.log(pred)).tolist()}


def _boundary_request(form, columns, split_by, n_groups, name, at) -> tuple[str, dict]:
  """(input, {other input: value}) of a boundary request, or a one-line error."""
  if split_by is None or n_groups != 2:
    raise JaxscaleError(f"a boundary needs --split-by naming a column with exactly two values; "
                        f"{'no split was given' if split_by is None else f'{split_by} has {n_groups}'}")
  inp = input_or_column(form, columns, name)
  at_c = {input_or_column(form, columns, k): float(v) for k, v in at.items()}
  at_c.pop(inp, None)
  missing = [k for k in form.inputs if k != inp and k not in at_c]
  if missing:
    raise JaxscaleError(f"the boundary along {inp} needs the other inputs fixed: pass --at "
                        f"{','.join(f'{m}=VALUE' for m in missing)}")
  return inp, at_c


def _boundary_range(table, columns, plans, inp, given) -> tuple[tuple[float, float], str]:
  """The root-search range: `given`, or `inp`'s range over every row of both groups."""
  if given is not None:
    return (float(given[0]), float(given[1])), "given"
  v = np.concatenate([np.concatenate([p[1].x[inp]] + ([p[2].x[inp]] if p[2] is not None else []))
                      for p in plans])
  return (float(np.min(v)), float(np.max(v))), "data"


def _at_warnings(at_c, groups, columns) -> list[str]:
  """One warning per `at` value that lies outside the range a group was fitted on."""
  out = []
  for name, value in at_c.items():
    for key, g in groups.items():
      lo, hi = float(np.min(g.rows.x[name])), float(np.max(g.rows.x[name]))
      if not lo <= value <= hi:
        out.append(f"--at {name}={value:g} lies outside the range group {key} was fitted on "
                   f"({columns[name]} in [{lo:g}, {hi:g}]): the boundary there is an extrapolation")
  return out


def _solve_boundary(form, groups, inp, at_c, rng, level, source, warnings) -> dict:
  (ka, ga), (kb, gb) = groups.items()
  with_boot = ga.bootstrap is not None and gb.bootstrap is not None
  k = min(len(ga.bootstrap.u), len(gb.bootstrap.u)) if with_boot else 0
  out = boundary_lib.boundary(
      form, ga.fit.params, gb.fit.params, inp, at_c, *rng,
      boot_a={n: v[:k] for n, v in ga.bootstrap.params.items()} if with_boot else None,
      boot_b={n: v[:k] for n, v in gb.bootstrap.params.items()} if with_boot else None,
      level=level, groups=(ka, kb), range_source=source)
  out["warnings"] = [w for w in warnings if w.startswith(tuple(f"--at {n}=" for n in at_c))]
  return out


def _plain(v: Any) -> Any:
  if isinstance(v, (np.bool_, bool)):
    return bool(v)
  if isinstance(v, np.integer):
    return int(v)
  if isinstance(v, np.floating):
    return float(v)
  return v


def sanitize(obj: Any) -> Any:
  """A copy of obj with numpy scalars made plain and NaN/inf written as None (valid JSON)."""
  if isinstance(obj, dict):
    return {str(k): sanitize(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [sanitize(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return sanitize(obj.tolist())
  obj = _plain(obj)
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def rows_path(fits_path: str) -> str:
  """The side file of `fits_path`'s per-row values: ``fits.json`` -> ``fits.rows.npz``."""
  root, ext = os.path.splitext(fits_path)
  return (root if ext == ".json" else fits_path) + ".rows.npz"


def _row_blocks(content: Mapping[str, Any]) -> list[tuple[str, dict, dict]]:
  """(npz key prefix, the dict holding "rows", its rows entry) for every group's fitted and held-out rows."""
  out = []
  for key, g in content.get("groups", {}).items():
    for prefix, holder in ((f"{key}/rows", g), (f"{key}/holdout/rows", g.get("holdout") or {})):
      if isinstance(holder.get("rows"), dict) and "line" in holder["rows"]:
        out.append((prefix, holder, holder["rows"]))
  return out


def _split_rows(content: Mapping[str, Any], max_rows: int, side_name: str) -> tuple[dict, dict]:
  """(content with each block of more than `max_rows` rows replaced by {"n", "file", "key"},
  {npz name: array} of those rows)."""
  content = json.loads(json.dumps(sanitize(content)))
  arrays = {}
  for prefix, holder, rows in _row_blocks(content):
    n = len(rows["line"])
    if n > max_rows:
      for name, values in rows.items():
        arrays[f"{prefix}/{name}"] = np.array([np.nan if v is None else v for v in values],
                                              np.int64 if name == "line" else np.float64)
      holder["rows"] = {"n": n, "file": side_name, "key": prefix}
  return content, arrays


def write_fits(path: str, content: Mapping[str, Any], force: bool = False,
               max_rows: int = MAX_JSON_ROWS) -> None:
  """Writes `content` as JSON to `path` atomically (temp file + os.replace).

  A group's per-row values ("rows": line, fitted, log_residual) stay inline for up to `max_rows`
  rows; larger blocks go to ``rows_path(path)`` (an .npz written atomically before the JSON that
  points at it; :func:`read_rows` reads either). An existing file is never overwritten unless `force`.
  """
  if os.path.exists(path) and not force:
    raise JaxscaleError(f"{path} exists; pass --force (write_fits(force=True)) to overwrite it")
  side = rows_path(path)
  content, arrays = _split_rows(content, int(max_rows), os.path.basename(side))
  if arrays:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(side, buf.getvalue())
  atomic_write_text(path, json.dumps(content, indent=1, allow_nan=False) + "\n")
  if not arrays and os.path.exists(side):   # a side file of an earlier, larger fit at this path
    os.remove(side)


def read_rows(fits: Mapping[str, Any], fits_path: str, group: str, holdout: bool = False) -> dict[str, np.ndarray]:
  """A group's per-row values {"line", "fitted", "log_residual"} as arrays, read from fits.json itself
  or from its side file (see :func:`write_fits`); {} when the fit was written without rows."""
  g = fits["groups"][group]
  rows = ((g.get("holdout") or {}) if holdout else g).get("rows")
  if not rows:
    return {}
  if "file" not in rows:
    return {k: np.asarray([np.nan if v is None else v for v in vals], np.int64 if k == "line" else np.float64)
            for k, vals in rows.items()}
  side = os.path.join(os.path.dirname(os.path.abspath(fits_path)), rows["file"])
  if not os.path.exists(side):
    raise JaxscaleError(f"{fits_path} keeps the rows of group {group} in {rows['file']}, which is missing; "
                        f"copy it beside {os.path.basename(fits_path)} or fit again")
  with np.load(side) as npz:
    return {k.rsplit("/", 1)[1]: npz[k] for k in npz.files if k.rsplit("/", 1)[0] == rows["key"]}
