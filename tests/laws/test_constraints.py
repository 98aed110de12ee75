"""New forms (power0 = M1, m3 = M3), fixed and bounded parameters, the squared loss, a large table."""

import json

import numpy as np
import pytest

from jaxscale import cli
from jaxscale import laws
from jaxscale.errors import JaxscaleError
from jaxscale.laws import fit as fit_lib

X = np.exp(np.linspace(np.log(10.0), np.log(1e6), 40))


@pytest.mark.parametrize("law, truth", [
    ("power0", dict(beta=3.0, c=0.3)),
    ("m3", dict(beta=0.8, gamma=1e-3, c=0.25)),
])
def test_new_forms_recover_known_parameters(law, truth):
  y = laws.predict(law, truth, {"x": X})
  res = fit_lib.fit(law, {"x": X}, y, max_starts=256)
  for k, v in truth.items():
    assert res.params[k] == pytest.approx(v, rel=1e-4), (k, res.params)
  assert res.converged


def test_m3_formula():
  e = laws.predict("m3", dict(beta=2.0, gamma=0.01, c=0.5), {"x": np.array([10.0, 1e4])})
  np.testing.assert_allclose(e, 2.0 * (1 / np.array([10.0, 1e4]) + 0.01) ** 0.5, rtol=1e-12)


def test_fixed_parameter_stays_fixed_and_counts_in_dof_and_bootstrap(synth):
  truth = dict(E_inf=0.05, E0=1.0, alpha=1.0, beta=40.0, c=0.6)
  rng = np.random.default_rng(0)
  y = synth.noisy("m4", truth, {"x": X}, rng, sigma=0.005)
  form = laws.get("m4").constrain(fix={"E0": 1.0})
  res = fit_lib.fit(form, {"x": X}, y, max_starts=512, loss="squared")
  assert res.params["E0"] == 1.0 and res.u.shape == (4,) and res.n_free == 4
  assert res.statistics()["dof"] == 36
  assert res.params["c"] == pytest.approx(0.6, rel=0.1)
  from jaxscale.laws import uncertainty
  boot = uncertainty.bootstrap(res, {"x": X}, y, 20, progress=False)
  assert np.all(boot.params["E0"] == 1.0)


def test_bounds_keep_a_parameter_inside():
  y = laws.predict("power", dict(E_inf=0.05, A=2.0, alpha=0.4), {"x": X})
  form = laws.get("power").constrain(limits={"alpha": (0.0, 0.3)})
  res = fit_lib.fit(form, {"x": X}, y, max_starts=64)
  assert 0.0 < res.params["alpha"] <= 0.3
  assert res.params["alpha"] == pytest.approx(0.3, abs=1e-4)
  assert any("at its bound" in w for w in res.warnings)


@pytest.mark.parametrize("fix, limits, message", [
    ({"nope": 1.0}, None, "no free parameter 'nope'"),
    (None, {"alpha": (1.0, 0.5)}, "lower bound must be below"),
    ({"alpha": 3.0}, {"alpha": (0.0, 1.0)}, "outside --bounds"),
])
def test_bad_constraints_are_one_line_errors(fix, limits, message):
  with pytest.raises(JaxscaleError, match=message):
    laws.get("power").constrain(fix=fix, limits=limits)


def test_cli_fix_bounds_loss_and_predict(tmp_path, capsys):
  rng = np.random.default_rng(0)
  y = laws.predict("power", dict(E_inf=0.05, A=2.0, alpha=0.4), {"x": X})
  y = y * np.exp(0.01 * rng.standard_normal(len(X)))
  data, out, preds = tmp_path / "d.csv", tmp_path / "fits.json", tmp_path / "p.csv"
  data.write_text("size,err\n" + "".join(f"{a:.8g},{b:.8g}\n" for a, b in zip(X, y)))
  rc = cli.main(["fit", str(data), "--law", "power", "--inputs", "x=size", "--target", "err",
                 "--fix", "E_inf=0.05", "--bounds", "alpha=0:1", "--loss", "squared",
                 "--bootstrap", "20", "--starts", "64", "--out", str(out)])
  assert rc == 0
  fits = json.loads(out.read_text())
  g = fits["groups"]["all"]
  assert fits["fixed"] == {"E_inf": 0.05} and fits["objective"] == {"loss": "squared", "delta": None}
  assert g["params"]["E_inf"] == {"value": 0.05, "ci_low": 0.05, "ci_high": 0.05, "kind": "fixed"}
  assert g["dof"] == 38 and g["params"]["alpha"]["value"] == pytest.approx(0.4, rel=0.05)
  assert "(fixed)" in capsys.readouterr().out
  new = tmp_path / "new.csv"
  new.write_text("size\n100\n1e7\n")
  assert cli.main(["predict", str(out), str(new), "--out", str(preds)]) == 0
  got = preds.read_text().splitlines()
  assert got[0] == "line,group,size,prediction,ci_low,ci_high"
  params = {k: v["value"] for k, v in g["params"].items()}
  for row, xv in zip(got[1:], (100.0, 1e7)):
    cells = row.split(",")
    want = float(laws.predict("power", params, {"x": xv}))
    assert float(cells[3]) == pytest.approx(want, rel=1e-12)
    assert float(cells[4]) <= float(cells[3]) <= float(cells[5])


def test_large_table_recovers_its_law():
  # 1e5 rows of the joint law: screened on a subsample, refined on all rows.
  rng = np.random.default_rng(0)
  n = 100_000
  x = {"Dp": np.exp(rng.uniform(np.log(1e3), np.log(1e5), n)),
       "M": np.exp(rng.uniform(np.log(1e5), np.log(1e7), n)),
       "Df": np.exp(rng.uniform(np.log(100), np.log(3000), n))}
  truth = dict(E_inf=0.05, A=3.0, alpha=0.35, B=20.0, beta=0.3, C=2.0, gamma=0.4)
  y = laws.predict("transfer_additive", truth, x) * np.exp(0.02 * rng.standard_normal(n))
  res = fit_lib.fit("transfer_additive", x, y, max_starts=256, loss="squared")
  assert res.converged and res.n == n
  for k, v in truth.items():
    assert res.params[k] == pytest.approx(v, rel=0.05), (k, res.params)


def test_predict_reads_a_schema_1_file(tmp_path):
  v1 = {"version": 1, "law": "m4", "inputs": {"x": "size"}, "split_by": None,
        "bootstrap": {"n": 0, "level": 0.95},
        "groups": {"all": {"params": {"E_inf": {"value": 0.05}, "gap": {"value": 0.85},
                                      "alpha": {"value": 1.0}, "beta": {"value": 40.0},
                                      "c": {"value": 0.6}, "E0": {"value": 0.9}}}}}
  fits, new, preds = tmp_path / "v1.json", tmp_path / "new.csv", tmp_path / "p.csv"
  fits.write_text(json.dumps(v1))
  new.write_text("size\n1000\n")
  assert cli.main(["predict", str(fits), str(new), "--out", str(preds)]) == 0
  want = laws.predict("m4", dict(E_inf=0.05, E0=0.9, alpha=1.0, beta=40.0, c=0.6), {"x": 1000.0})
  assert float(preds.read_text().splitlines()[1].split(",")[3]) == pytest.approx(float(want), rel=1e-12)
