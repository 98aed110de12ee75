"""`analyze`: one call from a table of measurements to the content of fits.json.

fits.json (schema version 1)::

  {"version": 1, "law": NAME, "formula": TEXT, "target": COLUMN,
   "inputs": {INPUT: COLUMN, ...}, "split_by": COLUMN | null,
   "objective": {"loss": "huber_log", "delta": 1e-3},
   "bootstrap": {"n": B, "unit": "cluster", "level": 0.95, "seed": S},
   "floor": F | null, "holdout": {"column": C, "value": V} | null,
   "groups": {KEY: {"law", "formula", "inputs", "target", "n",
                    "range": {INPUT: [min, max]},
                    "params": {NAME: {"value", "ci_low", "ci_high"}},
                    "statistics": {"n", "objective", "converged", "newton_decrement", "r2_log",
                                   "rmse_log", "n_starts", "n_best_basin"},
                    "warnings": [TEXT, ...],
                    "holdout": {"n", "log_rmse", "are"}      (only with a holdout)}},
   "boundary": {"input", "at", "range", "groups", "delta", "roots": [{"value", "ci_low",
                "ci_high", "slope", "ci_found"}], "sign_below", "n_boot", "boot_crossing_frac"}
               | null}

KEY is the split value as a string (`table.key`: "true"/"false", "0"/"1", ...) or "all". CIs are
null without bootstrap; every NaN is written as null.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping

import numpy as np

from jaxscale.errors import JaxscaleError
from jaxscale.laws import boundary as boundary_lib
from jaxscale.laws import fit as fit_lib
from jaxscale.laws import forms as forms_lib
from jaxscale.laws import table as table_lib
from jaxscale.laws import uncertainty
from jaxscale.laws import validate
from jaxscale.laws.forms import LawForm

logger = logging.getLogger("jaxscale")
SCHEMA_VERSION = 1


def resolve_inputs(form: LawForm, inputs: Mapping[str, str]) -> dict[str, str]:
  """{canonical input name: column} from a user mapping; every input of the law must be given."""
  out: dict[str, str] = {}
  for name, col in inputs.items():
    canon = form.resolve_input(name)
    if canon in out:
      raise JaxscaleError(f"input {canon} of law '{form.name}' is given twice")
    out[canon] = col
  missing = [n for n in form.inputs if n not in out]
  if missing:
    raise JaxscaleError(f"law '{form.name}' needs inputs {', '.join(form.inputs)}; missing "
                        f"{', '.join(missing)} (pass --inputs {','.join(f'{m}=COLUMN' for m in missing)})")
  return {n: out[n] for n in form.inputs}


def _input_or_column(form: LawForm, columns: Mapping[str, str], name: str) -> str:
  """The law input meant by `name`: an input name (any case, aliases) or the column it reads."""
  try:
    return form.resolve_input(name)
  except JaxscaleError:
    hits = [n for n, c in columns.items() if c == name]
    if len(hits) == 1:
      return hits[0]
    raise


def target_values(table: Mapping[str, np.ndarray], target: str,
                  floor: float | None) -> tuple[np.ndarray, int]:
  """Target float64 [N], clipped up to `floor` when given; also how many values were clipped."""
  y = table_lib.numeric(table, target)
  if floor is None:
    return y, 0
  if not floor > 0:
    raise JaxscaleError(f"floor must be positive, got {floor}")
  n = int(np.sum(y < floor))
  return np.where(np.isnan(y), y, np.maximum(y, floor)), n


def analyze(table: Mapping[str, np.ndarray], *, law: str, inputs: Mapping[str, str], target: str,
            split_by: str | None = None, bootstrap: int = 0, boundary: str | None = None,
            at: Mapping[str, float] | None = None, holdout: tuple[str, Any] | None = None,
            seed: int = 0, floor: float | None = None, delta: float = fit_lib.DEFAULT_DELTA,
            max_starts: int = fit_lib.DEFAULT_MAX_STARTS, level: float = 0.95,
            boundary_range: tuple[float, float] | None = None, progress: bool = True,
            details: dict | None = None) -> dict:
  """Fits `law` per group of `split_by` and returns the fits.json content (see module doc).

  inputs: law input name -> column (e.g. {"Dp": "dp", "M": "params", "Df": "df"}; names match
    case-insensitively, "params"/"N" also name M). target: the column fitted (> 0).
  bootstrap: number of cluster-bootstrap refits for CIs (0: none).
  boundary: the input (or its column) along which to solve E(first group) = E(second group);
    needs `split_by` with exactly two values and `at` giving every other input.
  holdout: (column, value): those rows are not fitted but predicted (per-group "holdout").
  floor: clip targets up to this value instead of failing on zeros (reported as a warning).
  boundary_range: (lo, hi) for the root search; default the data range of that input.
  details: if given, filled with {group key: (FitResult, Bootstrap | None, inputs)} so a caller can
    draw bands or solve further boundaries without refitting.
  """
  form = forms_lib.get(law)
  table = {k: np.asarray(v) for k, v in table.items()}
  if not table:
    raise JaxscaleError("the table has no columns")
  columns = resolve_inputs(form, inputs)
  for col in list(columns.values()) + [target] + ([split_by] if split_by else []):
    table_lib.column(table, col)
  n_rows = len(next(iter(table.values())))
  split = (table_lib.groups(table, split_by) if split_by else [("all", np.ones(n_rows, bool))])
  hold_mask = np.zeros(n_rows, bool)
  if holdout is not None:
    hcol, hval = holdout
    hold_mask = table_lib.matches(table, hcol, hval)
    if not hold_mask.any():
      raise JaxscaleError(f"no rows have {hcol}={hval}; choose a holdout value present in the data")

  if boundary is not None:  # check the request before any fitting
    _boundary_request(form, columns, split_by, len(split), boundary, at or {})

  groups_out: dict[str, dict] = {}
  fits: dict[str, tuple] = {}
  for gi, (gkey, gmask) in enumerate(split):
    train = gmask & ~hold_mask
    sub = table_lib.select(table, train)
    x = {n: table_lib.numeric(sub, c) for n, c in columns.items()}
    y, n_floored = target_values(sub, target, floor)
    where = f" in group {split_by}={gkey}" if split_by else ""
    try:
      res = fit_lib.fit(form, x, y, delta=delta, max_starts=max_starts, seed=seed + gi,
                        columns=columns, target=target)
    except JaxscaleError as e:
      raise JaxscaleError(f"{e}{where}") from None
    boot = None
    if bootstrap > 0:
      boot = uncertainty.bootstrap(res, x, y, bootstrap, seed=seed + 1000 + gi, delta=delta,
                                   progress=progress, desc=f"bootstrap {gkey}")
    entry = _group_entry(form, columns, target, x, res, boot, level)
    if n_floored:
      entry["warnings"].insert(0, f"{n_floored} target value(s) below the floor {floor:g} were "
                                  f"clipped up to it")
    if holdout is not None:
      hsub = table_lib.select(table, gmask & hold_mask)
      hx = {n: table_lib.numeric(hsub, c) for n, c in columns.items()}
      hy, _ = target_values(hsub, target, floor)
      pred = forms_lib.predict(form.name, res.params, hx) if len(hy) else np.zeros(0)
      entry["holdout"] = validate.holdout_metrics(pred, hy)
    for w in entry["warnings"]:
      logger.warning("fit %s%s: %s", law, where, w)
    groups_out[gkey] = entry
    fits[gkey] = (res, boot, x)
    if details is not None:
      details[gkey] = (res, boot, x)

  out = {"version": SCHEMA_VERSION, "law": law, "formula": form.formula, "target": target,
         "inputs": dict(columns), "split_by": split_by,
         "objective": {"loss": "huber_log", "delta": float(delta)},
         "bootstrap": {"n": int(bootstrap), "unit": "cluster", "level": level, "seed": int(seed)},
         "floor": floor, "holdout": None if holdout is None else
         {"column": holdout[0], "value": _plain(holdout[1])},
         "groups": groups_out, "boundary": None}
  if boundary is not None:
    out["boundary"] = _boundary(form, columns, fits, split_by, boundary, at or {}, level,
                                boundary_range)
  return sanitize(out)


def _group_entry(form, columns, target, x, res, boot, level) -> dict:
  params = {}
  warnings = list(res.warnings)
  for name, value in res.params.items():
    lo, hi = boot.ci(name, level) if boot is not None else (None, None)
    params[name] = {"value": value, "ci_low": lo, "ci_high": hi}
  if boot is not None:
    specs = {p.name: p for p in form.params}
    for name, p in params.items():
      spec = specs.get(name)
      lo, hi = p["ci_low"], p["ci_high"]
      if spec is None or lo is None or not (np.isfinite(lo) and np.isfinite(hi)):
        continue
      wide = (spec.log and lo > 0 and hi / lo > 100.0) or (not spec.log and hi - lo > 2.0)
      if wide:
        warnings.append(f"parameter {name} is poorly constrained: {level:.0%} CI "
                        f"[{lo:.4g}, {hi:.4g}]")
  return {"law": form.name, "formula": form.formula, "inputs": dict(columns), "target": target,
          "n": res.n, "range": {n: [float(np.min(v)), float(np.max(v))] for n, v in x.items()},
          "params": params, "statistics": res.statistics(), "warnings": warnings}


def _boundary_request(form, columns, split_by, n_groups, name, at) -> tuple[str, dict]:
  """(input, {other input: value}) of a boundary request, or a one-line error."""
  if split_by is None or n_groups != 2:
    raise JaxscaleError(f"a boundary needs --split-by naming a column with exactly two values; "
                        f"{'no split was given' if split_by is None else f'{split_by} has {n_groups}'}")
  inp = _input_or_column(form, columns, name)
  at_c = {_input_or_column(form, columns, k): float(v) for k, v in at.items()}
  at_c.pop(inp, None)
  missing = [k for k in form.inputs if k != inp and k not in at_c]
  if missing:
    raise JaxscaleError(f"the boundary along {inp} needs the other inputs fixed: pass --at "
                        f"{','.join(f'{m}=VALUE' for m in missing)}")
  return inp, at_c


def _boundary(form, columns, fits, split_by, name, at, level, boundary_range) -> dict:
  inp, at_c = _boundary_request(form, columns, split_by, len(fits), name, at)
  (ka, (ra, ba, xa)), (kb, (rb, bb, xb)) = fits.items()
  if boundary_range is None:
    lo = float(min(xa[inp].min(), xb[inp].min()))
    hi = float(max(xa[inp].max(), xb[inp].max()))
  else:
    lo, hi = map(float, boundary_range)
  with_boot = ba is not None and bb is not None
  return boundary_lib.boundary(
      form, ra.params, rb.params, inp, at_c, lo, hi,
      boot_a=ba.params if with_boot else None, boot_b=bb.params if with_boot else None,
      level=level, groups=(ka, kb))


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
  obj = _plain(obj)
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def write_fits(path: str, content: Mapping[str, Any], force: bool = False) -> None:
  """Writes `content` as JSON to `path` atomically (temp file + os.replace).

  An existing file is never overwritten unless `force`.
  """
  import json
  import os
  from jaxscale.fileio import atomic_write_text
  if os.path.exists(path) and not force:
    raise JaxscaleError(f"{path} exists; pass --force (write_fits(force=True)) to overwrite it")
  atomic_write_text(path, json.dumps(sanitize(content), indent=2, allow_nan=False) + "\n")
