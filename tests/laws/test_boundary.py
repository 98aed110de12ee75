"""The distillation boundary: closed form, fitted arms, no crossing, two crossings, CIs."""

import numpy as np
import pytest

from jaxscale import laws
from jaxscale.errors import JaxscaleError
from jaxscale.laws import boundary
from jaxscale.laws import fit as fit_lib
from jaxscale.laws import uncertainty


def _closed_form(pa, pb):
  """Root of (Ea - Eb) + (Aa - Ab) x^-alpha = 0 for two power laws with one exponent."""
  return ((pb["A"] - pa["A"]) / (pa["E_inf"] - pb["E_inf"])) ** (1.0 / pa["alpha"])


def test_power_laws_match_closed_form():
  pa = dict(E_inf=0.10, A=50.0, alpha=0.5)
  pb = dict(E_inf=0.15, A=20.0, alpha=0.5)
  roots = boundary.find_roots("power", pa, pb, "x", {}, 10.0, 1e7)
  assert len(roots) == 1 and len(roots[0]) == 1
  value, slope = roots[0][0]
  assert value == pytest.approx(_closed_form(pa, pb), rel=1e-9)
  assert slope == -1  # E_a - E_b goes from positive to negative


def test_fitted_arms_give_known_crossing_within_1_percent(synth):
  # Two transfer_additive arms that differ in E_inf and the Dp term; other terms shared.
  truth_a = dict(synth.TRANSFER_TRUTH, E_inf=0.05, A=3.2, alpha=0.4)  # root at Dp ~ 1.0e4
  truth_b = dict(synth.TRANSFER_TRUTH, E_inf=0.08, A=2.0, alpha=0.4)
  want = ((truth_a["A"] - truth_b["A"]) / (truth_b["E_inf"] - truth_a["E_inf"])) ** (1 / 0.4)
  x = synth.transfer_grid(seeds=2)
  rng = np.random.default_rng(0)
  fits, boots = [], []
  for truth in (truth_a, truth_b):
    y = synth.noisy("transfer_additive", truth, x, rng, sigma=0.001)
    res = fit_lib.fit("transfer_additive", x, y, max_starts=256)
    fits.append(res)
    boots.append(uncertainty.bootstrap(res, x, y, 100, seed=0, progress=False))
  at = {"M": 4e5, "Df": 300.0}
  out = boundary.boundary("transfer_additive", fits[0].params, fits[1].params, "Dp", at, 1e3, 3e4,
                          boot_a=boots[0].params, boot_b=boots[1].params, groups=("false", "true"))
  assert len(out["roots"]) == 1
  root = out["roots"][0]
  assert root["value"] == pytest.approx(want, rel=0.01)
  assert root["ci_low"] <= want <= root["ci_high"]
  assert out["sign_below"] == 1 and out["groups"] == ["false", "true"]


def test_no_crossing_in_range_is_reported():
  pa = dict(E_inf=0.10, A=50.0, alpha=0.5)
  pb = dict(E_inf=0.05, A=20.0, alpha=0.5)  # b is better everywhere
  out = boundary.boundary("power", pa, pb, "x", {}, 10.0, 1e6)
  assert out["roots"] == [] and out["sign_below"] == 1


def test_two_crossings_are_both_found():
  # Delta = 0.01 + 10 x^-0.8 - x^-0.3: positive, then negative, then positive again.
  pa = dict(E_inf=0.03, A=10.0, alpha=0.8)
  pb = dict(E_inf=0.02, A=1.0, alpha=0.3)
  x = np.exp(np.linspace(np.log(1.0), np.log(1e8), 20001))
  d = laws.predict("power", pa, {"x": x}) - laws.predict("power", pb, {"x": x})
  want = x[np.flatnonzero(np.sign(d[:-1]) != np.sign(d[1:]))]
  assert len(want) == 2
  out = boundary.boundary("power", pa, pb, "x", {}, 1.0, 1e8)
  got = [r["value"] for r in out["roots"]]
  assert len(got) == 2
  np.testing.assert_allclose(got, want, rtol=2e-3)
  assert [r["slope"] for r in out["roots"]] == [-1, 1]


def test_missing_at_value_is_one_line_error():
  p = dict(E_inf=0.05, A=3.0, alpha=0.35, B=20.0, beta=0.3, C=2.0, gamma=0.4)
  with pytest.raises(JaxscaleError, match="pass --at Df=VALUE"):
    boundary.find_roots("transfer_additive", p, p, "Dp", {"M": 1e5}, 1e3, 1e4)


def _boot(p, spread, n=200, seed=0):
  rng = np.random.default_rng(seed)
  return {k: v * np.exp(spread * rng.standard_normal(n)) for k, v in p.items()}


def test_band_containing_zero_is_cannot_tell_never_one_arm_throughout():
  from jaxscale.laws import command
  import io
  pa = dict(E_inf=0.100, A=1.0, alpha=0.5)
  pb = dict(E_inf=0.101, A=1.0, alpha=0.5)  # b a hair worse: no fitted crossing
  out = boundary.boundary("power", pa, pb, "x", {}, 10.0, 1e6, boot_a=_boot(pa, 0.05),
                          boot_b=_boot(pb, 0.05, seed=1))
  assert out["roots"] == [] and out["sign_below"] == -1
  assert out["verdict"] == "cannot_tell" and out["band_zero_frac"] == 1.0
  lo, hi = out["ends"]["low"]["ci_low"], out["ends"]["low"]["ci_high"]
  assert lo < 0 < hi
  text = io.StringIO()
  command.print_boundary(dict(out, warnings=[]), text)
  assert "cannot tell" in text.getvalue() and "throughout" not in text.getvalue()
  assert "resamples cross in range" in text.getvalue()


def test_band_away_from_zero_is_one_arm_throughout_and_a_crossing_is_established():
  pa = dict(E_inf=0.10, A=50.0, alpha=0.5)
  pb = dict(E_inf=0.05, A=20.0, alpha=0.5)
  out = boundary.boundary("power", pa, pb, "x", {}, 10.0, 1e6, boot_a=_boot(pa, 0.01),
                          boot_b=_boot(pb, 0.01, seed=1))
  assert out["verdict"] == "a_higher" and out["band_zero_frac"] == 0.0
  pb = dict(E_inf=0.15, A=20.0, alpha=0.5)  # crosses at ~3.6e3
  out = boundary.boundary("power", pa, pb, "x", {}, 10.0, 1e6, boot_a=_boot(pa, 0.01),
                          boot_b=_boot(pb, 0.01, seed=1))
  assert out["verdict"] == "crossing" and out["boot_crossing_frac"] == 1.0
  assert out["roots"][0]["ci_found"] == 1.0
