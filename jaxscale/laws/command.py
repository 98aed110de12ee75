"""`jaxscale fit`: fit a scaling law to records.jsonl or any CSV and write fits.json."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from jaxscale.errors import JaxscaleError

HELP = "fit a scaling law (with CIs, holdout and distillation boundary) to records.jsonl or a CSV"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("file", metavar="FILE", help="records.jsonl or a .csv with a header row")
  parser.add_argument("--law", required=True,
                      help="power | chinchilla | transfer_additive | transfer_multiplicative | m4 | "
                           "broken_power")
  parser.add_argument("--inputs", required=True, metavar="NAME=COLUMN[,NAME=COLUMN...]",
                      help="law input -> column, e.g. Dp=dp,M=params,Df=df")
  parser.add_argument("--target", required=True, metavar="COLUMN", help="column to fit, > 0")
  parser.add_argument("--split-by", metavar="COLUMN", help="fit one law per value of COLUMN")
  parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                      help="cluster-bootstrap refits for 95%% CIs (default 0: none)")
  parser.add_argument("--boundary", metavar="INPUT",
                      help="solve E(first group) = E(second group) along INPUT (needs --split-by)")
  parser.add_argument("--at", default="", metavar="NAME=VALUE[,...]",
                      help="values of the other inputs for --boundary, e.g. M=2e6,Df=500")
  parser.add_argument("--holdout", metavar="COLUMN=VALUE",
                      help="leave these rows out of the fit and report how well they are predicted")
  parser.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                      help="keep only rows with COLUMN=VALUE (repeatable), e.g. stage=finetune")
  parser.add_argument("--floor", type=float, default=None, metavar="F",
                      help="clip target values below F up to F instead of failing on zeros")
  parser.add_argument("--delta", type=float, default=1e-3, help="Huber delta on log residuals")
  parser.add_argument("--starts", type=int, default=4096, help="most initialisations to run")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", required=True, metavar="FITS_JSON", help="where to write fits.json")
  parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")


def parse_pairs(text: str, what: str) -> dict[str, str]:
  """'a=1,b=x' -> {'a': '1', 'b': 'x'}; one-line error naming `what` otherwise."""
  out = {}
  for item in filter(None, (s.strip() for s in (text or "").split(","))):
    name, sep, value = item.partition("=")
    if not sep or not name.strip() or not value.strip():
      raise JaxscaleError(f"{what} expects NAME=VALUE items separated by commas, got '{item}'")
    out[name.strip()] = value.strip()
  return out


def run(args: argparse.Namespace) -> int:
  from jaxscale import laws
  from jaxscale.laws import table as table_lib
  if os.path.exists(args.out) and not args.force:
    raise JaxscaleError(f"{args.out} exists; pass --force to overwrite it")
  if args.bootstrap < 0:
    raise JaxscaleError("--bootstrap must be >= 0")
  table = laws.read_table(args.file)
  for cond in args.where:
    (col, value), = parse_pairs(cond, "--where").items()
    table = table_lib.select(table, table_lib.matches(table, col, value))
    if not len(next(iter(table.values()))):
      raise JaxscaleError(f"no rows left after --where {cond}")
  inputs = parse_pairs(args.inputs, "--inputs")
  at = {}
  for k, v in parse_pairs(args.at, "--at").items():
    try:
      at[k] = float(v)
    except ValueError:
      raise JaxscaleError(f"--at {k}={v}: the value must be a number") from None
  holdout = None
  if args.holdout:
    (hcol, hval), = parse_pairs(args.holdout, "--holdout").items()
    holdout = (hcol, hval)
  result = laws.analyze(table, law=args.law, inputs=inputs, target=args.target,
                        split_by=args.split_by, bootstrap=args.bootstrap, boundary=args.boundary,
                        at=at, holdout=holdout, seed=args.seed, floor=args.floor, delta=args.delta,
                        max_starts=args.starts, progress=True)
  laws.write_fits(args.out, result, force=args.force)
  print_summary(result, sys.stdout)
  print(f"wrote {args.out}")
  return 0


def _g(v) -> str:
  return "-" if v is None else f"{v:.4g}"


def print_summary(fits: dict, out: TextIO) -> None:
  """A human-readable table of fits.json content."""
  print(f"law {fits['law']}: {fits['formula']}   target {fits['target']}", file=out)
  for key, g in fits["groups"].items():
    head = f"[{fits['split_by']}={key}]" if fits.get("split_by") else "[all]"
    s = g["statistics"]
    print(f"\n{head} n={g['n']}  R2(log)={_g(s['r2_log'])}  RMSE(log)={_g(s['rmse_log'])}  "
          f"converged={s['converged']}  best basin {s['n_best_basin']}/{s['n_starts']} starts",
          file=out)
    print(f"  {'param':<10} {'value':>12} {'ci_low':>12} {'ci_high':>12}", file=out)
    for name, p in g["params"].items():
      print(f"  {name:<10} {_g(p['value']):>12} {_g(p['ci_low']):>12} {_g(p['ci_high']):>12}",
            file=out)
    if "holdout" in g:
      h = g["holdout"]
      print(f"  holdout n={h['n']}  log-RMSE={_g(h['log_rmse'])}  ARE={_g(h['are'])}", file=out)
    for w in g["warnings"]:
      print(f"  warning: {w}", file=out)
  b = fits.get("boundary")
  if b:
    at = ", ".join(f"{k}={v:g}" for k, v in b["at"].items())
    print(f"\nboundary along {b['input']} at {at or '-'} in [{b['range'][0]:g}, {b['range'][1]:g}], "
          f"delta = {b['delta']}:", file=out)
    if not b["roots"]:
      sign = "positive" if b["sign_below"] > 0 else "negative"
      print(f"  no crossing in range (delta is {sign} throughout)", file=out)
    for r in b["roots"]:
      print(f"  crossing at {_g(r['value'])}  CI [{_g(r['ci_low'])}, {_g(r['ci_high'])}]", file=out)
    if len(b["roots"]) > 1:
      print(f"  {len(b['roots'])} crossings in range", file=out)
