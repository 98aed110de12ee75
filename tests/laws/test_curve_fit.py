"""jaxscale fit --curves: a curves.jsonl as one row per point, the burn-in, and a fit with examples seen
as an input that recovers the exponent of synthetic curves."""

import json

import numpy as np
import pytest

from jaxscale import cli
from jaxscale.errors import JaxscaleError
from jaxscale.laws import curve_table, forms

TRUE = dict(E_inf=0.05, A=2.0, alpha=0.4, B=3.0, beta=0.3, C=1.0, gamma=0.5, G=4.0, delta=0.6)


def _curves(path, noise=0.0, seed=0):
  """Runs over Dp x M x Df, each with points at 10%, 30%, 60% and 100% of 100 steps of batch 32."""
  rng = np.random.default_rng(seed)
  with open(path, "w") as f:
    for dp in (500, 2000, 8000):
      for m in (1e4, 1e5, 1e6):
        for df in (100, 1000):
          points = []
          for step in (10, 30, 60, 100):
            x = {"Dp": np.array([dp], float), "M": np.array([m]), "Df": np.array([df], float),
                 "T": np.array([step * 32.0])}
            e = float(forms.predict(curve_table.CURVE_LAW, TRUE, x)[0]) * float(np.exp(noise * rng.normal()))
            points.append({"step": step, "examples": step * 32, "train_loss": 1.0, "eval_error": e,
                           "eval_loss": 1.0, "eval_count": 256})
          f.write(json.dumps({"stage": "finetune", "cell_id": f"ft-{dp}-{m:g}-{df}", "params": m, "dp": dp,
                              "df": df, "steps": 100, "batch_size": 32, "points": points}) + "\n")


def test_points_are_rows_and_the_burn_in_drops_the_early_ones(tmp_path):
  path = str(tmp_path / "curves.jsonl")
  _curves(path)
  every = curve_table.read_curves(path)
  assert len(every["frac"]) == 18 * 4 and sorted(set(every["frac"])) == [0.1, 0.3, 0.6, 1.0]
  kept = curve_table.read_curves(path, burn_in=0.3)
  assert len(kept["frac"]) == 18 * 3 and kept["frac"].min() == 0.3
  assert set(kept["__line__"]) == set(range(1, 19)) and kept["dp"].dtype.kind in "if"
  for bad in (-0.1, 1.0):
    with pytest.raises(JaxscaleError, match=r"^--burn-in must be a fraction of the budget in \[0, 1\)"):
      curve_table.read_curves(path, bad)


def test_fit_curves_recovers_the_examples_exponent(tmp_path, capsys):
  path, out = str(tmp_path / "curves.jsonl"), tmp_path / "fits.json"
  _curves(path, noise=0.01)
  assert cli.main(["fit", "--curves", path, "--burn-in", "0.1", "--law", curve_table.CURVE_LAW,
                   "--inputs", "Dp=dp,M=params,Df=df,T=examples", "--target", "eval_error",
                   "--out", str(out)]) == 0
  fits = json.loads(out.read_text())
  (group,) = fits["groups"].values()
  assert group["n"] == 18 * 4
  assert group["params"]["delta"]["value"] == pytest.approx(TRUE["delta"], abs=0.1)


def test_burn_in_without_curves_and_records_as_curves_are_one_line(tmp_path, capsys):
  records = tmp_path / "records.jsonl"
  records.write_text(json.dumps({"stage": "finetune", "cell_id": "a", "dp": 1, "eval_error": 0.5}) + "\n")
  base = ["fit", str(records), "--law", "power", "--inputs", "x=dp", "--target", "eval_error",
          "--out", str(tmp_path / "f.json")]
  assert cli.main(base + ["--burn-in", "0.1"]) == 2
  assert cli.main(base + ["--curves"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert "add --curves" in err[0] and "no 'points' and 'steps' columns" in err[-1]
