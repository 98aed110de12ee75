"""Multi-start fits of a law: Huber loss on log-residuals, damped Newton, float64, one vmapped batch.

Objective (Hoffmann et al. 2022; Besiroglu et al. 2024), for the optimised vector u [P]:

  L(u) = sum_i w_i * huber_delta(log f(x_i; u) - log y_i),
  huber_delta(r) = r^2 / 2 if |r| <= delta else delta * (|r| - delta / 2),   delta = 1e-3.

Every start runs the same fixed number of saddle-free damped Newton steps with the exact Hessian
(P <= ~10, so it is tiny): d = -V diag(1 / (|w| + lam * max|w|)) V^T g from the eigen-decomposition
H = V diag(w) V^T, accepted when L does not increase; lam shrinks after an accepted step and grows
after a rejected one (Levenberg-Marquardt style). All starts run in one `jit(vmap(...))` in float64,
inside a scoped `jax.enable_x64`, so the process default dtype stays float32.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
from typing import Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxscale.errors import JaxscaleError
from jaxscale.laws import forms as forms_lib
from jaxscale.laws.forms import LawForm

DEFAULT_DELTA = 1e-3
DEFAULT_MAX_STARTS = 4096
DEFAULT_SCREEN_ITERS = 10
DEFAULT_ITERS = 100
# Problems per jitted call (starts, or resamples x starts).
CHUNK = 256
# Dampings tried at each step, relative to the current one.
_LADDER = np.array([1e-4, 1e-2, 1.0, 1e2, 1e4])


@contextlib.contextmanager
def float64() -> Iterator[None]:
  """Enables float64 inside the block only (jitted functions traced here are float64)."""
  with jax.enable_x64(True):
    yield


def huber(r: jax.Array, delta: float | jax.Array) -> jax.Array:
  """Elementwise Huber loss of residuals r (same shape as r)."""
  a = jnp.abs(r)
  return jnp.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def objective(form: LawForm, u: jax.Array, x: Mapping[str, jax.Array], log_y: jax.Array,
              w: jax.Array, delta) -> jax.Array:
  """L(u) = sum_i w_i huber(log f(x_i; u) - log y_i); u [P], x/log_y/w [N] -> scalar."""
  r = form.log_predict(u, x) - log_y
  return jnp.sum(w * huber(r, delta))


def _newton(form: LawForm, u0, x, log_y, w, delta, iters):
  """Runs `iters` damped Newton steps from u0 [P]; returns (u [P], L, Newton decrement).

  The decrement g^T |H|^-1 g is the one computed at the start of the last step.
  """
  obj = lambda u: objective(form, u, x, log_y, w, delta)
  grad = jax.grad(obj)
  hess = jax.hessian(obj)

  def direction(u):
    g, h = grad(u), hess(u)
    ev, vec = jnp.linalg.eigh(h)
    return g, ev, vec

  def body(_, carry):
    u, f, lam, _ = carry
    g, ev, vec = direction(u)
    scale = jnp.max(jnp.abs(ev))
    gv = vec.T @ g
    # Newton decrement at u (the one at the returned point is not recomputed: compile time).
    dec = jnp.sum(gv ** 2 / (jnp.abs(ev) + 1e-12 * scale + 1e-300))
    # Try a ladder of dampings around the current one and keep the best (a cheap line search).
    lams = lam * _LADDER
    steps = -((gv[None, :] / (jnp.abs(ev)[None, :] + lams[:, None] * scale + 1e-300)) @ vec.T)
    cand = u[None, :] + steps
    f_cand = jax.vmap(obj)(cand)
    f_cand = jnp.where(jnp.isfinite(f_cand) & jnp.all(jnp.isfinite(cand), axis=1), f_cand, jnp.inf)
    k = jnp.argmin(f_cand)
    ok = f_cand[k] <= f
    u = jnp.where(ok, cand[k], u)
    f = jnp.where(ok, f_cand[k], f)
    lam = jnp.clip(jnp.where(ok, lams[k] * 0.5, lam * 1e3), 1e-14, 1e14)
    return u, f, lam, dec

  f0 = obj(u0)
  f0 = jnp.where(jnp.isfinite(f0), f0, jnp.inf)
  init = (u0, f0, jnp.asarray(1e-3, u0.dtype), jnp.asarray(jnp.inf, u0.dtype))
  u, f, _, dec = jax.lax.fori_loop(0, iters, body, init)
  return u, f, dec


@functools.lru_cache(maxsize=None)
def _solver(form: LawForm):
  """jit(vmap over problems): (u0 [C, P], x [N], log_y [N], w [C, N], delta, iters) -> u, L, dec.

  The iteration count is a traced argument, so one compilation serves every phase (screening,
  refinement, bootstrap) for a given chunk size C and padded data size N.
  """
  fn = functools.partial(_newton, form)
  return jax.jit(jax.vmap(fn, in_axes=(0, None, None, 0, None, None)))


def _bucket(n: int) -> int:
  """The padded data size for n points: 16, 24, 32, 48, 64, 96, ... (at most 1.5x n)."""
  size = 16
  while size < n:
    size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
  return size


def solve(form: LawForm, u0: np.ndarray, x: Mapping[str, np.ndarray], y: np.ndarray,
          w: np.ndarray, *, delta: float, iters: int, chunk: int = CHUNK,
          on_chunk=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Runs damped Newton from every row of u0 [S, P] with weights w [S, N] (or [N]) on (x, y).

  Problems run `chunk` at a time through one jitted vmap; data are padded to `_bucket(N)` points
  of weight 0 so that compilations are shared across data sizes. Returns u [S, P], L [S] (inf
  where not finite) and the Newton decrement [S]. `on_chunk(n)` is called after each chunk.
  """
  n = len(y)
  size = _bucket(n)
  pad = size - n
  xp = {k: np.concatenate([np.asarray(v, np.float64), np.ones(pad)]) for k, v in x.items()}
  yp = np.concatenate([np.asarray(y, np.float64), np.ones(pad)])
  w = np.asarray(w, np.float64)
  s = len(u0)
  us, fs, ds = [], [], []
  with float64():
    xj = {k: jnp.asarray(v) for k, v in xp.items()}
    log_y = jnp.log(jnp.asarray(yp))
    fn = _solver(form)
    for lo in range(0, s, chunk):
      u_c = np.asarray(u0[lo:lo + chunk], np.float64)
      m = len(u_c)
      w_c = w[lo:lo + chunk] if w.ndim == 2 else np.broadcast_to(w, (m, n))
      w_c = np.concatenate([w_c, np.zeros((m, pad))], axis=1)
      if m < chunk:  # pad the last chunk to the same shape
        u_c = np.concatenate([u_c, np.repeat(u_c[-1:], chunk - m, axis=0)])
        w_c = np.concatenate([w_c, np.repeat(w_c[-1:], chunk - m, axis=0)])
      u, f, d = fn(jnp.asarray(u_c), xj, log_y, jnp.asarray(w_c), jnp.asarray(delta, jnp.float64),
                   jnp.asarray(iters, jnp.int32))
      us.append(np.asarray(u)[:m])
      fs.append(np.asarray(f)[:m])
      ds.append(np.asarray(d)[:m])
      if on_chunk is not None:
        on_chunk(m)
  f = np.concatenate(fs)
  return np.concatenate(us), np.where(np.isfinite(f), f, np.inf), np.concatenate(ds)


