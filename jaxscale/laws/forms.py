"""Scaling-law forms as pure `jax.numpy` functions of named inputs.

A form is a `LawForm`: a function ``fn(p, x) -> E`` of natural-valued parameters ``p`` (a dict of
scalars) and named inputs ``x`` (a dict of float arrays of one shape ``[N]``) giving the predicted
target ``E`` (float ``[N]``, positive), plus a spec of its parameters. Each `Param` says whether the
optimizer works on it in log space (``log=True``: the parameter is ``exp(u)`` of an unconstrained
``u``, so it stays positive) and gives a grid of initial values in natural units.

Built-in forms (x^-a means x to the power -a; every coefficient is positive):

* ``power``:      E(x) = E_inf + A * x^-alpha
* ``chinchilla``: E(M, D) = E + A * M^-alpha + B * D^-beta                       (Hoffmann et al. 2022)
* ``transfer_additive``: E(Dp, M, Df) = E_inf + A * Dp^-alpha + B * M^-beta + C * Df^-gamma
* ``transfer_multiplicative``:
                  E(Dp, M, Df) = E_inf + B * M^-beta + (A * Dp^-alpha + C) * Df^-gamma
* ``power0``:     E(x) = beta * x^-c                      (M1 of Alabdulmohsin et al. 2022)
* ``m3``:         E(x) = beta * (1/x + gamma)^c           (M3 of Alabdulmohsin et al. 2022)
* ``m4``:         (E - E_inf) / (E0 - E)^alpha = beta * x^-c,  E_inf < E < E0
                  (M4 of Alabdulmohsin, Neyshabur and Zhai 2022), solved for E.

Exponents are written with the sign that makes them positive for a falling error: the paper's M1
``beta x^c`` and M3 ``beta (1/x + gamma)^(-c)`` have c < 0, which is -c here.
* ``broken_power``: E(x) = E_inf + A * x^-c0 * (1 + (x / d)^(1/f))^(-c1 * f)
                  (one smooth break, Caballero et al. 2023).

Adding a form: write ``fn(p, x)`` and call `register(LawForm(...))`; see docs/laws.md.
`LawForm.constrain(fix=..., limits=...)` gives the same law with some parameters held at given
values (they leave the optimised vector) or kept inside hard limits (by a change of variable).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxscale.errors import JaxscaleError
from jaxscale.laws.numeric import float64

Array = jax.Array
InitFn = Callable[[Mapping[str, np.ndarray], np.ndarray], Sequence[float]]

# Default initial grids (natural units), in the spirit of Hoffmann et al. 2022, Appendix D.2.
COEF_GRID = tuple(float(np.exp(v)) for v in (0.0, 5.0, 10.0, 15.0, 20.0, 25.0))
EXP_GRID = (0.0, 0.5, 1.0, 1.5, 2.0)
FLOOR_GRID = tuple(float(np.exp(v)) for v in (-1.0, -0.5, 0.0, 0.5, 1.0))


@dataclasses.dataclass(frozen=True)
class Param:
  """One parameter of a law.

  name: the name reported in fits.json.
  log: optimise ``u = log(value)`` (the value stays positive); else optimise the value itself.
  init: initial values in natural units, or ``init(x, y) -> values`` computed from the data
    (inputs ``x`` by name, float64 [N], and target ``y``, float64 [N]).
  bounds: the plausible natural range (lo, hi); a fit ending outside it is reported as a warning.
  limits: hard limits (lo, hi) (either may be infinite) or None. With limits the optimised
    variable u maps to lo + (hi - lo) sigmoid(u) (both finite), lo + exp(u) or hi - exp(u),
    so the value never leaves them; `log` is then ignored.
  """
  name: str
  log: bool = True
  init: Sequence[float] | InitFn = COEF_GRID
  bounds: tuple[float, float] = (0.0, float("inf"))
  limits: tuple[float, float] | None = None

  def initial_values(self, x: Mapping[str, np.ndarray], y: np.ndarray) -> np.ndarray:
    """The initial values in the optimised space, float64 [K] (distinct)."""
    vals = self.init(x, y) if callable(self.init) else self.init
    vals = np.asarray(vals, np.float64).reshape(-1)
    if self.limits is not None:
      lo, hi = self.limits
      span = (hi - lo) if np.isfinite(hi - lo) else max(1.0, abs(lo) if np.isfinite(lo) else abs(hi))
      inner = np.clip(vals, lo + 1e-3 * span, hi - 1e-3 * span)
      if np.isfinite(lo) and np.isfinite(hi):
        inner = np.unique(np.concatenate([inner, lo + span * np.array([0.25, 0.5, 0.75])]))
      return np.unique(self.raw(inner))
    if self.log:
      vals = np.log(np.maximum(vals, 1e-300))
    return vals

  def natural(self, u):
    """The natural value of the optimised variable u (jax or numpy array, any shape)."""
    xp = jnp if isinstance(u, jax.Array) else np
    if self.limits is None:
      return xp.exp(u) if self.log else u
    lo, hi = self.limits
    if np.isfinite(lo) and np.isfinite(hi):
      return lo + (hi - lo) / (1.0 + xp.exp(-u))
    if np.isfinite(lo):
      return lo + xp.exp(u)
    if np.isfinite(hi):
      return hi - xp.exp(u)
    return u

  def raw(self, v):
    """The optimised variable for natural value(s) v (numpy); inverse of `natural`."""
    v = np.asarray(v, np.float64)
    if self.limits is None:
      return np.log(v) if self.log else v
    lo, hi = self.limits
    with np.errstate(divide="ignore", invalid="ignore"):
      if np.isfinite(lo) and np.isfinite(hi):
        t = (v - lo) / (hi - lo)
        return np.log(t) - np.log1p(-t)
      if np.isfinite(lo):
        return np.log(v - lo)
      if np.isfinite(hi):
        return np.log(hi - v)
    return v


@dataclasses.dataclass(frozen=True, eq=False)
class LawForm:
  """A law: ``fn(p, x) -> E`` with its named inputs and parameters.

  fn: p (dict name -> scalar, natural units), x (dict input -> float [N]) -> predicted E, float [N] > 0.
  inputs: the input names ``x`` must hold (e.g. ("Dp", "M", "Df")).
  params: the parameter specs, in the order of the optimised vector.
  formula: the formula as text (shown in fits.json and docs).
  aliases: other accepted spellings of input names, e.g. {"M": ("params", "N")}.
  derived: optional ``derived(p) -> dict`` of extra reported quantities (they get CIs too).
  fixed: parameters held at given natural values (not optimised; see `constrain`).
  """
  name: str
  fn: Callable[[Mapping[str, Array], Mapping[str, Array]], Array]
  inputs: tuple[str, ...]
  params: tuple[Param, ...]
  formula: str
  aliases: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  derived: Callable[[Mapping[str, Array]], Mapping[str, Array]] | None = None
  fixed: Mapping[str, float] = dataclasses.field(default_factory=dict)

  @property
  def param_names(self) -> tuple[str, ...]:
    """Names of the optimised (free) parameters, in the order of the vector u [P]."""
    return tuple(p.name for p in self.params)

  def to_natural(self, u: Array) -> dict[str, Array]:
    """Maps the optimised vector ``u`` [..., P] to natural parameters by name (fixed ones too)."""
    out = {p.name: p.natural(u[..., i]) for i, p in enumerate(self.params)}
    xp = jnp if isinstance(u, jax.Array) else np
    for name, v in self.fixed.items():
      out[name] = xp.full(u.shape[:-1], v, dtype=u.dtype)
    return out

  def to_raw(self, p: Mapping[str, float]) -> np.ndarray:
    """Maps natural parameters by name to the optimised vector, float64 [P]."""
    return np.array([s.raw(p[s.name]) for s in self.params], np.float64)

  def constrain(self, fix: Mapping[str, float] | None = None,
                limits: Mapping[str, tuple[float, float]] | None = None) -> "LawForm":
    """This law with parameters in `fix` held at their values and those in `limits` kept inside.

    Names must be parameters of the law; a fixed value must lie inside its limits. Raises a
    one-line error otherwise.
    """
    fix, limits = dict(fix or {}), dict(limits or {})
    if not fix and not limits:
      return self
    memo = (id(self), tuple(sorted((k, float(v)) for k, v in fix.items())),
            tuple(sorted((k, tuple(map(float, v))) for k, v in limits.items())))
    if memo in _CONSTRAINED:  # the same object again, so compiled solvers are reused
      return _CONSTRAINED[memo]
    known = set(self.param_names)
    for name in list(fix) + list(limits):
      if name not in known:
        raise JaxscaleError(f"law '{self.name}' has no free parameter '{name}'; its parameters "
                            f"are {', '.join(self.param_names)}")
    for name, (lo, hi) in limits.items():
      if not lo < hi:
        raise JaxscaleError(f"--bounds {name}={lo:g}:{hi:g}: the lower bound must be below the "
                            f"upper one")
      if name in fix and not lo <= fix[name] <= hi:
        raise JaxscaleError(f"--fix {name}={fix[name]:g} lies outside --bounds {lo:g}:{hi:g}")
    if len(fix) >= len(self.params):
      raise JaxscaleError(f"every parameter of law '{self.name}' is fixed; leave at least one free")
    params = tuple(dataclasses.replace(p, limits=tuple(map(float, limits[p.name])))
                   if p.name in limits else p for p in self.params if p.name not in fix)
    out = dataclasses.replace(self, params=params,
                              fixed={**self.fixed, **{k: float(v) for k, v in fix.items()}})
    _CONSTRAINED[memo] = out
    return out

  def log_predict(self, u: Array, x: Mapping[str, Array]) -> Array:
    """log E for the optimised vector u [P] at inputs x (each [N]); float [N]."""
    e = self.fn(self.to_natural(u), x)
    return jnp.log(jnp.maximum(e, jnp.finfo(e.dtype).tiny))

  def resolve_input(self, name: str) -> str:
    """The canonical input name for `name` (case-insensitive, aliases allowed), or raises."""
    for canon in self.inputs:
      spellings = (canon,) + tuple(self.aliases.get(canon, ()))
      if name.lower() in (s.lower() for s in spellings):
        return canon
    raise JaxscaleError(f"law '{self.name}' has no input '{name}'; its inputs are "
                        f"{', '.join(self.inputs)}")


_REGISTRY: dict[str, LawForm] = {}
_CONSTRAINED: dict[tuple, LawForm] = {}


def register(form: LawForm) -> LawForm:
  """Adds `form` to the registry (replacing a form of the same name); returns it."""
  _REGISTRY[form.name] = form
  return form


def get(name: str) -> LawForm:
  """The registered form called `name`, or a one-line error listing the known ones."""
  if name not in _REGISTRY:
    raise JaxscaleError(f"unknown law '{name}'; choose one of: {', '.join(names())}")
  return _REGISTRY[name]


def names() -> list[str]:
  """Names of the registered forms."""
  return sorted(_REGISTRY)


def predict(law: str, params: Mapping[str, float], inputs: Mapping[str, np.ndarray]) -> np.ndarray:
  """Evaluates law `law` with natural `params` at `inputs` (name -> array); float64 numpy.

  Input names are matched case-insensitively (aliases allowed); arrays broadcast together.
  Runs in float64 without changing the process-wide default precision.
  """
  form = get(law)
  x = {form.resolve_input(k): np.asarray(v, np.float64) for k, v in inputs.items()}
  missing = [n for n in form.inputs if n not in x]
  if missing:
    raise JaxscaleError(f"law '{law}' needs inputs {', '.join(missing)} to predict")
  shape = np.broadcast_shapes(*(v.shape for v in x.values()))
  x = {k: np.broadcast_to(v, shape).reshape(-1) for k, v in x.items()}
  p = dict(params)
  with float64():
    pj = {k: jnp.asarray(float(v), jnp.float64) for k, v in p.items()}
    out = form.fn(pj, {k: jnp.asarray(v) for k, v in x.items()})
    return np.asarray(out, np.float64).reshape(shape)


# ----------------------------------------------------------------------------- built-in forms

def _pow(x: Array, a: Array) -> Array:
  """x^-a for x > 0, as exp(-a log x)."""
  return jnp.exp(-a * jnp.log(x))


def power(p, x):
  """E(x) = E_inf + A x^-alpha."""
  return p["E_inf"] + p["A"] * _pow(x["x"], p["alpha"])


def power0(p, x):
  """E(x) = beta x^-c: M1 of Alabdulmohsin et al. 2022 (no offset)."""
  return p["beta"] * _pow(x["x"], p["c"])


def m3(p, x):
  """E(x) = beta (1/x + gamma)^c: M3 of Alabdulmohsin et al. 2022; saturates at beta gamma^c."""
  return p["beta"] * jnp.exp(p["c"] * jnp.log(1.0 / x["x"] + p["gamma"]))


def chinchilla(p, x):
  """E(M, D) = E + A M^-alpha + B D^-beta (Hoffmann et al. 2022, eq. 2)."""
  return p["E"] + p["A"] * _pow(x["M"], p["alpha"]) + p["B"] * _pow(x["D"], p["beta"])


def transfer_additive(p, x):
  """E(Dp, M, Df) = E_inf + A Dp^-alpha + B M^-beta + C Df^-gamma."""
  return (p["E_inf"] + p["A"] * _pow(x["Dp"], p["alpha"]) + p["B"] * _pow(x["M"], p["beta"])
          + p["C"] * _pow(x["Df"], p["gamma"]))


def transfer_multiplicative(p, x):
  """E(Dp, M, Df) = E_inf + B M^-beta + (A Dp^-alpha + C) Df^-gamma.

  The fine-tuning term is scaled by how much pretraining data the model saw: the benefit of
  pretraining (A Dp^-alpha) matters most when Df is small and fades as Df grows, which is the
  interaction between Dp and Df that an additive law cannot express.
  """
  return (p["E_inf"] + p["B"] * _pow(x["M"], p["beta"])
          + (p["A"] * _pow(x["Dp"], p["alpha"]) + p["C"]) * _pow(x["Df"], p["gamma"]))


def broken_power(p, x):
  """E(x) = E_inf + A x^-c0 (1 + (x/d)^(1/f))^(-c1 f) (Caballero et al. 2023, one break)."""
  z = jnp.log(x["x"])
  t = (z - jnp.log(p["d"])) / p["f"]
  return p["E_inf"] + p["A"] * jnp.exp(-p["c0"] * z - p["c1"] * p["f"] * jnp.logaddexp(0.0, t))


@jax.custom_jvp
def _m4_logit(alpha, r):
  """The root s of h(s) = log sigmoid(s) - alpha log sigmoid(-s) - r (elementwise).

  h is increasing with h' = sigmoid(-s) + alpha sigmoid(s) > 0 and convex (alpha > 1) or concave
  (alpha < 1), so Newton converges from any start; it starts from the asymptotes' root.
  """
  s = jnp.where(r > 0, r / alpha, r)

  def step(_, s):
    h = jax.nn.log_sigmoid(s) - alpha * jax.nn.log_sigmoid(-s) - r
    return s - h / (jax.nn.sigmoid(-s) + alpha * jax.nn.sigmoid(s))

  return jax.lax.fori_loop(0, 16, step, s)


@_m4_logit.defjvp
def _m4_logit_jvp(primals, tangents):
  # Implicit differentiation: ds = (log sigmoid(-s) dalpha + dr) / h'(s).
  alpha, r = primals
  d_alpha, d_r = tangents
  s = _m4_logit(alpha, r)
  dh = jax.nn.sigmoid(-s) + alpha * jax.nn.sigmoid(s)
  return s, (jax.nn.log_sigmoid(-s) * d_alpha + d_r) / dh


def m4(p, x):
  """M4: (E - E_inf)/(E0 - E)^alpha = beta x^-c, solved for E (NaN unless E_inf < E0).

  With gap = E0 - E_inf and E = E_inf + gap * sigmoid(s) the equation reads
  log sigmoid(s) - alpha log sigmoid(-s) = log beta - c log x - (1 - alpha) log gap.
  """
  gap = p["E0"] - p["E_inf"]
  ok = gap > 0
  gap = jnp.where(ok, gap, 1.0)
  r = jnp.log(p["beta"]) - p["c"] * jnp.log(x["x"]) - (1.0 - p["alpha"]) * jnp.log(gap)
  alpha = jnp.broadcast_to(p["alpha"], jnp.shape(r))
  e = p["E_inf"] + gap * jax.nn.sigmoid(_m4_logit(alpha, r))
  return jnp.where(ok, e, jnp.nan)


def _quantiles_of(name: str, qs=(0.1, 0.3, 0.5, 0.7, 0.9)) -> InitFn:
  return lambda x, y: np.quantile(x[name], qs)


def _floor_init(x, y):
  """E_inf starts at fractions of the smallest observed target."""
  return np.min(y) * np.array([0.05, 0.3, 0.7])


def _ceiling_init(x, y):
  """E0 starts above the largest observed target."""
  return np.max(y) + (np.max(y) - np.min(y)) * np.array([0.05, 1.0, 4.0]) + 1e-6


def _scale_init(x, y):
  """beta (offset-free forms) starts at the targets' geometric mean times 1e-2, 1, 1e2 and 1e4."""
  g = float(np.exp(np.mean(np.log(y))))
  return g * np.array([1e-2, 1.0, 1e2, 1e4])


