"""`jaxscale fit`: fit a scaling law to records.jsonl or any CSV and write fits.json.

Every problem with the request or the data (a missing column, a text cell, a group too small for
the law, a duplicated CSV column, ...) is reported on one line naming the file's line and exits 2
before the first fit starts, so no fitted work is lost to it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from jaxscale import fileio
from jaxscale.errors import JaxscaleError
from jaxscale.laws import api
from jaxscale.laws import boundary as boundary_lib
from jaxscale.laws import curve_table
from jaxscale.laws import fit as fit_lib
from jaxscale.laws import forms as forms_lib
from jaxscale.laws import numeric
from jaxscale.laws import table as table_lib

HELP = "fit a scaling law (with CIs, holdout and distillation boundary) to records.jsonl or a CSV"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("file", metavar="FILE", help="records.jsonl or a .csv with a header row")
  parser.add_argument("--curves", action="store_true",
                      help="FILE is a curves.jsonl: fit every point along each run's budget (one row per point, "
                           "columns of its run plus step, examples, frac, train_loss, eval_error, eval_loss), e.g. "
                           f"--law {curve_table.CURVE_LAW} --inputs Dp=dp,M=params,Df=df,T=examples")
  parser.add_argument("--burn-in", type=float, default=0.0, metavar="F",
                      help="with --curves: drop each run's points before fraction F of its budget (e.g. 0.1)")
  parser.add_argument("--law", required=True, help=" | ".join(forms_lib.names()))
  parser.add_argument("--inputs", required=True, metavar="NAME=COLUMN[,NAME=COLUMN...]",
                      help="law input -> column, e.g. Dp=dp,M=params,Df=df")
  parser.add_argument("--target", required=True, metavar="COLUMN", help="column to fit, > 0")
  parser.add_argument("--split-by", metavar="COLUMN", help="fit one law per value of COLUMN")
  parser.add_argument("--where", action="append", default=[], metavar="CONDITION",
                      help="keep only rows meeting CONDITION: COLUMN=VALUE (the value may hold "
                           "commas and spaces), COLUMN!=VALUE or a comparison such as dp>=1000 "
                           "(<, <=, >, >=); repeat the flag to combine conditions")
  parser.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                      help="hold a parameter at VALUE, e.g. --fix E0=1 for M4 (repeatable)")
  parser.add_argument("--bounds", action="append", default=[], metavar="NAME=LO:HI",
                      help="keep a parameter inside [LO, HI] (either may be empty or inf), e.g. "
                           "--bounds alpha=0:2 (repeatable)")
  parser.add_argument("--loss", default=fit_lib.DEFAULT_LOSS, choices=numeric.LOSSES,
                      help="loss on log residuals: huber (with --delta; Hoffmann et al.) or "
                           "squared (least squares on log values)")
  parser.add_argument("--delta", type=float, default=fit_lib.DEFAULT_DELTA,
                      help="Huber delta on log residuals (default %(default)g)")
  parser.add_argument("--starts", type=int, default=fit_lib.DEFAULT_MAX_STARTS,
                      help="most initialisations to screen (default %(default)d)")
  parser.add_argument("--steps", type=int, default=fit_lib.DEFAULT_ITERS,
                      help="most Levenberg-Marquardt steps per start and phase (default %(default)d)")
  parser.add_argument("--tol", type=float, default=fit_lib.DEFAULT_TOL,
                      help="convergence: Gauss-Newton decrement <= TOL * objective "
                           "(default %(default)g)")
  parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                      help="cluster-bootstrap refits for 95%% CIs (default 0: none)")
  parser.add_argument("--boundary", metavar="INPUT",
                      help="solve E(first group) = E(second group) along INPUT (needs --split-by)")
  parser.add_argument("--at", default="", metavar="NAME=VALUE[,...]",
                      help="values of the other inputs for --boundary, e.g. M=2e6,Df=500")
  parser.add_argument("--boundary-range", metavar="LO:HI",
                      help="search range of --boundary (default: the data range of INPUT over "
                           "all rows of both groups, held-out rows included)")
  parser.add_argument("--holdout", metavar="COLUMN=VALUE",
                      help="leave these rows out of the fit and report how well they are predicted")
  parser.add_argument("--floor", type=float, default=None, metavar="F",
                      help="clip target values below F up to F instead of failing on zeros")
  parser.add_argument("--seed", type=int, default=0,
                      help="seed of the random starts and of the bootstrap resamples (same seed, same fit)")
  parser.add_argument("--out", required=True, metavar="FITS_JSON", help="where to write fits.json")
  parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
  parser.add_argument("--max-json-rows", type=int, default=api.MAX_JSON_ROWS, metavar="N",
                      help="keep each group's per-row fitted values and residuals in fits.json up to N rows "
                           f"(default {api.MAX_JSON_ROWS:,}); a larger group's go to FITS.rows.npz beside it")


def parse_pairs(text: str, what: str) -> dict[str, str]:
  """'a=1,b=x' -> {'a': '1', 'b': 'x'}; one-line error naming `what` otherwise."""
  out = {}
  for item in filter(None, (s.strip() for s in (text or "").split(","))):
    name, sep, value = item.partition("=")
    if not sep or not name.strip() or not value.strip():
      raise JaxscaleError(f"{what} expects NAME=VALUE items separated by commas, got '{item}'")
    out[name.strip()] = value.strip()
  return out


def _number(text: str, what: str) -> float:
  try:
    return float(text)
  except ValueError:
    raise JaxscaleError(f"{what}: '{text}' is not a number") from None


def parse_fix(items: list[str]) -> dict[str, float]:
  """['E0=1'] -> {'E0': 1.0}."""
  out = {}
  for item in items:
    (name, value), = parse_pairs(item, "--fix").items() or [("", "")]
    out[name] = _number(value, f"--fix {item}")
  return out


def parse_bounds(items: list[str]) -> dict[str, tuple[float, float]]:
  """['alpha=0:2', 'E_inf=:0.5'] -> {'alpha': (0, 2), 'E_inf': (-inf, 0.5)}."""
  out = {}
  for item in items:
    name, sep, rng = item.partition("=")
    lo, sep2, hi = rng.partition(":")
    if not sep or not sep2 or not name.strip():
      raise JaxscaleError(f"--bounds expects NAME=LO:HI (either side may be empty), got '{item}'")
    out[name.strip()] = (_number(lo, f"--bounds {item}") if lo.strip() else -float("inf"),
                         _number(hi, f"--bounds {item}") if hi.strip() else float("inf"))
  return out


def filter_rows(table: dict, conditions: list[str]) -> dict:
  """The rows meeting every --where condition; a one-line error when none are left."""
  for cond in conditions:
    table = table_lib.select(table, table_lib.where(table, cond))
    if not table_lib.n_rows(table):
      hint = ""
      name, op, value = table_lib.parse_where(cond)
      if "," in value and "=" in value.split(",", 1)[1]:
        hint = "; to combine conditions repeat the flag: --where A=1 --where B=2"
      raise JaxscaleError(f"no rows left after --where {cond}{hint}")
  return table


def check_stages(table: dict, conditions: list[str]) -> None:
  """records.jsonl mixes stages: the errors of pretraining and fine-tuning are not one law."""
  if "stage" not in table:
    return
  stages = sorted({str(v) for v in table["stage"]})
  if len(stages) > 1:
    raise JaxscaleError(f"the rows mix stages ({', '.join(stages)}), whose errors are not one law; "
                        f"keep one with --where stage={'finetune' if 'finetune' in stages else stages[0]}")


def run(args: argparse.Namespace) -> int:
  if os.path.exists(args.out) and not args.force:
    raise JaxscaleError(f"{args.out} exists; pass --force to overwrite it")
  fileio.check_writable(args.out, "--out")
  if args.loss == "huber" and not 0 < args.delta < float("inf"):
    raise JaxscaleError(f"--delta must be a finite number > 0 (the Huber threshold on log residuals, "
                        f"default {fit_lib.DEFAULT_DELTA:g}), got {args.delta:g}")
  if args.bootstrap < 0:
    raise JaxscaleError("--bootstrap must be >= 0")
  if args.starts < 1 or args.steps < 1 or not args.tol > 0:
    raise JaxscaleError("--starts and --steps must be >= 1 and --tol > 0")
  inputs = parse_pairs(args.inputs, "--inputs")
  at = {k: _number(v, f"--at {k}") for k, v in parse_pairs(args.at, "--at").items()}
  fix, bounds = parse_fix(args.fix), parse_bounds(args.bounds)
  holdout = None
  if args.holdout:
    hcol, op, hval = table_lib.parse_where(args.holdout)
    if op not in ("=", "=="):
      raise JaxscaleError(f"--holdout expects COLUMN=VALUE, got '{args.holdout}'")
    holdout = (hcol, hval)
  boundary_range = None
  if args.boundary_range:
    lo, _, hi = args.boundary_range.partition(":")
    boundary_range = (_number(lo, "--boundary-range"), _number(hi, "--boundary-range"))
    boundary_lib.check_range(*boundary_range, what="--boundary-range LO:HI")
  if args.burn_in and not args.curves:
    raise JaxscaleError("--burn-in applies to the points of a curves.jsonl; add --curves (or drop --burn-in)")
  table = curve_table.read_curves(args.file, args.burn_in) if args.curves else table_lib.read_table(args.file)
  table = filter_rows(table, args.where)
  check_stages(table, args.where)
  result = api.analyze(table, law=args.law, inputs=inputs, target=args.target,
                       split_by=args.split_by, bootstrap=args.bootstrap, boundary=args.boundary,
                       at=at, holdout=holdout, seed=args.seed, floor=args.floor, loss=args.loss,
                       delta=args.delta, max_starts=args.starts, iters=args.steps, tol=args.tol,
                       fix=fix, bounds=bounds, boundary_range=boundary_range, progress=True)
  api.write_fits(args.out, result.content, force=args.force, max_rows=args.max_json_rows)
  print_summary(result.content, sys.stdout)
  print(f"wrote {args.out}")
  return 0


def _g(v) -> str:
  return "-" if v is None else f"{v:.4g}"


def print_summary(fits: dict, out: TextIO) -> None:
  """A human-readable table of fits.json content; every warning is printed here, once."""
  obj = fits["objective"]
  loss = f"huber(delta={obj['delta']:g})" if obj["loss"] == "huber" else obj["loss"]
  print(f"law {fits['law']}: {fits['formula']}   target {fits['target']}   loss {loss} on log "
        f"values", file=out)
  if fits.get("fixed"):
    print("fixed: " + ", ".join(f"{k}={v:g}" for k, v in fits["fixed"].items()), file=out)
  for key, g in fits["groups"].items():
    head = f"[{fits['split_by']}={key}]" if fits.get("split_by") else "[all]"
    s = g["statistics"]
    print(f"\n{head} n={g['n']} dof={g['dof']}  R2(log)={_g(s['r2_log'])}  "
          f"RMSE(log)={_g(s['rmse_log'])}  converged={s['converged']} ({s['steps']} steps)  "
          f"best basin {s['n_best_basin']}/{s['n_starts']} starts", file=out)
    print(f"  {'param':<10} {'value':>12} {'ci_low':>12} {'ci_high':>12}", file=out)
    for name, p in g["params"].items():
      tag = "  (fixed)" if p.get("kind") == "fixed" else "  (derived)" if p.get("kind") == "derived" else ""
      print(f"  {name:<10} {_g(p['value']):>12} {_g(p['ci_low']):>12} {_g(p['ci_high']):>12}{tag}",
            file=out)
    if "holdout" in g:
      h = g["holdout"]
      print(f"  holdout n={h['n']}  log-RMSE={_g(h['log_rmse'])} (SE {_g(h['log_rmse_se'])})  "
            f"ARE={_g(h['are'])}", file=out)
    for w in g["warnings"]:
      print(f"  warning: {w}", file=out)
  b = fits.get("boundary")
  if b:
    print_boundary(b, out)


def print_boundary(b: dict, out: TextIO) -> None:
  """The boundary as the evidence carries it: ends of the band, crossings, the verdict."""
  at = ", ".join(f"{k}={v:g}" for k, v in b["at"].items())
  source = "the data range, held-out rows included" if b["range_source"] == "data" else "given"
  print(f"\nboundary along {b['input']} at {at or '-'} in [{b['range'][0]:g}, {b['range'][1]:g}] "
        f"({source}), delta = {b['delta']}:", file=out)
  for side in ("low", "high"):
    e = b["ends"][side]
    band = f"  band [{_g(e['ci_low'])}, {_g(e['ci_high'])}]" if e["ci_low"] is not None else ""
    print(f"  at {b['input']}={e['at']:g}: delta {_g(e['delta'])}{band}", file=out)
  for r in b["roots"]:
    found = f"  (found in {r['ci_found']:.0%} of resamples)" if r.get("ci_found") is not None else ""
    print(f"  fitted crossing at {_g(r['value'])}  CI [{_g(r['ci_low'])}, {_g(r['ci_high'])}]"
          f"{found}", file=out)
  if b.get("boot_crossing_frac") is not None:
    print(f"  {b['boot_crossing_frac']:.0%} of {b['n_boot']} resamples cross in range", file=out)
  print(f"  verdict: {b['text']}", file=out)
  for w in b.get("warnings", []):
    print(f"  warning: {w}", file=out)
