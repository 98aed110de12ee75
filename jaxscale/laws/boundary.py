"""The distillation boundary: roots of Delta_E(v) = E_a(v) - E_b(v) along one input.

With a = the plain arm and b = the distilled arm, Delta_E > 0 means distillation helps. Every root
in [lo, hi] is found by bracketing sign changes on a log grid of `num` points and refining each
bracket with Newton steps in t = log v (derivative by `jax.grad`), falling back to bisection when a
step leaves the bracket. Everything is vectorised over bootstrap resamples: parameters may be
arrays [B] and roots are found for all resamples in one batch.

The verdict says only what the evidence carries. With bootstrap resamples, the level-`level`
percentile band of Delta_E is taken at `BAND_POINTS` log-spaced points of the range:

* "crossing": the band lies above 0 somewhere and below 0 somewhere else (the sign change is
  established; the roots carry their CIs and the share of resamples that cross at all);
* "a_higher" / "a_lower": the band excludes 0 with one sign over the whole range (E(a) > E(b)
  everywhere, or E(a) < E(b) everywhere);
* "cannot_tell": the band contains 0 somewhere, so neither a crossing nor one arm being better
  throughout is established (the text says over what share of the range it does);
* without resamples: "fitted_crossing" or "fitted_no_crossing", about the fitted curves only.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxscale.errors import JaxscaleError
from jaxscale.laws import forms as forms_lib
from jaxscale.laws.forms import LawForm
from jaxscale.laws.numeric import float64
from jaxscale.laws.uncertainty import percentile_ci

DEFAULT_GRID = 512
NEWTON_ITERS = 60
BAND_POINTS = 64


def _delta(form: LawForm, pa, pb, name: str, at: Mapping[str, float], t):
  """Delta_E at v = exp(t); pa/pb map names to arrays [B, 1] (or scalars), t [B, G] -> [B, G]."""
  v = jnp.exp(t)
  x = {k: jnp.full_like(v, at[k]) for k in form.inputs if k != name}
  x[name] = v
  return form.fn(pa, x) - form.fn(pb, x)


def check_range(lo: float, hi: float, what: str = "boundary range") -> None:
  """Raises a one-line error unless 0 < lo < hi < inf (a boundary is searched on a log scale)."""
  if not (0 < lo < hi and np.isfinite(hi)):
    raise JaxscaleError(f"{what} must satisfy 0 < lo < hi < inf, got [{lo:g}, {hi:g}]; e.g. --boundary-range 250:4000")


def find_roots(law: str | LawForm, params_a: Mapping[str, np.ndarray],
               params_b: Mapping[str, np.ndarray], input_name: str, at: Mapping[str, float],
               lo: float, hi: float, num: int = DEFAULT_GRID) -> list[list[tuple[float, int]]]:
  """Roots of E_a - E_b along `input_name` in [lo, hi], other inputs fixed at `at`.

  params_a/params_b: natural parameters by name, scalars or float arrays [B] (B resamples).
  Returns, per resample, a list of (root value, slope sign of Delta_E in log v at the root).
  """
  form = forms_lib.get(law) if isinstance(law, str) else law
  name = form.resolve_input(input_name)
  at = {form.resolve_input(k): float(v) for k, v in at.items()}
  missing = [k for k in form.inputs if k != name and k not in at]
  if missing:
    raise JaxscaleError(f"the boundary along {name} needs values for {', '.join(missing)}: pass "
                        f"--at {','.join(f'{m}=VALUE' for m in missing)}")
  check_range(lo, hi)
  pa = {k: np.atleast_1d(np.asarray(v, np.float64)) for k, v in params_a.items()}
  pb = {k: np.atleast_1d(np.asarray(v, np.float64)) for k, v in params_b.items()}
  b = max(len(next(iter(pa.values()))), len(next(iter(pb.values()))))
  pa = {k: np.broadcast_to(v, (b,)) for k, v in pa.items()}
  pb = {k: np.broadcast_to(v, (b,)) for k, v in pb.items()}
  grid = np.linspace(np.log(lo), np.log(hi), num)
  with float64():
    ja = {k: jnp.asarray(v)[:, None] for k, v in pa.items()}
    jb = {k: jnp.asarray(v)[:, None] for k, v in pb.items()}
    d = np.asarray(_delta(form, ja, jb, name, at, jnp.broadcast_to(jnp.asarray(grid), (b, num))))
    s = np.sign(d)
    # A bracket is a pair of neighbours with opposite signs, or a grid point that is exactly 0.
    rows, cols = np.nonzero((s[:, :-1] * s[:, 1:] < 0) | ((s[:, :-1] == 0) & np.isfinite(d[:, :-1])))
    out: list[list[tuple[float, int]]] = [[] for _ in range(b)]
    if not len(rows):
      return out
    # Pad the brackets to a power of two (copies of the first) so compilations are shared.
    k = len(rows)
    idx = np.concatenate([np.arange(k), np.zeros((1 << (k - 1).bit_length()) - k, int)])
    sub_a = {n: jnp.asarray(v[rows[idx]])[:, None] for n, v in pa.items()}
    sub_b = {n: jnp.asarray(v[rows[idx]])[:, None] for n, v in pb.items()}
    t, slope = _refine_jit(form, name, tuple(sorted(at.items())), sub_a, sub_b,
                           jnp.asarray(grid[cols[idx]]), jnp.asarray(grid[cols[idx] + 1]))
    t, slope = np.asarray(t)[:k], np.asarray(slope)[:k]
  for r, tv, sl in zip(rows, t, slope):
    out[r].append((float(np.exp(tv)), int(np.sign(sl))))
  return out


def _refine(form, name, at_items, pa, pb, lo, hi):
  """Safeguarded Newton in t on brackets [lo, hi] (each [K]); returns (t [K], dDelta/dt [K])."""
  at = dict(at_items)
  f = lambda t: _delta(form, pa, pb, name, at, t[:, None])[:, 0]
  df = jax.grad(lambda t: jnp.sum(f(t)))  # each Delta depends only on its own t
  f_lo = f(lo)

  def body(_, carry):
    lo, hi, t = carry
    ft, dt = f(t), df(t)
    newton = t - ft / dt
    inside = jnp.isfinite(newton) & (newton > lo) & (newton < hi)
    # Keep the sign-change bracket up to date, then step.
    same_as_lo = jnp.sign(ft) == jnp.sign(f_lo)
    lo, hi = jnp.where(same_as_lo, t, lo), jnp.where(same_as_lo, hi, t)
    t_next = jnp.where(inside, newton, 0.5 * (lo + hi))
    t_next = jnp.where(ft == 0, t, t_next)
    return lo, hi, t_next

  _, _, t = jax.lax.fori_loop(0, NEWTON_ITERS, body, (lo, hi, 0.5 * (lo + hi)))
  return t, df(t)


_refine_jit = jax.jit(_refine, static_argnums=(0, 1, 2))


def delta_curve(law: str | LawForm, params_a: Mapping[str, np.ndarray],
                params_b: Mapping[str, np.ndarray], input_name: str, at: Mapping[str, float],
                v: np.ndarray) -> np.ndarray:
  """Delta_E = E_a - E_b at values v [G] of `input_name`: float64 [B, G] (B = 1 for scalars)."""
  form = forms_lib.get(law) if isinstance(law, str) else law
  pa = {k: np.atleast_1d(np.asarray(p, np.float64)) for k, p in params_a.items()}
  pb = {k: np.atleast_1d(np.asarray(p, np.float64)) for k, p in params_b.items()}
  b = max(len(next(iter(pa.values()))), len(next(iter(pb.values()))))
  t = np.broadcast_to(np.log(np.asarray(v, np.float64)), (b, len(v)))
  with float64():
    ja = {k: jnp.asarray(np.broadcast_to(p, (b,)))[:, None] for k, p in pa.items()}
    jb = {k: jnp.asarray(np.broadcast_to(p, (b,)))[:, None] for k, p in pb.items()}
    return np.asarray(_delta(form, ja, jb, input_name, at, jnp.asarray(t)))


def boundary(law: str | LawForm, params_a: Mapping[str, float], params_b: Mapping[str, float],
             input_name: str, at: Mapping[str, float], lo: float, hi: float, *,
             boot_a: Mapping[str, np.ndarray] | None = None,
             boot_b: Mapping[str, np.ndarray] | None = None, level: float = 0.95,
             groups: tuple[str, str] = ("a", "b"), num: int = DEFAULT_GRID,
             range_source: str = "given") -> dict:
  """The boundary object of fits.json (JSON-serialisable).

  {"input", "at", "range": [lo, hi], "range_source", "groups": [a, b], "delta": "E(a) - E(b)",
   "roots": [{"value", "ci_low", "ci_high", "slope", "ci_found"}], "sign_below": +1 | -1 | 0,
   "ends": {"low"|"high": {"at", "delta", "ci_low", "ci_high"}}, "verdict", "text",
   "n_boot", "boot_crossing_frac", "band_zero_frac"}; roots is [] when the fitted curves do not
  cross in [lo, hi]. "slope" is the sign of dDelta/dlog(v) at the root; "ci_found" the share of
  resamples with a root of the same slope; "boot_crossing_frac" the share of resamples with any
  root in range; "band_zero_frac" the share of the range where the band contains 0. Keys that
  need resamples are null without them. Verdicts: module doc.
  """
  form = forms_lib.get(law) if isinstance(law, str) else law
  name = form.resolve_input(input_name)
  at_c = {form.resolve_input(k): float(v) for k, v in at.items()}
  roots = find_roots(form, params_a, params_b, name, at_c, lo, hi, num)[0]
  with_boot = boot_a is not None and boot_b is not None
  boot_roots = find_roots(form, boot_a, boot_b, name, at_c, lo, hi, num) if with_boot else None
  entries = []
  for value, slope in roots:
    entry = {"value": value, "ci_low": None, "ci_high": None, "slope": slope, "ci_found": None}
    if boot_roots is not None:
      matched = []
      for rs in boot_roots:
        cands = [v for v, s in rs if s == slope]
        if cands:
          matched.append(min(cands, key=lambda v: abs(np.log(v / value))))
      ci = percentile_ci(np.array(matched), level) if matched else (float("nan"),) * 2
      entry.update(ci_low=_num(ci[0]), ci_high=_num(ci[1]),
                   ci_found=len(matched) / len(boot_roots))
    entries.append(entry)
  grid = np.geomspace(lo, hi, BAND_POINTS)
  mid = delta_curve(form, params_a, params_b, name, at_c, grid)[0]
  band = None
  if with_boot:
    d = delta_curve(form, boot_a, boot_b, name, at_c, grid)
    a = 100 * (1 - level) / 2
    band = (np.nanpercentile(d, a, axis=0), np.nanpercentile(d, 100 - a, axis=0))
  ends = {}
  for side, j in (("low", 0), ("high", -1)):
    ends[side] = {"at": float(grid[j]), "delta": float(mid[j]),
                  "ci_low": None if band is None else _num(band[0][j]),
                  "ci_high": None if band is None else _num(band[1][j])}
  out = {"input": name, "at": at_c, "range": [float(lo), float(hi)], "range_source": range_source,
         "groups": list(groups), "delta": f"E({groups[0]}) - E({groups[1]})", "roots": entries,
         "sign_below": int(np.sign(mid[0])), "ends": ends,
         "n_boot": len(boot_roots) if with_boot else 0,
         "boot_crossing_frac": float(np.mean([len(r) > 0 for r in boot_roots])) if with_boot else None,
         "band_zero_frac": None}
  out["verdict"], out["text"], out["band_zero_frac"] = _verdict(out, band, level)
  return out


def _verdict(b: dict, band, level: float) -> tuple[str, str, float | None]:
  """(verdict, one sentence, share of the range where the band contains 0); see the module doc."""
  a, c = b["groups"]
  delta = b["delta"]
  if band is None:
    if b["roots"]:
      where = ", ".join(f"{r['value']:.4g}" for r in b["roots"])
      return ("fitted_crossing", f"the fitted curves cross at {b['input']} = {where} (no bootstrap: "
              f"the uncertainty is unknown; pass --bootstrap N)", None)
    side = "above" if b["sign_below"] > 0 else "below"
    return ("fitted_no_crossing", f"the fitted curves do not cross in range ({delta} stays {side} "
            f"0 for the point estimates; no bootstrap, so this is not a verdict: pass --bootstrap N)",
            None)
  lo, hi = band
  pos, neg = lo > 0, hi < 0
  zero = float(np.mean(~pos & ~neg))
  pct = f"{level:.0%}"
  if pos.any() and neg.any():
    first = "above" if pos[np.flatnonzero(pos | neg)[0]] else "below"
    return ("crossing", f"crossing established: the {pct} band of {delta} is {first} 0 at one end "
            f"and on the other side of 0 further on; {b['boot_crossing_frac']:.0%} of resamples "
            f"cross in range", zero)
  if pos.all():
    return ("a_higher", f"E({a}) > E({c}) throughout the range: the {pct} band of {delta} is above 0 "
            f"everywhere", zero)
  if neg.all():
    return ("a_lower", f"E({a}) < E({c}) throughout the range: the {pct} band of {delta} is below 0 "
            f"everywhere", zero)
  known = ""
  if pos.any() or neg.any():
    sign = "above" if pos.any() else "below"
    known = f" (it is {sign} 0 over the rest)"
  return ("cannot_tell", f"cannot tell: the {pct} band of {delta} contains 0 over {zero:.0%} of the "
          f"range{known}; {b['boot_crossing_frac']:.0%} of resamples cross in range", zero)


def _num(v: float) -> float | None:
  return None if v is None or not np.isfinite(v) else float(v)