_EXP = dict(log=False, init=EXP_GRID, bounds=(0.0, 10.0))

register(LawForm(
    name="power", fn=power, inputs=("x",),
    params=(Param("E_inf", init=_floor_init), Param("A"), Param("alpha", **_EXP)),
    formula="E = E_inf + A * x^-alpha"))

register(LawForm(
    name="power0", fn=power0, inputs=("x",),
    params=(Param("beta", init=_scale_init),
            Param("c", log=False, init=(0.0, 0.25, 0.5, 1.0), bounds=(-10.0, 10.0))),
    formula="E = beta * x^-c"))

register(LawForm(
    name="m3", fn=m3, inputs=("x",),
    params=(Param("beta", init=_scale_init),
            Param("gamma", init=lambda x, y: 1.0 / np.quantile(x["x"], [0.1, 0.5, 0.9, 0.99])
                  * np.array([1.0, 1.0, 1.0, 10.0])),
            Param("c", log=False, init=(0.1, 0.3, 0.6, 1.0), bounds=(-10.0, 10.0))),
    formula="E = beta * (1/x + gamma)^c"))

register(LawForm(
    name="chinchilla", fn=chinchilla, inputs=("M", "D"),
    params=(Param("E", init=FLOOR_GRID), Param("A"), Param("alpha", **_EXP),
            Param("B"), Param("beta", **_EXP)),
    formula="E = E + A * M^-alpha + B * D^-beta",
    aliases={"M": ("N", "params"), "D": ("tokens", "data")}))

