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
  out = laws.analyze(table, law="transfer_additive",
                     inputs={"dp": "dp", "params": "params", "df": "df"}, target="eval_error",
                     split_by="distilled", bootstrap=50, boundary="dp",
                     at={"params": 4e5, "df": 300}, holdout=("dp", 30000), seed=0,
                     max_starts=256, progress=False)
  json.dumps(out, allow_nan=False)  # JSON-serialisable, no NaN
  assert set(out["groups"]) == {"false", "true"}
  assert out["inputs"] == {"Dp": "dp", "M": "params", "Df": "df"}
  g = out["groups"]["true"]
  assert g["n"] == 54 and g["law"] == "transfer_additive"
  assert set(g["params"]) == {"E_inf", "A", "alpha", "B", "beta", "C", "gamma"}
  for p in g["params"].values():
    assert p["ci_low"] <= p["value"] <= p["ci_high"]
  assert g["statistics"]["converged"] and g["statistics"]["r2_log"] > 0.99
  assert g["holdout"]["n"] == 18 and g["holdout"]["log_rmse"] < 0.1 and g["holdout"]["are"] < 0.1
  b = out["boundary"]
  assert b["input"] == "Dp" and b["at"] == {"M": 4e5, "Df": 300.0}
  assert b["range"] == [1000.0, 10000.0]  # the fitted range (Dp = 3e4 is held out)
  assert isinstance(b["roots"], list) and b["sign_below"] in (-1, 1)
  # Dp = 3e4 was only predicted, so the boundary at ~1.0e4 may or may not be inside.
  for r in b["roots"]:
    assert 1000.0 <= r["value"] <= 10000.0


def test_analyze_boundary_finds_crossing(synth):
  table = _records(synth, sigma=0.002)
  out = laws.analyze(table, law="transfer_additive", inputs={"Dp": "dp", "M": "params", "Df": "df"},
                     target="eval_error", split_by="distilled", boundary="Dp",
                     at={"M": 4e5, "Df": 300}, max_starts=256, progress=False)
  want = ((3.2 - 2.0) / (0.08 - 0.05)) ** (1 / 0.4)
  assert [round(r["value"] / want, 1) for r in out["boundary"]["roots"]] == [1.0]
  assert out["boundary"]["roots"][0]["ci_low"] is None  # no bootstrap, no CI
  assert out["boundary"]["sign_below"] == 1
  assert jnp.zeros(1).dtype == jnp.float32


def test_zero_target_is_error_unless_floored(synth):
  table = _records(synth)
  table["eval_error"][[3, 80]] = 0.0
  kw = dict(law="transfer_additive", inputs={"Dp": "dp", "M": "params", "Df": "df"},
            target="eval_error", split_by="distilled", max_starts=64, progress=False)
  with pytest.raises(JaxscaleError, match="target column 'eval_error' has 1 non-positive value"
                     r".*--floor .* in group distilled=false"):
    laws.analyze(table, **kw)
  out = laws.analyze(table, floor=1e-3, **kw)
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
                     target="eval_error", split_by="distilled", max_starts=256, progress=False)
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


def test_details_return_fits_and_bootstraps(synth):
  details = {}
  laws.analyze(_records(synth), law="transfer_additive",
               inputs={"Dp": "dp", "M": "params", "Df": "df"}, target="eval_error",
               split_by="distilled", bootstrap=10, max_starts=64, progress=False, details=details)
  assert set(details) == {"false", "true"}
  res, boot, x = details["true"]
  assert res.params.keys() == boot.params.keys() and boot.u.shape == (10, 7)
  assert set(x) == {"Dp", "M", "Df"} and len(x["Dp"]) == 72
