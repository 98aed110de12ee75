"""`jaxscale predict`: the input's columns plus the prediction, warnings when a prediction is not to
be trusted (a law that failed its checks, a row outside the fitted range), non-positive inputs refused."""

import csv
import json
import warnings

import numpy as np
import pytest

from jaxscale import cli
from jaxscale import laws

X = np.exp(np.linspace(np.log(250.0), np.log(4000.0), 24))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("predict")
  y = laws.predict("power", dict(E_inf=0.05, A=2.0, alpha=0.4), {"x": X})
  y = y * np.exp(0.01 * np.random.default_rng(0).standard_normal(len(X)))
  data, fits = tmp / "d.csv", tmp / "fits.json"
  data.write_text("dp,err\n" + "".join(f"{a:.8g},{b:.8g}\n" for a, b in zip(X, y)))
  assert cli.main(["fit", str(data), "--law", "power", "--inputs", "x=dp", "--target", "err",
                   "--bootstrap", "10", "--starts", "32", "--out", str(fits)]) == 0
  return fits


def _predict(capsys, fits, tmp_path, text, name="new.csv"):
  new, preds = tmp_path / name, tmp_path / ("p-" + name)
  new.write_text(text)
  capsys.readouterr()
  with warnings.catch_warnings():
    warnings.simplefilter("error", RuntimeWarning)   # no numpy RuntimeWarnings reach the user
    rc = cli.main(["predict", str(fits), str(new), "--out", str(preds)])
  return rc, preds, capsys.readouterr()


def test_output_keeps_the_input_columns(fitted, tmp_path, capsys):
  rc, preds, _ = _predict(capsys, fitted, tmp_path, "note,dp,err\na,300,0.4\n,1000,\nc x,2500,0.2\n")
  assert rc == 0
  rows = list(csv.DictReader(preds.open()))
  assert list(rows[0]) == ["line", "group", "note", "dp", "err", "prediction", "ci_low", "ci_high"]
  assert [r["note"] for r in rows] == ["a", "", "c x"] and [r["dp"] for r in rows] == ["300", "1000", "2500"]
  assert [r["err"] for r in rows] == ["0.4", "", "0.2"]
  params = {k: v["value"] for k, v in json.loads(fitted.read_text())["groups"]["all"]["params"].items()}
  for r in rows:
    assert float(r["prediction"]) == pytest.approx(float(laws.predict("power", params, {"x": float(r["dp"])})))
    assert float(r["ci_low"]) <= float(r["prediction"]) <= float(r["ci_high"])


def test_rows_outside_the_fitted_range_are_named_with_how_far(fitted, tmp_path, capsys):
  rc, _, out = _predict(capsys, fitted, tmp_path, "dp\n1000\n100000\n50\n")
  assert rc == 0
  lines = [line for line in out.err.splitlines() if "warning" in line]
  assert len(lines) == 1, out.err
  assert "2 of 3 row(s) lie outside" in lines[0]
  hi = X.max()
  assert f"up to {100000 / hi:.3g}x above the largest fitted {hi:g}" in lines[0] and "line 3" in lines[0]
  rc, _, out = _predict(capsys, fitted, tmp_path, "dp\n1000\n", name="inside.csv")
  assert rc == 0 and "warning" not in out.err


def test_a_law_that_failed_its_checks_is_said(fitted, tmp_path, capsys):
  fits = json.loads(fitted.read_text())
  fits["law_check"] = {"plain": {"passed": False, "reasons": ["R² (log) of the cell means 0.5 < 0.9"]}}
  failed = tmp_path / "failed.json"
  failed.write_text(json.dumps(fits))
  rc, _, out = _predict(capsys, failed, tmp_path, "dp\n1000\n")
  assert rc == 0
  lines = [line for line in out.err.splitlines() if "warning" in line]
  assert len(lines) == 1 and "failed its checks (plain: R² (log) of the cell means 0.5 < 0.9)" in lines[0]


@pytest.mark.parametrize("value", ["0", "-5"])
def test_non_positive_inputs_are_refused_in_one_line(fitted, tmp_path, capsys, value):
  rc, preds, out = _predict(capsys, fitted, tmp_path, f"dp\n1000\n{value}\n")
  assert rc == 2 and not preds.exists()
  err = out.err.strip().splitlines()
  assert len(err) == 1 and "must be a positive number; line 3 has" in err[0] and value in err[0]
