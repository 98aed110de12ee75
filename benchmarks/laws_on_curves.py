"""Laws on final points against laws on learning curves: backtests on a study's own runs.

Choshen et al. (2024, "A Hitchhiker's Guide to Scaling Law Estimation") report that fitting on
intermediate checkpoints, after dropping the first ~10% of training, predicts better than final
points alone. This script asks it of a finished study (its records.jsonl and curves.jsonl), per arm,
for the fine-tunes (the error the study's law describes):

* final:  `transfer_additive` on each run's final error (inputs Dp, M, Df), as the study fits it;
* curves: `transfer_additive_seen` (the same law plus G * T^-delta, T the images seen) on every point
  of every run at or after the burn-in fraction of its budget (jaxscale.laws.curve_table).

Each is fitted without the runs at the largest Dp (then without those at the largest M) and scored on
the held-out runs' final errors, averaged over seeds per cell (log-RMSE, the study's backtest metric;
the curves law predicts at the runs' final images seen). A table of both, and their ratio.

  python benchmarks/laws_on_curves.py --workdir runs/default [--burn-in 0.1] [--starts 1024]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from jaxscale.laws import curve_table, fit as fit_lib, forms
from jaxscale.laws.validate import holdout_metrics, replicate_means
from jaxscale.study import records, verdicts

INPUTS = {"Dp": "dp", "M": "params", "Df": "df"}


def _final_rows(rows, arm):
  ok = [r for r in verdicts.student_rows(rows, "finetune") if verdicts.arm_of(r) == arm
        and r.get("diverged_at") is None and r.get("selection", "random") == "random"]
  x = {k: np.array([float(r[c]) for r in ok]) for k, c in INPUTS.items()}
  return x, np.array([float(r["eval_error"]) for r in ok]), {r["cell_id"] for r in ok}


def _curve_rows(curves, keep):
  """The points of the runs in `keep` (a `curve_table.read_curves` table, burn-in applied): inputs with
  T = images seen, errors, and each run's images seen at its end."""
  m = np.isin(curves["cell_id"], sorted(keep))
  x = {k: curves[col][m].astype(float) for k, col in INPUTS.items()}
  x["T"] = curves["examples"][m].astype(float)
  seen: dict[str, float] = {}
  for cid, t in zip(curves["cell_id"][m], x["T"]):
    seen[cid] = max(seen.get(cid, 0.0), float(t))
  return x, curves["eval_error"][m].astype(float), seen


def _score(form, params, x, y):
  """log-RMSE of the law against the seed means of the held-out cells' final errors."""
  points, means, _ = replicate_means(x, y)
  return holdout_metrics(forms.predict(form, params, points), means)


def backtest(rows, curves, arm, name, starts, seed=0):
  """{"final": metrics, "curves": metrics} with the runs at the largest `name` held out."""
  x, y, keep = _final_rows(rows, arm)
  held = x[name] == x[name].max()
  res = fit_lib.fit(forms.get("transfer_additive"), {k: v[~held] for k, v in x.items()}, y[~held],
                    max_starts=starts, seed=seed)
  final = _score("transfer_additive", res.params, {k: v[held] for k, v in x.items()}, y[held])
  xc, yc, seen = _curve_rows(curves, keep)
  train = xc[name] < x[name].max()
  res_c = fit_lib.fit(forms.get(curve_table.CURVE_LAW), {k: v[train] for k, v in xc.items()}, yc[train],
                      max_starts=starts, seed=seed)
  # the held-out runs' final points: T = the images each fine-tune saw in all
  ids = [r["cell_id"] for r in verdicts.student_rows(rows, "finetune") if r["cell_id"] in keep]
  xt = {k: v[held] for k, v in x.items()}
  xt["T"] = np.array([seen[i] for i in ids])[held]
  points, means, _ = replicate_means(xt, y[held])
  curves = holdout_metrics(forms.predict(curve_table.CURVE_LAW, res_c.params, points), means)
  return {"final": final, "curves": curves, "n_points_final": int((~held).sum()), "n_points_curves": int(train.sum())}


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--burn-in", type=float, default=0.1)
  ap.add_argument("--starts", type=int, default=1024)
  args = ap.parse_args(argv)
  where = records.workdir_paths(args.workdir)
  rows = records.read(where["records"])
  curves = curve_table.read_curves(where["curves"], args.burn_in)
  arms = [a for a in ("plain", "distilled", "smoothed") if any(verdicts.arm_of(r) == a for r in rows)]
  start = time.time()
  print(f"backtest log-RMSE of the held-out cells' seed-mean final error (fine-tunes; burn-in {args.burn_in:g})")
  print(f"{'arm':<10} {'held out':<12} {'final points':>14} {'curves':>14} {'curves/final':>13} {'fit rows':>16}")
  for arm in arms:
    for name in ("Dp", "M"):
      b = backtest(rows, curves, arm, name, args.starts)
      f, c = b["final"]["log_rmse"], b["curves"]["log_rmse"]
      print(f"{arm:<10} {'largest ' + name:<12} {f:>8.3f}±{b['final']['log_rmse_se'] or 0:.3f} "
            f"{c:>8.3f}±{b['curves']['log_rmse_se'] or 0:.3f} {c / f:>13.2f} "
            f"{b['n_points_final']:>7,}/{b['n_points_curves']:>7,}")
  print(f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
  main()
