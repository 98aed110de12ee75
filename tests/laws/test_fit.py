"""Multi-start fits: recovery, statistics, float64 scoping, input errors, identifiability warnings."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxscale import laws
from jaxscale.errors import JaxscaleError
from jaxscale.laws import fit as fit_lib
from jaxscale.laws import numeric

CHIN = dict(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)


def _chin_data(n=40, sigma=0.0, seed=0):
  rng = np.random.default_rng(seed)
  x = {"M": np.exp(rng.uniform(np.log(1e7), np.log(1e10), n)),
       "D": np.exp(rng.uniform(np.log(1e8), np.log(1e11), n))}
  y = laws.predict("chinchilla", CHIN, x) * np.exp(sigma * rng.standard_normal(n))
  return x, y


def test_exact_data_recovers_parameters_and_reports_statistics():
  x, y = _chin_data()
  res = fit_lib.fit("chinchilla", x, y, max_starts=1024)
  for k, v in CHIN.items():
    assert res.params[k] == pytest.approx(v, rel=1e-4), k
  s = res.statistics()
  assert s["converged"] and s["r2_log"] > 0.999999 and s["rmse_log"] < 1e-6
  assert 1 <= s["n_best_basin"] <= s["n_starts"] == 1024
  assert res.objective < 1e-10
  assert res.warnings == []


def test_fit_leaves_default_precision_float32():
  x, y = _chin_data()
  fit_lib.fit("chinchilla", x, y, max_starts=64)
  assert jnp.zeros(1).dtype == jnp.float32
  assert jnp.asarray(1.0).dtype == jnp.float32


def test_losses_are_optax_huber_and_half_squares():
  r = jnp.array([0.0, 5e-4, -5e-4, 1e-2, -1e-2])
  h = np.asarray(numeric.rho("huber", r, 1e-3))
  np.testing.assert_allclose(h, [0, 1.25e-7, 1.25e-7, 1e-3 * (1e-2 - 5e-4), 1e-3 * (1e-2 - 5e-4)],
                             rtol=1e-6)  # float32 here
  np.testing.assert_allclose(np.asarray(numeric.rho("squared", r, 1e-3)), 0.5 * np.asarray(r) ** 2,
                             rtol=1e-6)
  psi, omega = numeric.psi_omega("huber", r, 1e-3)
  np.testing.assert_allclose(np.asarray(psi), [0, 5e-4, -5e-4, 1e-3, -1e-3], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(omega), [1, 1, 1, 0.1, 0.1], rtol=1e-6)


def test_robust_to_an_outlier():
  x, y = _chin_data(sigma=0.002, seed=1)
  y[3] *= 3.0  # one wild measurement
  res = fit_lib.fit("chinchilla", x, y, max_starts=512)
  assert res.params["alpha"] == pytest.approx(CHIN["alpha"], rel=0.1)
  assert res.params["E"] == pytest.approx(CHIN["E"], rel=0.05)


def test_initial_grid_is_capped_by_a_seeded_subset():
  x, y = _chin_data(n=20)
  form = laws.get("chinchilla")
  full = fit_lib.initial_grid(form, x, y, max_starts=10 ** 6)
  assert full.shape == (4500, 5)  # Hoffmann et al.'s grid size
  sub = fit_lib.initial_grid(form, x, y, max_starts=100, seed=3)
  assert sub.shape == (100, 5)
  np.testing.assert_array_equal(sub, fit_lib.initial_grid(form, x, y, max_starts=100, seed=3))
  assert {tuple(r) for r in sub} <= {tuple(r) for r in full}


@pytest.mark.parametrize("bad, message", [
    (0.0, "non-positive value"), (np.nan, "NaN value"), (-1.0, "non-positive value")])
def test_bad_target_is_one_line_error(bad, message):
  x, y = _chin_data(n=20)
  y[[2, 5]] = bad
  with pytest.raises(JaxscaleError, match=message) as e:
    fit_lib.fit("chinchilla", x, y, max_starts=16, target="eval_error", lines=np.arange(20) + 2)
  assert "eval_error" in str(e.value) and "lines 4, 7" in str(e.value) and "\n" not in str(e.value)


def test_non_positive_input_is_error():
  x, y = _chin_data(n=20)
  x["M"][0] = 0.0
  with pytest.raises(JaxscaleError, match="input column 'params' has 1 non-positive"):
    fit_lib.fit("chinchilla", x, y, max_starts=16, columns={"M": "params", "D": "tokens"})


def test_too_few_points_is_error():
  x, y = _chin_data(n=5)
  with pytest.raises(JaxscaleError, match="5 free parameters but only 5 points"):
    fit_lib.fit("chinchilla", x, y, max_starts=16)


def test_constant_input_is_error():
  x, y = _chin_data(n=20)
  x["D"][:] = 1e9
  with pytest.raises(JaxscaleError, match="input column 'D' is constant"):
    fit_lib.fit("chinchilla", x, y, max_starts=16)


def test_unidentifiable_fit_is_warned():
  # D is a fixed multiple of M and the exponents are equal: A and B trade off exactly.
  rng = np.random.default_rng(0)
  m = np.exp(rng.uniform(np.log(1e7), np.log(1e10), 40))
  x = {"M": m, "D": 20.0 * m}
  y = laws.predict("chinchilla", dict(CHIN, alpha=0.3, beta=0.3), x)
  res = fit_lib.fit("chinchilla", x, y, max_starts=256)
  assert any("not identifiable" in w for w in res.warnings), res.warnings