# ----------------------------------------------------------------------------- data checks

def check_data(form: LawForm, x: Mapping[str, np.ndarray], y: np.ndarray,
               columns: Mapping[str, str] | None = None, target: str = "target") -> None:
  """Raises a one-line JaxscaleError for data a log-space fit cannot use."""
  columns = columns or {}
  for name in form.inputs:
    col = columns.get(name, name)
    v = x[name]
    _check_positive(v, f"input column '{col}'")
    if len(v) and np.all(v == v[0]):
      raise JaxscaleError(f"input column '{col}' is constant ({v[0]:g}); a law needs it to vary: "
                          f"vary it in the data or choose a law without input {name}")
  _check_positive(y, f"target column '{target}'",
                  hint="; drop those rows, or pass --floor F (analyze(floor=F)) to clip them up to F")
  if len(y) < len(form.params) + 1:
    raise JaxscaleError(f"law '{form.name}' has {len(form.params)} parameters but only {len(y)} "
                        f"points were given; supply at least {len(form.params) + 1} points or a "
                        f"smaller law")


def _check_positive(v: np.ndarray, what: str, hint: str = "") -> None:
  bad = ~np.isfinite(v) | (v <= 0)
  if np.any(bad):
    rows = np.flatnonzero(bad)
    shown = ", ".join(str(i) for i in rows[:5]) + (", ..." if len(rows) > 5 else "")
    kinds = []
    if np.any(np.isnan(v)):
      kinds.append("NaN")
    if np.any(np.isinf(v)):
      kinds.append("infinite")
    if np.any(v[np.isfinite(v)] <= 0):
      kinds.append("non-positive")
    raise JaxscaleError(f"{what} has {len(rows)} {'/'.join(kinds)} value(s) (rows {shown}) where a "
                        f"log is taken{hint}")


