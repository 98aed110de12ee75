"""Backtests: largest-scale holdouts and leave-one-scale-out."""

import json

import numpy as np
import pytest

from jaxscale import laws
from jaxscale.laws import validate


def test_holdout_metrics_formulas():
  m = validate.holdout_metrics(np.array([1.1, 0.9]), np.array([1.0, 1.0]))
  assert m["n"] == 2
  assert m["log_rmse"] == pytest.approx(np.sqrt((np.log(1.1) ** 2 + np.log(0.9) ** 2) / 2))
  assert m["are"] == pytest.approx(0.1)
  assert validate.holdout_metrics(np.zeros(0), np.zeros(0))["log_rmse"] is None


def test_backtest_extrapolates_the_true_law(synth):
  x = synth.transfer_grid(seeds=2)
  y = synth.noisy("transfer_additive", synth.TRANSFER_TRUTH, x, np.random.default_rng(0), 0.005)
  table = {"dp": x["Dp"], "params": x["M"], "df": x["Df"], "err": y}
  out = validate.backtest(table, law="transfer_additive",
                          inputs={"Dp": "dp", "M": "params", "Df": "df"}, target="err",
                          by=("Dp",), leave_one_out=True, max_starts=128)
  json.dumps(out, allow_nan=False)
  rows = out["rows"]
  assert [r["kind"] for r in rows] == ["largest"] + ["leave_one_out"] * 4
  largest = rows[0]
  assert largest["input"] == "Dp" and largest["value"] == 3e4
  assert largest["n_test"] == 18 and largest["n_train"] == 54
  assert largest["log_rmse"] < 0.03 and largest["are"] < 0.03


def test_replicate_means_merges_rows_with_equal_inputs():
  x = {"a": np.array([1.0, 2.0, 1.0, 2.0, 3.0]), "b": np.array([5.0, 5.0, 5.0, 6.0, 5.0])}
  points, means, counts = validate.replicate_means(x, np.array([0.2, 0.4, 0.6, 1.0, 0.3]))
  got = list(zip(points["a"], points["b"], means, counts))
  assert got == [(1.0, 5.0, pytest.approx(0.4), 2), (2.0, 5.0, 0.4, 1), (2.0, 6.0, 1.0, 1), (3.0, 5.0, 0.3, 1)]


def test_backtest_on_replicate_means_removes_the_replicates_noise(synth):
  """Seeds scattered symmetrically about the true law: single rows show the scatter, their means
  (which the law predicts) do not, and both are reported."""
  x = synth.transfer_grid(seeds=1)
  truth = laws.predict("transfer_additive", synth.TRANSFER_TRUTH, x)
  table = {"dp": np.tile(x["Dp"], 3), "params": np.tile(x["M"], 3), "df": np.tile(x["Df"], 3),
           "err": np.concatenate([truth * np.exp(0.1), truth, truth * np.exp(-0.1)])}
  kw = dict(law="transfer_additive", inputs={"Dp": "dp", "M": "params", "Df": "df"}, target="err",
            by=("Dp",), leave_one_out=False, max_starts=128)
  (rows,) = validate.backtest(table, **kw)["rows"]
  (means,) = validate.backtest(table, means=True, **kw)["rows"]
  assert rows["log_rmse"] == pytest.approx(0.1 * np.sqrt(2 / 3), abs=0.01) and "log_rmse_rows" not in rows
  assert means["log_rmse_rows"] == pytest.approx(rows["log_rmse"])
  assert means["log_rmse"] < 0.02 and means["n_points"] == means["n_test"] // 3


def test_backtest_reports_unfittable_cases(synth):
  # Two M values only: holding one out leaves M constant, which is reported, not raised.
  x = synth.transfer_grid(seeds=1)
  keep = x["M"] < 1e6
  table = {"dp": x["Dp"][keep], "params": x["M"][keep], "df": x["Df"][keep]}
  table["err"] = laws.predict("transfer_additive", synth.TRANSFER_TRUTH,
                              {"Dp": table["dp"], "M": table["params"], "Df": table["df"]})
  out = validate.backtest(table, law="transfer_additive",
                          inputs={"Dp": "dp", "M": "params", "Df": "df"}, target="err",
                          by=("M",), leave_one_out=False, max_starts=64)
  assert len(out["rows"]) == 1 and "is constant" in out["rows"][0]["error"]
