"""`jaxscale predict`: evaluate the laws of a fits.json at the rows of a file; write a CSV.

Each row is predicted by its group's law (the group is read from the fit's --split-by column when
the fit had one). With bootstrap samples in fits.json, every prediction also gets the percentile
interval of the resampled laws at the fit's level.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import warnings

import jax.numpy as jnp
import numpy as np

from jaxscale.errors import JaxscaleError
from jaxscale.fileio import atomic_write_text, check_writable
from jaxscale.laws import forms as forms_lib
from jaxscale.laws import table as table_lib
from jaxscale.laws.numeric import float64

HELP = "predict new rows with the laws of a fits.json (with bootstrap intervals when it has them)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("fits", metavar="FITS_JSON", help="a fits.json written by `jaxscale fit`")
  parser.add_argument("file", metavar="FILE", help=".csv or .jsonl holding the law's input columns")
  parser.add_argument("--out", required=True, metavar="CSV", help="where to write the predictions")
  parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")


def read_fits(path: str) -> dict:
  if not os.path.exists(path):
    raise JaxscaleError(f"no such file: {path}")
  try:
    with open(path, encoding="utf-8") as f:
      fits = json.load(f)
  except json.JSONDecodeError as e:
    raise JaxscaleError(f"{path} is not valid JSON ({e.msg} on line {e.lineno})") from None
  version = fits.get("schema_version", fits.get("version"))
  if version not in (1, 2) or "groups" not in fits:
    raise JaxscaleError(f"{path} is not a fits.json (schema version 1 or 2); write one with "
                        f"`jaxscale fit`")
  return upgrade(fits) if version == 1 else fits


def upgrade(fits: dict) -> dict:
  """Schema 1 -> 2 for prediction: m4's free `gap` becomes E0 = E_inf + gap (gap derived)."""
  fits = json.loads(json.dumps(fits))
  for g in fits["groups"].values():
    params = g["params"]
    if fits["law"] == "m4" and "gap" in params:
      params.pop("E0", None)
      gap = params.pop("gap")
      params["E0"] = {"value": params["E_inf"]["value"] + gap["value"], "kind": "free"}
      params["gap"] = dict(gap, kind="derived")
  fits["schema_version"] = 2
  return fits


def _band(form, samples: dict, x: dict, level: float) -> tuple[np.ndarray, np.ndarray]:
  """Percentile band [n] of the law over bootstrap samples (name -> [B]) at x (name -> [n])."""
  with float64():
    p = {k: jnp.asarray(np.asarray(v, np.float64))[:, None] for k, v in samples.items()}
    pred = np.asarray(form.fn(p, {k: jnp.asarray(v)[None, :] for k, v in x.items()}))
  a = 100 * (1 - level) / 2
  return np.nanpercentile(pred, a, axis=0), np.nanpercentile(pred, 100 - a, axis=0)


def _check_positive(table: dict, fits: dict, x: dict[str, np.ndarray]) -> None:
  """A one-line error for the first row whose input is not a positive number (the forms are power
  laws of their inputs: zero or less has no prediction)."""
  for name, v in x.items():
    bad = np.flatnonzero(~(np.isfinite(v) & (v > 0)))
    if len(bad):
      line = int(table_lib.lines(table)[bad[0]])
      raise JaxscaleError(
          f"input {name} (column '{fits['inputs'][name]}') must be a positive number; line {line} has "
          f"{table[fits['inputs'][name]][bad[0]]!r}" + (f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else "")
          + "; remove or correct those rows")


def _groups_of_rows(fits: dict, table: dict, n: int) -> np.ndarray:
  """The fitted group (key of fits["groups"]) of every row [n]."""
  keys = list(fits["groups"])
  split = fits.get("split_by")
  if not (split and len(keys) > 1):
    return np.array([keys[0]] * n, dtype=object)
  if split not in table:
    raise JaxscaleError(f"the fit has one law per value of '{split}' but the file has no such "
                        f"column; add it")
  group = np.array([table_lib.key(v) for v in table[split]], dtype=object)
  unknown = sorted(set(group.tolist()) - set(keys))
  if unknown:
    line = int(table_lib.lines(table)[np.flatnonzero(group == unknown[0])[0]])
    raise JaxscaleError(f"{split}={unknown[0]} on line {line} has no fitted law; the fit has "
                        f"{', '.join(keys)}")
  return group