# ----------------------------------------------------------------------------- starts

def initial_grid(form: LawForm, x: Mapping[str, np.ndarray], y: np.ndarray,
                 max_starts: int = DEFAULT_MAX_STARTS, seed: int = 0) -> np.ndarray:
  """The product grid of every parameter's initial values, float64 [S, P] (optimised space).

  When the product exceeds `max_starts`, a seeded random subset of it of that size is used.
  """
  axes = [p.initial_values(x, y) for p in form.params]
  total = int(np.prod([len(a) for a in axes]))
  if total <= max_starts:
    return np.array(list(itertools.product(*axes)), np.float64)
  rng = np.random.default_rng(seed)
  flat = rng.choice(total, size=max_starts, replace=False)
  idx = np.unravel_index(flat, [len(a) for a in axes])
  return np.stack([a[i] for a, i in zip(axes, idx)], axis=1)


# ----------------------------------------------------------------------------- fit

@dataclasses.dataclass
class FitResult:
  """The best of a multi-start fit.

  u: best optimised vector, float64 [P]; params: natural values by name (with derived ones);
  objective: L(u); converged: Newton decrement below tolerance; r2_log, rmse_log: in log space;
  n_starts / n_best_basin: starts run / starts ending within 1e-6 (relative) of the best objective;
  starts: a few diverse good end points, float64 [K, P], used to seed bootstrap refits.
  """
  form: LawForm
  u: np.ndarray
  params: dict[str, float]
  objective: float
  converged: bool
  decrement: float
  r2_log: float
  rmse_log: float
  n: int
  n_starts: int
  n_best_basin: int
  starts: np.ndarray
  warnings: list[str]

  def statistics(self) -> dict:
    return dict(n=self.n, objective=self.objective, converged=self.converged,
                newton_decrement=self.decrement, r2_log=self.r2_log, rmse_log=self.rmse_log,
                n_starts=self.n_starts, n_best_basin=self.n_best_basin)


def natural_params(form: LawForm, u: np.ndarray) -> dict[str, np.ndarray]:
  """Natural parameters (and derived quantities) by name for u [..., P]; numpy float64 [...]."""
  with float64():
    uj = jnp.asarray(u, jnp.float64)
    p = form.to_natural(uj)
    if form.derived is not None:
      p.update(form.derived(p))
    return {k: np.asarray(v, np.float64) for k, v in p.items()}


