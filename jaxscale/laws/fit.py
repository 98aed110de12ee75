"""Multi-start fits of a law on log-residuals: Levenberg-Marquardt from the Jacobian, in float64.

Objective, for the optimised vector u [P] (the free parameters; `forms.LawForm.constrain`):

  L(u) = sum_i w_i rho(r_i),   r_i = log f(x_i; u) - log y_i,

with rho the Huber loss on log-residuals (delta = 1e-3 by default, as Hoffmann et al. 2022 and
Besiroglu et al. 2024) or the squared loss (`numeric.rho`).

Step (Levenberg-Marquardt, Gauss-Newton on a majoriser): with the Jacobian J [N, P] of r,

  g = J^T (w psi(r)),   A = J^T diag(w omega(r)) J   (psi = rho', omega = psi / r; `numeric`)

are accumulated over chunks of rows inside a `lax.scan`, so a start never holds more than
[chunk, P] numbers and no Hessian over all rows is formed. With A = V diag(ev) V^T the candidate
steps d(lam) = -V diag(1 / (ev + lam * max ev)) V^T g are tried for a ladder of 5 dampings around
the current lam; the best is accepted when L does not increase (then lam shrinks; else it grows).

Convergence: the Gauss-Newton decrement dec = g^T (A + 1e-10 max(ev) I)^-1 g, twice the decrease
the local model still promises, is at most tol * (L + 1e-12 * sum(w)) (the second term: residuals
of 1e-6 are noise-free data). A start stops when it converges, when lam reaches its cap, or after
`iters` steps; "converged" is the test at the returned point.

Phases of `fit`: (1) every start takes `screen_iters` steps on a seeded subsample of at most
`screen_rows` rows (all rows when there are fewer); (2) the best max(64, S / 64) continue for up to
`iters` steps on that subsample; (3) when it was a subsample, the best `refine` distinct end
points continue for up to `iters` steps on all rows. Starts run `chunk` at a time in one
`jit(vmap(...))`, where the product starts x rows per scan step is at most `MEMORY_ELEMS`.
Everything runs inside a scoped `jax.enable_x64`, so the process default dtype stays float32.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxscale.errors import JaxscaleError
from jaxscale.laws import forms as forms_lib
from jaxscale.laws import numeric
from jaxscale.laws.forms import LawForm
from jaxscale.laws.numeric import float64  # noqa: F401  (re-exported: fit.float64)
from jaxscale.progress import Progress

DEFAULT_DELTA = 1e-3
DEFAULT_LOSS = "huber"
DEFAULT_MAX_STARTS = 4096
DEFAULT_SCREEN_ITERS = 10
DEFAULT_ITERS = 200
DEFAULT_TOL = 1e-12
DEFAULT_SCREEN_ROWS = 512
DEFAULT_REFINE = 4
# Starts x rows handled per scan step (bounds memory: about 80 * P bytes each).
MEMORY_ELEMS = 2 ** 19
# Most starts per jitted call.
MAX_CHUNK = 256
# Dampings tried at each step, relative to the current one.
_LADDER = np.array([1e-4, 1e-2, 1.0, 1e2, 1e4])
_LAM_MAX = 1e14


# ----------------------------------------------------------------------------- one LM step

def _chunk_stats(form, loss, u, xc, lyc, wc, delta):
  """(L, g [P], A [P, P]) of one chunk of rows (each [R]) at u [P]; rows of weight 0 ignored."""
  p = u.shape[0]
  r, lin = jax.linearize(lambda v: form.log_predict(v, xc) - lyc, u)
  jac = jax.vmap(lin, out_axes=1)(jnp.eye(p, dtype=u.dtype))  # [R, P]
  live = wc > 0
  r = jnp.where(live, r, 0.0)
  jac = jnp.where(live[:, None], jac, 0.0)
  psi, omega = numeric.psi_omega(loss, r, delta)
  f = jnp.sum(wc * numeric.rho(loss, r, delta))
  a = (jac * (wc * omega)[:, None]).T @ jac
  if loss == "squared":
    return f, jac.T @ (wc * psi), a, a
  # Huber's own Gauss-Newton curvature: rows inside delta only.
  inside = (jnp.abs(r) <= delta).astype(r.dtype)
  return f, jac.T @ (wc * psi), a, (jac * (wc * inside)[:, None]).T @ jac


def _scan_rows(fn, init, x, ly, w):
  """Sums fn(x chunk, ly chunk, w chunk) over the leading chunk axis of x/ly/w [C, R]."""
  def body(acc, chunk):
    out = fn(*chunk)
    return jax.tree.map(jnp.add, acc, out), None
  total, _ = jax.lax.scan(body, init, (x, ly, w))
  return total


def _stats(form, loss, u, x, ly, w, delta):
  p = u.shape[0]
  zero = (jnp.zeros((), u.dtype), jnp.zeros(p, u.dtype), jnp.zeros((p, p), u.dtype),
          jnp.zeros((p, p), u.dtype))
  return _scan_rows(lambda xc, lc, wc: _chunk_stats(form, loss, u, xc, lc, wc, delta),
                    zero, x, ly, w)


def _values(form, loss, us, x, ly, w, delta):
  """L at each row of us [K, P] (inf where not finite); data as in `_stats`."""
  def chunk(xc, lc, wc):
    r = jax.vmap(lambda v: form.log_predict(v, xc))(us) - lc
    r = jnp.where(wc > 0, r, 0.0)
    return jnp.sum(wc * numeric.rho(loss, r, delta), axis=1)
  f = _scan_rows(chunk, jnp.zeros(us.shape[0], us.dtype), x, ly, w)
  return jnp.where(jnp.isfinite(f) & jnp.all(jnp.isfinite(us), axis=1), f, jnp.inf)


def _run(form, loss, state, x, ly, w, delta, tol, floor, limit):
  """Up to `limit` more LM steps of one start. state = (u [P], L, lam, dec, conv, stop, k)."""

  def body(state):
    u, _, lam, _, _, _, k = state
    f, g, a, a_gn = _stats(form, loss, u, x, ly, w, delta)
    bad = ~jnp.isfinite(f) | ~jnp.all(jnp.isfinite(g)) | ~jnp.all(jnp.isfinite(a))
    eye = jnp.eye(u.shape[0], dtype=u.dtype)
    a = jnp.where(bad, eye, a)
    g = jnp.where(bad, 0.0, g)
    ev, vec = jnp.linalg.eigh(a)
    ev = jnp.maximum(ev, 0.0)
    scale = jnp.maximum(jnp.max(ev), 1e-300)
    gv = vec.T @ g
    dec = jnp.sum(gv ** 2 / (ev + 1e-10 * scale))
    conv = ~bad & (dec <= tol * (f + floor))
    if loss == "squared":
      lams = lam * _LADDER
      cand = u[None, :] - (gv[None, :] / (ev[None, :] + lams[:, None] * scale)) @ vec.T
    else:  # majoriser steps and Huber Gauss-Newton steps (faster once the inside rows settle)
      lams = lam * _LADDER[1:4]
      ev2, vec2 = jnp.linalg.eigh(jnp.where(bad, eye, a_gn))
      ev2 = jnp.maximum(ev2, 0.0)
      gv2 = vec2.T @ g
      cand = jnp.concatenate([
          u[None, :] - (gv[None, :] / (ev[None, :] + lams[:, None] * scale)) @ vec.T,
          u[None, :] - (gv2[None, :] / (ev2[None, :] + lams[:, None] * scale)) @ vec2.T])
      lams = jnp.concatenate([lams, lams])
    fc = _values(form, loss, cand, x, ly, w, delta)
    i = jnp.argmin(fc)
    ok = (fc[i] <= f) & ~conv & ~bad
    u = jnp.where(ok, cand[i], u)
    f = jnp.where(bad, jnp.inf, jnp.where(ok, fc[i], f))
    lam = jnp.clip(jnp.where(ok, lams[i] * 0.5, lam * 1e3), 1e-14, _LAM_MAX)
    stop = conv | bad | (~ok & (lam >= _LAM_MAX))
    return u, f, lam, dec, conv, stop, k + 1

  k0 = state[-1]
  return jax.lax.while_loop(lambda s: (s[-1] < k0 + limit) & ~s[5], body, state)


@functools.lru_cache(maxsize=None)
def _runner(form: LawForm, loss: str, shared_w: bool):
  """jit(vmap over starts) of `_run`; weights shared [C, R] or per start [S, C, R]."""
  fn = functools.partial(_run, form, loss)
  state_axes = (0, 0, 0, 0, 0, 0, 0)
  return jax.jit(jax.vmap(fn, in_axes=(state_axes, None, None, None if shared_w else 0,
                                       None, None, 0, None)))


# ----------------------------------------------------------------------------- the driver

@dataclasses.dataclass
class Solved:
  """End points of LM runs: u [S, P], objective [S] (inf where not finite), Gauss-Newton
  decrement [S], converged [S] bool, steps taken [S]."""
  u: np.ndarray
  objective: np.ndarray
  decrement: np.ndarray
  converged: np.ndarray
  steps: np.ndarray


def _bucket(n: int) -> int:
  """The padded size for n rows: 16, 24, 32, 48, 64, 96, ... (at most 1.5x n)."""
  size = 16
  while size < n:
    size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
  return size


def layout(n: int, starts: int, memory_elems: int = MEMORY_ELEMS) -> tuple[int, int, int]:
  """(starts per call, rows per scan step, scan steps) for n rows and `starts` problems.

  Rows are padded to a bucket size so that compilations are shared across data sizes.
  """
  rows = _bucket(n)
  if rows > memory_elems:
    rows_per = memory_elems
    steps = -(-n // rows_per)
    return 1, rows_per, steps
  per_call = max(1, min(MAX_CHUNK, memory_elems // rows))
  per_call = 1 << (per_call.bit_length() - 1)  # a power of two, whatever the number of starts:
  if starts <= 8:  # one compilation serves every phase; only a handful of starts gets its own
    per_call = min(per_call, 8)
  return per_call, rows, 1


def _iterate(fn, u_c: np.ndarray, args: tuple, m: int, iters: int, block: int,
             bar: Progress | None) -> tuple[np.ndarray, ...]:
  """LM from the starts `u_c` [per_call, P] (the first `m` real), `block` steps per call of `fn`
  until `iters` steps or every real start stopped; the final state as numpy arrays."""
  z = np.zeros(len(u_c))
  state = (jnp.asarray(u_c), jnp.asarray(z + np.inf), jnp.asarray(z + 1e-3), jnp.asarray(z + np.inf),
           jnp.zeros(len(u_c), bool), jnp.zeros(len(u_c), bool), jnp.zeros(len(u_c), jnp.int32))
  done = 0
  while done < iters:
    k = min(block, iters - done)
    state = fn(state, *args, jnp.asarray(k, jnp.int32))
    done += k
    stopped = bool(np.all(np.asarray(state[5])[:m]))
    if bar is not None:
      bar.update(m * k + (m * (iters - done) if stopped else 0),
                 **{"lowest loss": float(np.min(np.asarray(state[1])[:m]))})
    if stopped:
      break
  return tuple(np.asarray(a) for a in state)


def solve(form: LawForm, u0: np.ndarray, x: Mapping[str, np.ndarray], y: np.ndarray,
          w: np.ndarray, *, loss: str = DEFAULT_LOSS, delta: float = DEFAULT_DELTA,
          iters: int = DEFAULT_ITERS, tol: float = DEFAULT_TOL,
          memory_elems: int = MEMORY_ELEMS, bar: Progress | None = None) -> Solved:
  """Runs LM from every row of u0 [S, P] on (x, y) with weights w [N] or per start [S, N].

  Problems run `layout(...)[0]` at a time through one jitted vmap; rows are padded with weight 0.
  `bar`, when given, advances by one per start and step budget used.
  """
  numeric.check_loss(loss)
  n, s = len(y), len(u0)
  w = np.asarray(w, np.float64)
  per_call, rows, steps = layout(n, s, memory_elems)
  pad = rows * steps - n
  shape = (steps, rows)
  xp = {k: np.concatenate([np.asarray(v, np.float64), np.ones(pad)]).reshape(shape)
        for k, v in x.items()}
  lyp = np.log(np.concatenate([np.asarray(y, np.float64), np.ones(pad)])).reshape(shape)
  shared = w.ndim == 1
  # Many steps per call on small problems; on large ones a few, so progress can be shown.
  block = iters if rows * steps * per_call <= 2 ** 16 else 4
  out = {k: [] for k in ("u", "f", "dec", "conv", "k")}
  with float64():
    fn = _runner(form, loss, shared)
    xj = {k: jnp.asarray(v) for k, v in xp.items()}
    lyj = jnp.asarray(lyp)
    wj = jnp.asarray(np.concatenate([w, np.zeros(pad)]).reshape(shape)) if shared else None
    for lo in range(0, s, per_call):
      u_c = np.asarray(u0[lo:lo + per_call], np.float64)
      m = len(u_c)
      idx = np.minimum(np.arange(per_call), m - 1)  # pad the last call to the same shape
      u_c = u_c[idx]
      if shared:
        w_c, floor = wj, np.full(per_call, 1e-12 * w.sum())
      else:
        wc = w[lo:lo + per_call][idx]
        floor = 1e-12 * wc.sum(axis=1)
        w_c = jnp.asarray(np.concatenate([wc, np.zeros((per_call, pad))], axis=1)
                          .reshape((per_call,) + shape))
      args = (xj, lyj, w_c, jnp.asarray(delta, jnp.float64), jnp.asarray(tol, jnp.float64),
              jnp.asarray(floor))
      u, f, _, dec, conv, _, kk = _iterate(fn, u_c, args, m, iters, block, bar)
      out["u"].append(u[:m])
      out["f"].append(f[:m])
      out["dec"].append(dec[:m])
      out["conv"].append(conv[:m])
      out["k"].append(kk[:m])
  f = np.concatenate(out["f"])
  return Solved(u=np.concatenate(out["u"]).reshape(s, -1),
                objective=np.where(np.isfinite(f), f, np.inf),
                decrement=np.concatenate(out["dec"]), converged=np.concatenate(out["conv"]),
                steps=np.concatenate(out["k"]))


# ----------------------------------------------------------------------------- data checks

def check_data(form: LawForm, x: Mapping[str, np.ndarray], y: np.ndarray,
               columns: Mapping[str, str] | None = None, target: str = "target",
               lines: np.ndarray | None = None, require_fit: bool = True) -> None:
  """Raises a one-line JaxscaleError for data a log-space fit cannot use.

  lines: the file line of every row [N], to name rows in messages (default: row indices).
  require_fit: also require enough rows and varying inputs (off for rows that are only predicted).
  """
  columns = columns or {}
  for name in form.inputs:
    col = columns.get(name, name)
    v = x[name]
    _check_positive(v, f"input column '{col}'", lines=lines)
    if require_fit and len(v) > 1 and np.all(v == v[0]):
      raise JaxscaleError(f"input column '{col}' is constant ({v[0]:g}) over {_rows(lines, len(v))}; "
                          f"a law needs it to vary: vary it in the data or choose a law without "
                          f"input {name}")
  zeros = bool(np.any(y[np.isfinite(y)] <= 0))  # a floor lifts zeros; it cannot make NaN or inf a value
  _check_positive(y, f"target column '{target}'", lines=lines,
                  hint="; drop those rows, or pass --floor F (analyze(floor=F)) to clip them up to F" if zeros
                  else "; drop those rows (e.g. --where), they hold no measurement")
  free = len(form.params)
  if require_fit and len(y) < free + 1:
    fixed = f" ({len(form.fixed)} fixed)" if form.fixed else ""
    given = f"{len(y)} point was" if len(y) == 1 else f"{len(y)} points were"
    raise JaxscaleError(f"law '{form.name}' has {free} free parameters{fixed} but only {given} "
                        f"given ({_rows(lines, len(y))}); supply at least {free + 1} points, fix "
                        f"parameters (--fix) or use a smaller law")


def _rows(lines: np.ndarray | None, n: int) -> str:
  """'lines 2, 5, 9' (file lines) or 'rows 0, 1' (indices) naming up to 5 of n rows."""
  label = ("row" if lines is None else "line") + ("s" if n != 1 else "")
  named = range(min(n, 5)) if lines is None else lines[:5]
  return f"{label} " + ", ".join(str(int(i)) for i in named) + (", ..." if n > 5 else "")


def _check_positive(v: np.ndarray, what: str, hint: str = "",
                    lines: np.ndarray | None = None) -> None:
  bad = ~np.isfinite(v) | (v <= 0)
  if np.any(bad):
    rows = np.flatnonzero(bad)
    label = ("lines" if lines is not None else "rows") if len(rows) > 1 else \
        ("line" if lines is not None else "row")
    named = rows if lines is None else np.asarray(lines)[rows]
    shown = ", ".join(str(int(i)) for i in named[:5]) + (", ..." if len(rows) > 5 else "")
    kinds = []
    if np.any(np.isnan(v)):
      kinds.append("NaN")
    if np.any(np.isinf(v)):
      kinds.append("infinite")
    if np.any(v[np.isfinite(v)] <= 0):
      kinds.append("non-positive")
    raise JaxscaleError(f"{what} has {len(rows)} {'/'.join(kinds)} value(s) ({label} {shown}) "
                        f"where a log is taken{hint}")


# ----------------------------------------------------------------------------- starts

def initial_grid(form: LawForm, x: Mapping[str, np.ndarray], y: np.ndarray,
                 max_starts: int = DEFAULT_MAX_STARTS, seed: int = 0) -> np.ndarray:
  """The product grid of every free parameter's initial values, float64 [S, P] (optimised space).

  When the product exceeds `max_starts`, a seeded random subset of it of that size is used.
  """
  axes = [p.initial_values(x, y) for p in form.params]
  total = int(np.prod([len(a) for a in axes]))
  if total <= max_starts:
    return np.array(list(itertools.product(*axes)), np.float64).reshape(total, len(axes))
  rng = np.random.default_rng(seed)
  flat = rng.choice(total, size=max_starts, replace=False)
  idx = np.unravel_index(flat, [len(a) for a in axes])
  return np.stack([a[i] for a, i in zip(axes, idx)], axis=1)


# ----------------------------------------------------------------------------- fit

@dataclasses.dataclass
class FitResult:
  """The best of a multi-start fit.

  u: best optimised vector, float64 [P] (free parameters); params: natural values by name (free,
  fixed and derived); objective: L(u); converged: the decrement test at u (module doc);
  r2_log, rmse_log: in log space over the fitted rows; n: rows; n_free: free parameters;
  n_starts / n_best_basin: starts run / phase-2 starts ending within 1e-6 (relative) of the
  best objective of that phase; steps: LM steps of the best start in its last phase; starts: a few diverse good
  end points, float64 [K, P], used to seed bootstrap refits; loss/delta: the objective.
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
  loss: str = DEFAULT_LOSS
  delta: float = DEFAULT_DELTA
  steps: int = 0
  n_free: int = 0

  def statistics(self) -> dict:
    return dict(n=self.n, n_free=self.n_free, dof=self.n - self.n_free, objective=self.objective,
                converged=self.converged, decrement=self.decrement, steps=self.steps,
                r2_log=self.r2_log, rmse_log=self.rmse_log, n_starts=self.n_starts,
                n_best_basin=self.n_best_basin)