def predict_table(fits: dict, table: dict) -> dict[str, np.ndarray]:
  """Columns line, group, every column of `table`, prediction (+ ci_low, ci_high with bootstrap
  samples). A column of `table` named like one of those gets the suffix ``_input``."""
  form = forms_lib.get(fits["law"])
  n = table_lib.n_rows(table)
  x = {name: table_lib.numeric(table, col) for name, col in fits["inputs"].items()}
  _check_positive(table, fits, x)
  group = _groups_of_rows(fits, table, n)
  pred = np.full(n, np.nan)
  lo, hi = np.full(n, np.nan), np.full(n, np.nan)
  with_band = all("bootstrap_samples" in g for g in fits["groups"].values())
  level = fits.get("bootstrap", {}).get("level", 0.95)
  for key, g in fits["groups"].items():
    m = group == key
    if not m.any():
      continue
    xm = {k: v[m] for k, v in x.items()}
    params = {k: p["value"] for k, p in g["params"].items() if p.get("kind") != "derived"}
    with np.errstate(all="ignore"), warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)   # a resample that is NaN everywhere: NaN band
      pred[m] = forms_lib.predict(fits["law"], params, xm)
      if with_band:
        lo[m], hi[m] = _band(form, g["bootstrap_samples"], xm, level)
  out = {"line": table_lib.lines(table), "group": group}
  ours = ("line", "group", "prediction", "ci_low", "ci_high")
  out.update({(c + "_input" if c in ours else c): table[c] for c in table_lib.data_columns(table)})
  out["prediction"] = pred
  if with_band:
    out["ci_low"], out["ci_high"] = lo, hi
  return out


def check_warnings(fits: dict, table: dict) -> list[str]:
  """One line per reason to distrust the predictions: a law that failed its checks or carries
  fit warnings, and rows outside the range the law was fitted on (per input: how many, how far)."""
  out = []
  failed = {arm: c for arm, c in (fits.get("law_check") or {}).items() if not c.get("passed", True)}
  if failed:
    out.append("the law failed its checks (" + "; ".join(
        f"{arm}: {(c.get('reasons') or ['see fits.json'])[0]}" for arm, c in failed.items())
        + "): its predictions are not findings")
  for key, g in fits["groups"].items():
    if g.get("warnings"):
      out.append(f"the fit of group {key} has {len(g['warnings'])} warning(s), e.g. {g['warnings'][0]}")
  group = _groups_of_rows(fits, table, table_lib.n_rows(table))
  lines, parts, rows_out = table_lib.lines(table), [], np.zeros(len(group), bool)
  for name, col in fits["inputs"].items():
    v = table_lib.numeric(table, col)
    lo = np.array([fits["groups"][k].get("range", {}).get(name, [0, np.inf])[0] for k in group], float)
    hi = np.array([fits["groups"][k].get("range", {}).get(name, [0, np.inf])[1] for k in group], float)
    factor = np.maximum(v / hi, lo / v)   # > 1 outside [lo, hi]: how many times beyond its end
    if np.any(factor > 1 + 1e-9):
      i = int(np.argmax(factor))
      rows_out |= factor > 1 + 1e-9
      side = f"above the largest fitted {hi[i]:g}" if v[i] > hi[i] else f"below the smallest fitted {lo[i]:g}"
      parts.append(f"{name} ({col}) in {int(np.sum(factor > 1 + 1e-9))} row(s), up to {factor[i]:.3g}x "
                   f"{side} ({col} = {v[i]:g} on line {int(lines[i])})")
  if parts:
    out.append(f"{int(rows_out.sum())} of {len(group)} row(s) lie outside the range the law was fitted on, "
               f"so they are extrapolations: " + "; ".join(parts))
  return out


def _cell(v) -> str:
  """An input's CSV cell: floats exactly (whole numbers without '.0'), None and NaN (an empty cell
  read) empty, the rest as text."""
  if v is None:
    return ""
  if isinstance(v, (float, np.floating)):
    v = float(v)
    if v != v:
      return ""
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
  return str(v)


def run(args: argparse.Namespace) -> int:
  if os.path.exists(args.out) and not args.force:
    raise JaxscaleError(f"{args.out} exists; pass --force to overwrite it")
  check_writable(args.out, "--out")
  fits = read_fits(args.fits)
  table = table_lib.read_table(args.file)
  cols = predict_table(fits, table)
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\n")
  w.writerow(list(cols))
  exact = {"prediction", "ci_low", "ci_high"}
  for row in zip(*cols.values()):
    w.writerow([repr(float(v)) if name in exact else _cell(v) for name, v in zip(cols, row)])
  atomic_write_text(args.out, buf.getvalue())
  for line in check_warnings(fits, table):
    print(f"jaxscale: warning: {line}", file=sys.stderr)
  print(f"wrote {len(cols['line'])} predictions to {args.out}")
  return 0