def fit(form: LawForm | str, x: Mapping[str, np.ndarray], y: np.ndarray, *,
        weights: np.ndarray | None = None, delta: float = DEFAULT_DELTA,
        max_starts: int = DEFAULT_MAX_STARTS, screen_iters: int = DEFAULT_SCREEN_ITERS,
        iters: int = DEFAULT_ITERS, seed: int = 0,
        init: np.ndarray | None = None, columns: Mapping[str, str] | None = None,
        target: str = "target") -> FitResult:
  """Fits `form` to y [N] at inputs x (name -> [N]) from a grid of starts; float64 throughout.

  Every start takes `screen_iters` Newton steps; the best max(64, S // 32) then take `iters` more
  (n_best_basin counts among those).
  init: optional starts [S, P] in the optimised space (default: `initial_grid`).
  columns: input name -> column name, only to name columns in error messages.
  """
  form = forms_lib.get(form) if isinstance(form, str) else form
  x = {k: np.asarray(v, np.float64).reshape(-1) for k, v in x.items()}
  y = np.asarray(y, np.float64).reshape(-1)
  check_data(form, x, y, columns, target)
  w = np.ones_like(y) if weights is None else np.asarray(weights, np.float64)
  u0 = initial_grid(form, x, y, max_starts, seed) if init is None else np.asarray(init, np.float64)
  # Phase 1: every start takes `screen_iters` steps; phase 2: the best `keep` take `iters` more.
  u, f, _ = solve(form, u0, x, y, w, delta=delta, iters=screen_iters)
  keep = min(len(u0), max(64, len(u0) // 32))
  top = np.argsort(f, kind="stable")[:keep]
  u, f, dec = solve(form, u[top], x, y, w, delta=delta, iters=iters)
  f = np.where(np.isfinite(f), f, np.inf)
  best = int(np.argmin(f))
  if not np.isfinite(f[best]):
    raise JaxscaleError(f"law '{form.name}' could not be evaluated at any start on this data; "
                        f"check the inputs' units and the target column")
  tol = 1e-6 * abs(f[best]) + 1e-12
  n_basin = int(np.sum(f <= f[best] + tol))
  u_best = u[best]
  log_pred = _log_predict(form, u_best, x)
  r = log_pred - np.log(y)
  ss_tot = float(np.sum((np.log(y) - np.mean(np.log(y))) ** 2))
  r2 = 1.0 - float(np.sum(r ** 2)) / ss_tot if ss_tot > 0 else float("nan")
  rmse = float(np.sqrt(np.mean(r ** 2)))
  converged = bool(dec[best] < 1e-8 * max(1.0, abs(f[best])))
  result = FitResult(form=form, u=u_best, params={}, objective=float(f[best]), converged=converged,
                     decrement=float(dec[best]), r2_log=r2, rmse_log=rmse, n=len(y),
                     n_starts=len(u0), n_best_basin=n_basin, starts=_diverse_starts(u, f),
                     warnings=[])
  result.params = {k: float(v) for k, v in natural_params(form, u_best).items()}
  result.warnings = diagnose(form, u_best, x, result)
  return result


def _log_predict(form: LawForm, u: np.ndarray, x: Mapping[str, np.ndarray]) -> np.ndarray:
  with float64():
    return np.asarray(form.log_predict(jnp.asarray(u), {k: jnp.asarray(v) for k, v in x.items()}))


def _diverse_starts(u: np.ndarray, f: np.ndarray, k: int = 4) -> np.ndarray:
  """Up to k end points, best first, each differing from the chosen ones by > 1e-3 somewhere."""
  order = np.argsort(f)
  chosen = [order[0]]
  for i in order[1:200]:
    if len(chosen) >= k or not np.isfinite(f[i]):
      break
    if all(np.max(np.abs(u[i] - u[j])) > 1e-3 for j in chosen):
      chosen.append(i)
  while len(chosen) < k:  # pad so the bootstrap batch keeps one shape
    chosen.append(order[0])
  return u[np.array(chosen)]


def diagnose(form: LawForm, u: np.ndarray, x: Mapping[str, np.ndarray], result: FitResult) -> list[str]:
  """Identifiability warnings: no convergence, flat directions, parameters at or past bounds."""
  warnings = []
  if not result.converged:
    warnings.append(f"the best start did not converge (Newton decrement {result.decrement:.2g}); "
                    f"the parameters may be inaccurate")
  with float64():
    xj = {k: jnp.asarray(v) for k, v in x.items()}
    jac = np.asarray(jax.jacfwd(lambda v: form.log_predict(v, xj))(jnp.asarray(u)))
  names = form.param_names
  norms = np.linalg.norm(jac, axis=0)
  dead = [n for n, c in zip(names, norms) if not np.isfinite(c) or c < 1e-6 * np.sqrt(len(jac))]
  for n in dead:
    warnings.append(f"parameter {n} has no effect on the fit (at its bound or its term vanishes); "
                    f"it is not identifiable")
  live = [i for i, n in enumerate(names) if n not in dead]
  if len(live) > 1:
    jn = jac[:, live] / norms[live]
    _, s, vt = np.linalg.svd(jn, full_matrices=False)
    if s[-1] < 1e-6 * s[0]:
      v = np.abs(vt[-1])
      involved = [names[live[i]] for i in np.argsort(-v)[:2]]
      warnings.append(f"flat direction in the fit (parameters {' and '.join(involved)} trade off; "
                      f"condition {s[0] / max(s[-1], 1e-300):.2g}); they are not identifiable")
  for p in form.params:
    v = result.params[p.name]
    lo, hi = p.bounds
    if not lo <= v <= hi:
      warnings.append(f"parameter {p.name} = {v:.4g} is outside its plausible range [{lo:g}, {hi:g}]")
  if result.n_best_basin == 1 and result.n_starts > 1:
    warnings.append(f"only 1 of {result.n_starts} starts reached the best objective; the optimum "
                    f"may be fragile")
  return warnings