def natural_params(form: LawForm, u: np.ndarray) -> dict[str, np.ndarray]:
  """Natural parameters (fixed and derived ones too) by name for u [..., P]; float64 [...]."""
  with float64():
    uj = jnp.asarray(u, jnp.float64)
    p = form.to_natural(uj)
    if form.derived is not None:
      p.update(form.derived(p))
    return {k: np.asarray(v, np.float64) for k, v in p.items()}


def subsample(n: int, size: int, seed: int) -> np.ndarray | None:
  """Sorted indices of a seeded random subsample of `size` of n rows, or None when n <= size."""
  if n <= size:
    return None
  return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def fit(form: LawForm | str, x: Mapping[str, np.ndarray], y: np.ndarray, *,
        weights: np.ndarray | None = None, loss: str = DEFAULT_LOSS,
        delta: float = DEFAULT_DELTA, max_starts: int = DEFAULT_MAX_STARTS,
        screen_iters: int = DEFAULT_SCREEN_ITERS, iters: int = DEFAULT_ITERS,
        tol: float = DEFAULT_TOL, screen_rows: int = DEFAULT_SCREEN_ROWS,
        refine: int = DEFAULT_REFINE, seed: int = 0, init: np.ndarray | None = None,
        columns: Mapping[str, str] | None = None, target: str = "target",
        lines: np.ndarray | None = None, progress: bool = False, desc: str = "fit") -> FitResult:
  """Fits `form` to y [N] at inputs x (name -> [N]) from a grid of starts; float64 throughout.

  The three phases are in the module doc. init: optional starts [S, P] in the optimised space
  (default: `initial_grid`). columns: input name -> column name and lines: file line per row,
  only to name things in error messages. progress: show a progress line for fits that take more
  than a few seconds.
  """
  form = forms_lib.get(form) if isinstance(form, str) else form
  numeric.check_loss(loss)
  x = {k: np.asarray(v, np.float64).reshape(-1) for k, v in x.items()}
  y = np.asarray(y, np.float64).reshape(-1)
  check_data(form, x, y, columns, target, lines)
  w = np.ones_like(y) if weights is None else np.asarray(weights, np.float64)
  u0 = initial_grid(form, x, y, max_starts, seed) if init is None else np.asarray(init, np.float64)
  kw = dict(loss=loss, delta=delta, tol=tol)
  sub = subsample(len(y), screen_rows, seed)
  xs, ys, ws = (x, y, w) if sub is None else ({k: v[sub] for k, v in x.items()}, y[sub], w[sub])
  keep = min(len(u0), max(64, len(u0) // 64))
  n_final = min(keep, refine) if sub is not None else 0
  with Progress(len(u0) * screen_iters + keep * iters + n_final * iters, desc=desc, unit="step",
                enabled=progress, delay_s=3.0) as bar:
    s1 = solve(form, u0, xs, ys, ws, iters=screen_iters, bar=bar, **kw)
    top = np.argsort(s1.objective, kind="stable")[:keep]
    s2 = solve(form, s1.u[top], xs, ys, ws, iters=iters, bar=bar, **kw)
    final = s2
    if sub is not None:
      ends = s2.u[_distinct(s2.u, s2.objective, n_final)]
      final = solve(form, ends, x, y, w, iters=iters, bar=bar, **kw)
  return _result(form, x, y, u0, final, s2, loss, delta, iters)


def _result(form, x, y, u0, final: Solved, pool: Solved, loss, delta, iters) -> FitResult:
  f = final.objective
  best = int(np.argmin(f))
  if not np.isfinite(f[best]):
    raise JaxscaleError(f"law '{form.name}' could not be evaluated at any start on this data; "
                        f"check the inputs' units and the target column")
  u_best = final.u[best]
  lp, ly = _log_predict(form, u_best, x), np.log(y)
  r = lp - ly
  starts = np.concatenate([final.u[np.argsort(f)], pool.u[np.argsort(pool.objective)]])
  res = FitResult(
      form=form, u=u_best, params={}, objective=float(f[best]),
      converged=bool(final.converged[best]), decrement=float(final.decrement[best]),
      r2_log=r2_log(ly, lp),
      rmse_log=float(np.sqrt(np.mean(r ** 2))), n=len(y), n_starts=len(u0),
      n_best_basin=_basin(pool.objective),
      starts=starts[_distinct(starts, np.arange(len(starts), dtype=float), 4, pad=True)],
      warnings=[], loss=loss, delta=float(delta), steps=int(final.steps[best]),
      n_free=len(form.params))
  res.params = {k: float(v) for k, v in natural_params(form, u_best).items()}
  res.warnings = diagnose(form, u_best, x, res, iters)
  return res


def r2_log(log_y: np.ndarray, log_pred: np.ndarray) -> float:
  """R² in log space: 1 − Σ(log y − log pred)² / Σ(log y − mean(log y))² over log_y, log_pred [n];
  NaN when log y is constant."""
  ly, lp = np.asarray(log_y, np.float64), np.asarray(log_pred, np.float64)
  ss_tot = float(np.sum((ly - np.mean(ly)) ** 2))
  return 1.0 - float(np.sum((ly - lp) ** 2)) / ss_tot if ss_tot > 0 else float("nan")


def _basin(f: np.ndarray) -> int:
  """How many of the (phase 2) end points lie within 1e-6 (relative) of their best objective."""
  best = np.min(f)
  return int(np.sum(f <= best + 1e-6 * abs(best) + 1e-12)) if np.isfinite(best) else 0


def _log_predict(form: LawForm, u: np.ndarray, x: Mapping[str, np.ndarray]) -> np.ndarray:
  with float64():
    return np.asarray(form.log_predict(jnp.asarray(u), {k: jnp.asarray(v) for k, v in x.items()}))


def _distinct(u: np.ndarray, f: np.ndarray, k: int, pad: bool = False) -> np.ndarray:
  """Indices of up to k finite end points, best first, each differing from the chosen ones by
  > 1e-3 somewhere (padded with the best when `pad`, so batches keep one shape)."""
  order = [i for i in np.argsort(f, kind="stable") if np.isfinite(f[i])] or [int(np.argmin(f))]
  chosen = [order[0]]
  for i in order[1:]:
    if len(chosen) >= k:
      break
    if all(np.max(np.abs(u[i] - u[j])) > 1e-3 for j in chosen):
      chosen.append(i)
  while pad and len(chosen) < k:
    chosen.append(order[0])
  return np.array(chosen)


@functools.lru_cache(maxsize=None)
def _gram_fn(form: LawForm):
  def gram(u, x, mask):
    jac = jax.jacfwd(lambda v: form.log_predict(v, x))(u) * mask[:, None]
    return jac.T @ jac
  return jax.jit(gram)


def gram(form: LawForm, u: np.ndarray, x: Mapping[str, np.ndarray], rows: int = 2 ** 16) -> np.ndarray:
  """J^T J [P, P] of the log-prediction's Jacobian at u [P] over all rows (chunks of `rows`)."""
  n = len(next(iter(x.values())))
  size = min(_bucket(n), rows)
  total = np.zeros((len(u), len(u)))
  with float64():
    fn = _gram_fn(form)
    for lo in range(0, n, size):
      m = min(size, n - lo)
      xc = {k: jnp.asarray(np.concatenate([np.asarray(v[lo:lo + m], np.float64),
                                           np.ones(size - m)])) for k, v in x.items()}
      mask = jnp.asarray(np.arange(size) < m, jnp.float64)
      total += np.asarray(fn(jnp.asarray(u), xc, mask))
  return total


def diagnose(form: LawForm, u: np.ndarray, x: Mapping[str, np.ndarray], result: FitResult,
             iters: int = DEFAULT_ITERS) -> list[str]:
  """Identifiability warnings: no convergence, flat directions, parameters at or past bounds."""
  warnings = []
  if not result.converged:
    warnings.append(f"the best start did not converge within {iters} steps (Gauss-Newton "
                    f"decrement {result.decrement:.2g}); the parameters may be inaccurate: raise "
                    f"--steps or --starts, or fix or bound parameters")
  a = gram(form, u, x)
  names = form.param_names
  norms = np.sqrt(np.maximum(np.diag(a), 0.0))
  dead = [n for n, c in zip(names, norms)
          if not np.isfinite(c) or c < 1e-6 * np.sqrt(result.n)]
  for n in dead:
    warnings.append(f"parameter {n} has no effect on the fit (at its bound or its term vanishes); "
                    f"it is not identifiable")
  live = [i for i, n in enumerate(names) if n not in dead]
  if len(live) > 1 and np.all(np.isfinite(a)):
    sub = a[np.ix_(live, live)] / np.outer(norms[live], norms[live])
    ev, vec = np.linalg.eigh(sub)
    s = np.sqrt(np.maximum(ev, 0.0))  # singular values of the column-normalised Jacobian
    if s[0] < 1e-6 * s[-1]:
      v = np.abs(vec[:, 0])
      involved = [names[live[i]] for i in np.argsort(-v)[:2]]
      warnings.append(f"flat direction in the fit (parameters {' and '.join(involved)} trade off; "
                      f"condition {s[-1] / max(s[0], 1e-300):.2g}); they are not identifiable")
  for p in form.params:
    v = result.params[p.name]
    if p.limits is not None:
      lo, hi = p.limits
      span = hi - lo if np.isfinite(hi - lo) else max(1.0, abs(v))
      if min(abs(v - lo), abs(hi - v)) <= 1e-6 * span:
        warnings.append(f"parameter {p.name} = {v:.6g} is at its bound [{lo:g}, {hi:g}]")
      continue
    lo, hi = p.bounds
    if not lo <= v <= hi:
      warnings.append(f"parameter {p.name} = {v:.4g} is outside its plausible range [{lo:g}, {hi:g}]")
  if result.n_best_basin == 1 and result.n_starts > 1:
    warnings.append(f"only 1 of the refined starts reached the best objective; the optimum may be "
                    f"fragile: raise --starts or --steps")
  return warnings