_EXP4 = dict(log=False, init=(0.1, 0.4, 0.8, 1.5), bounds=(0.0, 10.0))
_COEF4 = (1.0, float(np.exp(3.0)), float(np.exp(8.0)))

register(LawForm(
    name="transfer_additive", fn=transfer_additive, inputs=("Dp", "M", "Df"),
    params=(Param("E_inf", init=_floor_init),
            Param("A", init=_COEF4), Param("alpha", **_EXP4),
            Param("B", init=_COEF4), Param("beta", **_EXP4),
            Param("C", init=_COEF4), Param("gamma", **_EXP4)),
    formula="E = E_inf + A * Dp^-alpha + B * M^-beta + C * Df^-gamma",
    aliases={"M": ("N", "params")}))

register(LawForm(
    name="transfer_multiplicative", fn=transfer_multiplicative, inputs=("Dp", "M", "Df"),
    params=(Param("E_inf", init=_floor_init),
            Param("A", init=_COEF4), Param("alpha", **_EXP4),
            Param("B", init=_COEF4), Param("beta", **_EXP4),
            Param("C", init=(0.1, 1.0, 10.0)), Param("gamma", **_EXP4)),
    formula="E = E_inf + B * M^-beta + (A * Dp^-alpha + C) * Df^-gamma",
    aliases={"M": ("N", "params")}))

