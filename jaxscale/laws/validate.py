"""Extrapolation backtests: fit on the smaller scales, predict the held-out ones.

Metrics on n held-out points with predictions p and targets y (both > 0):
  log_rmse = sqrt(mean(e)), e_i = (log p_i - log y_i)^2,   are = mean(|p - y| / y),
  log_rmse_se = sd(e) / (2 sqrt(n) log_rmse)   (the delta method; None for n < 2).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from jaxscale.errors import JaxscaleError
from jaxscale.laws import fit as fit_lib
from jaxscale.laws import forms as forms_lib
from jaxscale.laws import table as table_lib
from jaxscale.laws.inputs import resolve_inputs, target_values

BACKTEST_MAX_STARTS = 1024


def holdout_metrics(pred: np.ndarray, y: np.ndarray) -> dict:
  """{"n", "log_rmse", "log_rmse_se", "are"} of predictions pred [n] against targets y [n]."""
  pred, y = np.asarray(pred, np.float64), np.asarray(y, np.float64)
  if not len(y):
    return {"n": 0, "log_rmse": None, "log_rmse_se": None, "are": None}
  e = (np.log(pred) - np.log(y)) ** 2
  rmse = float(np.sqrt(np.mean(e)))
  se = None
  if len(e) > 1 and rmse > 0:
    se = float(np.std(e, ddof=1) / np.sqrt(len(e)) / (2.0 * rmse))
  return {"n": int(len(y)), "log_rmse": rmse, "log_rmse_se": se,
          "are": float(np.mean(np.abs(pred - y) / y))}


def replicate_means(x: Mapping[str, np.ndarray], y: np.ndarray
                    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
  """Rows with identical inputs merged: (x of each distinct input point, float64 [P], sorted by
  the columns in the order of `x`; mean of its y [P]; its number of rows [P]).

  Replicates (e.g. seeds of one cell) differ only by noise that no law explains, so a law's
  prediction of the expected target is compared with their mean.
  """
  names = list(x)
  points = np.stack([np.asarray(x[n], np.float64) for n in names], axis=1)
  unique, inverse = np.unique(points, axis=0, return_inverse=True)
  inverse = inverse.reshape(-1)
  counts = np.bincount(inverse)
  means = np.bincount(inverse, weights=np.asarray(y, np.float64)) / counts
  return {n: unique[:, i] for i, n in enumerate(names)}, means, counts


def _fit_and_score(form, x, y, train, test, columns, target, max_starts, seed, means=False):
  res = fit_lib.fit(form, {k: v[train] for k, v in x.items()}, y[train], max_starts=max_starts,
                    seed=seed, columns=columns, target=target)
  x_test = {k: v[test] for k, v in x.items()}
  metrics = holdout_metrics(forms_lib.predict(form.name, res.params, x_test), y[test])
  if means:
    points, y_mean, _ = replicate_means({k: x_test[k] for k in sorted(x_test)}, y[test])
    rows = metrics
    metrics = holdout_metrics(forms_lib.predict(form.name, res.params, points), y_mean)
    metrics.update(n_points=metrics.pop("n"), n=rows["n"], log_rmse_rows=rows["log_rmse"])
  return metrics, res


def backtest(table: Mapping[str, np.ndarray], *, law: str, inputs: Mapping[str, str], target: str,
             split_by: str | None = None, by: tuple[str, ...] | None = None,
             leave_one_out: bool = True, floor: float | None = None,
             max_starts: int = BACKTEST_MAX_STARTS, seed: int = 0, means: bool = False,
             score_by: str | None = None) -> dict:
  """Largest-scale holdout by each input and leave-one-scale-out, per group of `split_by`.

  For every input (or those in `by`): "largest" fits on rows below the input's largest value and
  predicts the rows at it; "leave_one_out" does the same for every distinct value. A case whose
  training rows cannot be fitted (e.g. the input becomes constant) gets an "error" string instead
  of metrics. With `means`, the fit still uses every row, but the metrics compare the prediction
  with the mean target of each held-out input point (:func:`replicate_means`, e.g. the seeds of a
  cell); the rows' own ``log_rmse_rows`` and the point count ``n_points`` are added. With `score_by`
  (a boolean column), the fit still leaves out every row at the held-out value, but only those held-out
  rows where it is true are predicted (e.g. each run's final point of a table of learning-curve
  points: ``n_test`` counts them). Returns
  {"law", "target", "inputs", "rows": [{"group", "kind", "input", "column", "value", "n_train",
  "n_test", "log_rmse", "are" | "error"}]}, JSON-serialisable.
  """
  form = forms_lib.get(law)
  columns = resolve_inputs(form, inputs)
  names = form.inputs if by is None else tuple(form.resolve_input(b) for b in by)
  table = dict(table)
  split = (table_lib.groups(table, split_by) if split_by
           else [("all", np.ones(len(next(iter(table.values()))), bool))])
  rows = []
  for gi, (gkey, gmask) in enumerate(split):
    sub = table_lib.select(table, gmask)
    x = {n: table_lib.numeric(sub, c) for n, c in columns.items()}
    y, _ = target_values(sub, target, floor)
    scored = np.asarray(sub[score_by], bool) if score_by else np.ones(len(y), bool)
    for name in names:
      values = np.unique(x[name])
      cases = [("largest", values[-1])]
      if leave_one_out:
        cases += [("leave_one_out", v) for v in values]
      for kind, v in cases:
        held = x[name] == v
        row = {"group": gkey, "kind": kind, "input": name, "column": columns[name],
               "value": float(v), "n_train": int(np.sum(~held)), "n_test": int(np.sum(held & scored))}
        try:
          metrics, _ = _fit_and_score(form, x, y, ~held, held & scored, columns, target, max_starts,
                                      seed + gi, means)
          row.update(metrics)
        except JaxscaleError as e:
          row["error"] = str(e)
        rows.append(row)
  return {"law": law, "target": target, "inputs": dict(columns), "rows": rows}
