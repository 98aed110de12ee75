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


def _fit_and_score(form, x, y, train, test, columns, target, max_starts, seed):
  res = fit_lib.fit(form, {k: v[train] for k, v in x.items()}, y[train], max_starts=max_starts,
                    seed=seed, columns=columns, target=target)
  pred = forms_lib.predict(form.name, res.params, {k: v[test] for k, v in x.items()})
  return holdout_metrics(pred, y[test]), res


def backtest(table: Mapping[str, np.ndarray], *, law: str, inputs: Mapping[str, str], target: str,
             split_by: str | None = None, by: tuple[str, ...] | None = None,
             leave_one_out: bool = True, floor: float | None = None,
             max_starts: int = BACKTEST_MAX_STARTS, seed: int = 0) -> dict:
  """Largest-scale holdout by each input and leave-one-scale-out, per group of `split_by`.

  For every input (or those in `by`): "largest" fits on rows below the input's largest value and
  predicts the rows at it; "leave_one_out" does the same for every distinct value. A case whose
  training rows cannot be fitted (e.g. the input becomes constant) gets an "error" string instead
  of metrics. Returns {"law", "target", "inputs", "rows": [{"group", "kind", "input", "column",
  "value", "n_train", "n_test", "log_rmse", "are" | "error"}]}, JSON-serialisable.
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
    for name in names:
      values = np.unique(x[name])
      cases = [("largest", values[-1])]
      if leave_one_out:
        cases += [("leave_one_out", v) for v in values]
      for kind, v in cases:
        test = x[name] == v
        row = {"group": gkey, "kind": kind, "input": name, "column": columns[name],
               "value": float(v), "n_train": int(np.sum(~test)), "n_test": int(np.sum(test))}
        try:
          metrics, _ = _fit_and_score(form, x, y, ~test, test, columns, target, max_starts,
                                      seed + gi)
          row.update(metrics)
        except JaxscaleError as e:
          row["error"] = str(e)
        rows.append(row)
  return {"law": law, "target": target, "inputs": dict(columns), "rows": rows}
