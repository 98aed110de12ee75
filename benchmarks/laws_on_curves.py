"""Laws on final points against laws on learning curves: backtests on a study's own runs.

Choshen et al. (2024, "A Hitchhiker's Guide to Scaling Law Estimation") report that fitting on
intermediate checkpoints, after dropping the first ~10% of training, predicts better than final
points alone. This script asks it of a finished study (its study.json, records.jsonl and
curves.jsonl), per arm the study fits (plain, distilled), for the fine-tunes (the error the study's law
describes), by running the study's own analysis (`jaxscale.study.analysis.analyze_records`) twice:

* final:  config.study.law_points = "final", `transfer_additive` on each run's final error (Dp, M, Df);
* curves: config.study.law_points = "curves", `transfer_additive_seen` (the same law plus G * T^-delta,
  T the images seen) on every point of every run at or after the burn-in fraction of its budget.

The backtests are the study's (`jaxscale.study.law_selection.backtests`): fit without the runs at the
largest Dp (then M, then Df where it has 3 values) and score the held-out runs' final errors, averaged
over seeds per cell (log-RMSE; the curves law predicts at each run's final images seen). A table of
both, and their ratio. (Before the study fitted curves itself this script fitted its own copy, and
also scored the smoothed arm, which the study's law does not fit.)

  python benchmarks/laws_on_curves.py --workdir runs/default [--burn-in 0.1]
"""

from __future__ import annotations

import argparse
import time

from jaxscale.report.command import study_config
from jaxscale.study import analysis, records


def backtests(workdir: str, rows, lines, law_points: str, burn_in: float) -> dict[tuple[str, str], dict]:
  """{(arm, held-out input): the study's backtest row} of its analysis with `law_points` (no bootstrap)."""
  c = study_config(workdir)
  c.study.update(law_points=law_points, burn_in=burn_in, bootstrap=0,
                 law="transfer_additive" if law_points == "final" else "auto")
  fits = analysis.analyze_records(c, rows, progress=False, curves=lines).fits
  return {(r["arm"], r["input"]): r for r in fits["backtests"]["rows"] if r.get("error") is None}


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--burn-in", type=float, default=0.1)
  args = ap.parse_args(argv)
  where = records.workdir_paths(args.workdir)
  rows = records.read(where["records"])
  lines = [c for c in records.read(where["curves"]) if c.get("stage") in ("pretrain", "finetune")]
  start = time.time()
  final = backtests(args.workdir, rows, lines, "final", args.burn_in)
  curves = backtests(args.workdir, rows, lines, "curves", args.burn_in)
  print(f"backtest log-RMSE of the held-out cells' seed-mean final error (fine-tunes; burn-in {args.burn_in:g})")
  print(f"{'arm':<10} {'held out':<12} {'final points':>14} {'curves':>14} {'curves/final':>13} {'fit rows':>16}")
  for key in (k for k in final if k in curves):
    b, c = final[key], curves[key]
    print(f"{key[0]:<10} {'largest ' + key[1]:<12} {b['log_rmse']:>8.3f}±{b['log_rmse_se'] or 0:.3f} "
          f"{c['log_rmse']:>8.3f}±{c['log_rmse_se'] or 0:.3f} {c['log_rmse'] / b['log_rmse']:>13.2f} "
          f"{b['n_train']:>7,}/{c['n_train']:>7,}")
  print(f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
  main()
