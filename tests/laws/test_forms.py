"""Law forms: formulas, the registry, user-defined forms, M4's implicit solution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscale import laws
from jaxscale.errors import JaxscaleError
from jaxscale.laws import fit as fit_lib
from jaxscale.laws import forms


def test_builtin_forms_are_registered():
  for name in ("power", "chinchilla", "transfer_additive", "transfer_multiplicative", "m4",
               "broken_power"):
    assert name in laws.names()


def test_chinchilla_formula():
  p = dict(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)
  m, d = np.array([1e8, 1e9]), np.array([1e10, 2e10])
  want = 1.69 + 406.4 * m ** -0.34 + 410.7 * d ** -0.28
  np.testing.assert_allclose(laws.predict("chinchilla", p, {"M": m, "D": d}), want, rtol=1e-12)


def test_transfer_forms_formulas():
  p = dict(E_inf=0.05, A=3.0, alpha=0.35, B=20.0, beta=0.3, C=2.0, gamma=0.4)
  dp, m, df = 1e4, 4e5, 300.0
  add = laws.predict("transfer_additive", p, {"Dp": dp, "M": m, "Df": df})
  mul = laws.predict("transfer_multiplicative", p, {"Dp": dp, "M": m, "Df": df})
  np.testing.assert_allclose(add, 0.05 + 3 * dp ** -.35 + 20 * m ** -.3 + 2 * df ** -.4, rtol=1e-12)
  np.testing.assert_allclose(mul, 0.05 + 20 * m ** -.3 + (3 * dp ** -.35 + 2) * df ** -.4, rtol=1e-12)


def test_broken_power_limits():
  # Far below the break the slope is c0, far above it is c0 + c1.
  p = dict(E_inf=1e-9, A=1.0, c0=0.2, d=1e4, c1=0.5, f=0.2)
  x = np.array([1.0, 10.0, 1e8, 1e9])
  e = laws.predict("broken_power", p, {"x": x})
  slope_lo = -np.log(e[1] / e[0]) / np.log(10.0)
  slope_hi = -np.log(e[3] / e[2]) / np.log(10.0)
  assert slope_lo == pytest.approx(0.2, abs=1e-3)
  assert slope_hi == pytest.approx(0.7, abs=1e-3)


def test_m4_solves_its_equation_and_has_implicit_gradient():
  p = dict(E_inf=0.05, E0=0.9, alpha=1.0, beta=50.0, c=0.5)
  x = np.array([10.0, 1e3, 1e5])
  e = laws.predict("m4", p, {"x": x})
  lhs = (e - p["E_inf"]) / (p["E0"] - e) ** p["alpha"]
  np.testing.assert_allclose(lhs, p["beta"] * x ** -p["c"], rtol=1e-9)
  assert np.all(np.diff(e) < 0)
  form = forms.get("m4")
  with fit_lib.float64():
    u = jnp.asarray(form.to_raw(p))
    f = jax.jit(lambda u: jnp.sum(form.log_predict(u, {"x": jnp.asarray(x)})))
    g = np.asarray(jax.grad(f)(u))
    eps = 1e-6
    fd = np.array([(f(u.at[i].add(eps)) - f(u.at[i].add(-eps))) / (2 * eps) for i in range(len(u))])
  np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-7)


def test_user_defined_form_can_be_registered_and_fitted():
  def exp_decay(p, x):
    return p["E_inf"] + p["A"] * jnp.exp(-x["t"] / p["tau"])

  form = laws.register(laws.LawForm(
      name="test_exp_decay", fn=exp_decay, inputs=("t",), formula="E = E_inf + A exp(-t/tau)",
      params=(laws.Param("E_inf", init=(0.01, 0.1)), laws.Param("A", init=(0.1, 1.0)),
              laws.Param("tau", init=(1.0, 10.0, 100.0)))))
  assert laws.get("test_exp_decay") is form
  t = np.linspace(1, 50, 30)
  y = laws.predict("test_exp_decay", dict(E_inf=0.1, A=0.8, tau=12.0), {"t": t})
  res = fit_lib.fit(form, {"t": t}, y)
  assert res.params["tau"] == pytest.approx(12.0, rel=1e-4)


def test_input_names_are_case_insensitive_with_aliases():
  form = forms.get("transfer_additive")
  assert form.resolve_input("dp") == "Dp"
  assert form.resolve_input("params") == "M"
  with pytest.raises(JaxscaleError, match="no input 'D'"):
    form.resolve_input("D")


def test_unknown_law_is_one_line_error():
  with pytest.raises(JaxscaleError, match="unknown law 'nope'; choose one of"):
    laws.get("nope")
