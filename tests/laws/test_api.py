"""`analyze`: fits.json content for split arms, boundary, holdout, zeros; `write_fits`."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from jaxscale import laws
from jaxscale.errors import JaxscaleError

ARM_B = dict(E_inf=0.08, A=2.0, alpha=0.4)  # distilled arm differs in E_inf and the Dp term


def _records(synth, sigma=0.01, seed=0):
  """Two arms (distilled false/true) of study-shaped records: 72 rows each."""
  x = synth.transfer_grid(seeds=2)
  rng = np.random.default_rng(seed)
  cols = {k: [] for k in ("dp", "params", "df", "distilled", "seed", "eval_error")}
  for distilled, over in ((False, dict(E_inf=0.05, A=3.2, alpha=0.4)), (True, ARM_B)):
    y = synth.noisy("transfer_additive", dict(synth.TRANSFER_TRUTH, **over), x, rng, sigma)
    cols["dp"] += x["Dp"].astype(int).tolist()
    cols["params"] += x["M"].astype(int).tolist()
    cols["df"] += x["Df"].astype(int).tolist()
    cols["distilled"] += [distilled] * len(y)
    cols["seed"] += [0, 1] * (len(y) // 2)
    cols["eval_error"] += y.tolist()
  return {k: np.array(v) for k, v in cols.items()}


def test_analyze_split_boundary_holdout(synth):
  table = _records(synth)
  result = laws.analyze(table, law="transfer_additive",
                        inputs={"dp": "dp", "params": "params", "df": "df"}, target="eval_error",
                        split_by="distilled", bootstrap=30, boundary="dp",
                        at={"params": 4e5, "df": 300}, holdout=("dp", 30000), seed=0,
                        max_starts=256, progress=False,
                        boundary_at=[{"M": 1e5, "Df": 100}, {"M": 1.6e6, "Df": 1000}])
  # The typed result: fits, bootstraps and rows per group, every boundary solved once.
  assert set(result.groups) == {"false", "true"}
  gt = result.groups["true"]
  assert gt.fit.params.keys() == gt.bootstrap.params.keys() and gt.bootstrap.u.shape == (30, 7)
  assert set(gt.x) == {"Dp", "M", "Df"} and len(gt.x["Dp"]) == 54 and len(gt.holdout.y) == 18
  assert result.boundary is result.content["boundary"] or result.boundary == result.content["boundary"]
  assert [b["at"] for b in result.boundaries] == [{"M": 1e5, "Df": 100.0}, {"M": 1.6e6, "Df": 1000.0}]
  out = result.content
  json.dumps(out, allow_nan=False)  # JSON-serialisable, no NaN
  assert set(out["groups"]) == {"false", "true"}
  assert out["inputs"] == {"Dp": "dp", "M": "params", "Df": "df"}
  g = out["groups"]["true"]
  assert g["n"] == 54 and g["law"] == "transfer_additive"
  assert set(g["params"]) == {"E_inf", "A", "alpha", "B", "beta", "C", "gamma"}
  for p in g["params"].values():
    assert p["ci_low"] <= p["value"] <= p["ci_high"]
  assert g["statistics"]["converged"] and g["statistics"]["r2_log"] > 0.99
  h = g["holdout"]
  assert h["n"] == 18 and h["log_rmse"] < 0.1 and h["are"] < 0.1 and 0 < h["log_rmse_se"] < h["log_rmse"]
  assert len(h["rows"]["line"]) == 18 and len(g["rows"]["fitted"]) == 54
  b = out["boundary"]
  assert b["input"] == "Dp" and b["at"] == {"M": 4e5, "Df": 300.0}
  # The stated range is the data's, held-out rows included (never shrunk by --holdout).
  assert b["range"] == [1000.0, 30000.0] and b["range_source"] == "data"
  assert isinstance(b["roots"], list) and b["sign_below"] in (-1, 1)
  assert b["verdict"] in ("crossing", "cannot_tell", "a_higher", "a_lower")
  assert b["ends"]["low"]["ci_low"] <= b["ends"]["low"]["delta"] <= b["ends"]["low"]["ci_high"]
  assert 0.0 <= b["boot_crossing_frac"] <= 1.0 and b["n_boot"] == 30
  for r in b["roots"]:
    assert 1000.0 <= r["value"] <= 30000.0


def test_analyze_boundary_finds_crossing(synth):
  table = _records(synth, sigma=0.002)
  out = laws.analyze(table, law="transfer_additive", inputs={"Dp": "dp", "M": "params", "Df": "df"},
                     target="eval_error", split_by="distilled", boundary="Dp",
                     at={"M": 4e5, "Df": 300}, max_starts=256, progress=False).content
  want = ((3.2 - 2.0) / (0.08 - 0.05)) ** (1 / 0.4)
  assert [round(r["value"] / want, 1) for r in out["boundary"]["roots"]] == [1.0]
  assert out["boundary"]["roots"][0]["ci_low"] is None  # no bootstrap, no CI
  assert out["boundary"]["sign_below"] == 1
  assert out["boundary"]["verdict"] == "fitted_crossing"  # no bootstrap: about the curves only
  assert jnp.zeros(1).dtype == jnp.float32


def test_zero_target_is_error_unless_floored(synth):
  table = _records(synth)
  table["eval_error"][[3, 80]] = 0.0
  kw = dict(law="transfer_additive", inputs={"Dp": "dp", "M": "params", "Df": "df"},
            target="eval_error", split_by="distilled", max_starts=64, progress=False)
  with pytest.raises(JaxscaleError, match="target column 'eval_error' has 1 non-positive value"
                     r".*--floor .* in group distilled=false"):
    laws.analyze(table, **kw)
  out = laws.analyze(table, floor=1e-3, **kw).content
  assert out["groups"]["false"]["warnings"][0].startswith("1 target value(s) below the floor")


@pytest.mark.parametrize("kw, message", [
    (dict(inputs={"Dp": "dp", "M": "params"}), "missing Df"),
    (dict(inputs={"Dp": "dp", "M": "params", "Df": "nope"}), "no column 'nope'"),
    (dict(boundary="Dp", at={"M": 4e5, "Df": 300}), "needs --split-by"),
    (dict(split_by="distilled", boundary="Dp", at={"M": 4e5}), "pass --at Df=VALUE"),
    (dict(holdout=("dp", 123)), "no rows have dp=123"),
])
def test_bad_requests_are_one_line_errors(synth, kw, message):
  args = dict(law="transfer_additive", inputs={"Dp": "dp", "M": "params", "Df": "df"},
              target="eval_error", max_starts=64, progress=False)
  args.update(kw)
  with pytest.raises(JaxscaleError, match=message):
    laws.analyze(_records(synth), **args)


def test_predict_draws_curves_from_fits_json(synth):
  table = _records(synth, sigma=0.0)
  out = laws.analyze(table, law="transfer_additive", inputs={"Dp": "dp", "M": "params", "Df": "df"},
                     target="eval_error", split_by="distilled", max_starts=256, progress=False).content
  params = {k: v["value"] for k, v in json.loads(json.dumps(out))["groups"]["true"]["params"].items()}
  dp = np.geomspace(1e3, 3e4, 7)
  got = laws.predict("transfer_additive", params, {"dp": dp, "M": 4e5, "Df": 300.0})
  want = laws.predict("transfer_additive", dict(synth.TRANSFER_TRUTH, **ARM_B),
                      {"Dp": dp, "M": 4e5, "Df": 300.0})
  assert got.shape == (7,)
  np.testing.assert_allclose(got, want, rtol=1e-3)


def test_write_fits_is_atomic_and_never_overwrites(tmp_path):
  path = tmp_path / "fits.json"
  laws.write_fits(str(path), {"a": float("nan"), "b": np.float64(2.0)})
  assert json.loads(path.read_text()) == {"a": None, "b": 2.0}
  with pytest.raises(JaxscaleError, match="exists; pass --force"):
    laws.write_fits(str(path), {"a": 1})
  laws.write_fits(str(path), {"a": 1}, force=True)
  assert json.loads(path.read_text()) == {"a": 1}
  assert [p.name for p in tmp_path.iterdir()] == ["fits.json"]  # no temp files left


def test_predictions_in_fits_json_equal_the_law_at_the_fitted_params(synth):
  table = _records(synth)
  out = laws.analyze(table, law="transfer_additive", inputs={"Dp": "dp", "M": "params", "Df": "df"},
                     target="eval_error", split_by="distilled", holdout=("dp", 30000),
                     max_starts=64, progress=False).content
  out = json.loads(json.dumps(out))
  lines = np.arange(1, len(table["dp"]) + 1)  # no file: line i is row i - 1
  for key, g in out["groups"].items():
    params = {k: v["value"] for k, v in g["params"].items()}
    for rows in (g["rows"], g["holdout"]["rows"]):
      idx = np.searchsorted(lines, rows["line"])
      x = {"Dp": table["dp"][idx], "M": table["params"][idx], "Df": table["df"][idx]}
      want = laws.predict("transfer_additive", params, x)
      np.testing.assert_allclose(rows["fitted"], want, rtol=1e-12)
      np.testing.assert_allclose(rows["log_residual"],
                                 np.log(table["eval_error"][idx]) - np.log(want), atol=1e-12)
      assert set(table["distilled"][idx].tolist()) == {key == "true"}