register(LawForm(
    name="m4", fn=m4, inputs=("x",),
    params=(Param("E_inf", init=_floor_init), Param("E0", init=_ceiling_init),
            Param("alpha", init=(0.25, 1.0, 2.0), bounds=(0.0, 20.0)),
            Param("beta", init=COEF_GRID[:4]), Param("c", log=False, init=(0.25, 0.5, 1.0, 2.0),
                                                     bounds=(0.0, 10.0))),
    formula="(E - E_inf) / (E0 - E)^alpha = beta * x^-c, E_inf < E < E0",
    derived=lambda p: {"gap": p["E0"] - p["E_inf"]}))

register(LawForm(
    name="broken_power", fn=broken_power, inputs=("x",),
    params=(Param("E_inf", init=_floor_init), Param("A", init=COEF_GRID[:4]),
            Param("c0", log=False, init=(0.0, 0.3, 1.0), bounds=(-5.0, 10.0)),
            Param("d", init=_quantiles_of("x", (0.25, 0.5, 0.75))),
            Param("c1", log=False, init=(-0.5, 0.3, 1.0), bounds=(-10.0, 10.0)),
            Param("f", init=(0.3, 1.0), bounds=(1e-3, 100.0))),
    formula="E = E_inf + A * x^-c0 * (1 + (x/d)^(1/f))^(-c1*f)"))
