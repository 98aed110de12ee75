"""Fitting speed: jaxscale's vmapped Newton multi-start vs a scipy L-BFGS-B loop, and the bootstrap.

Fits the `chinchilla` law E = E + A/M^alpha + B/D^beta to synthetic points (1% log-noise) from
Hoffmann et al.'s grid of 4,500 starts, with the same objective (sum of Huber(delta=1e-3) of log
residuals) for both, and prints wall times, their ratio and both best objectives; then times
1,000 cluster-bootstrap refits. Goals: >= 20x faster after compilation with an equal or lower best
objective (relative 1e-6); 1,000 refits in <= 60 s on a 2-core CPU.

  python benchmarks/bench_fit.py [--points 250] [--boot 1000] [--scipy-starts 4500]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy import optimize

from jaxscale import laws
from jaxscale.laws import fit as fit_lib
from jaxscale.laws import uncertainty

TRUTH = dict(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)
DELTA = 1e-3


def make_data(n: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  x = {"M": np.exp(rng.uniform(np.log(1e7), np.log(1e10), n)),
       "D": np.exp(rng.uniform(np.log(1e8), np.log(1e11), n))}
  y = laws.predict("chinchilla", TRUTH, x) * np.exp(0.01 * rng.standard_normal(n))
  return x, y


def numpy_objective(u, log_m, log_d, log_y):
  """The same objective in numpy, with its gradient, for u = (log E, log A, alpha, log B, beta)."""
  e, a, alpha, b, beta = u
  t0 = np.exp(e)
  t1 = np.exp(a - alpha * log_m)
  t2 = np.exp(b - beta * log_d)
  pred = t0 + t1 + t2
  r = np.log(pred) - log_y
  ar = np.abs(r)
  inside = ar <= DELTA
  loss = np.where(inside, 0.5 * r * r, DELTA * (ar - 0.5 * DELTA)).sum()
  dr = np.where(inside, r, DELTA * np.sign(r)) / pred  # dL/dpred
  grad = np.array([(dr * t0).sum(), (dr * t1).sum(), -(dr * t1 * log_m).sum(),
                   (dr * t2).sum(), -(dr * t2 * log_d).sum()])
  return loss, grad


def run_scipy(starts, x, y):
  log_m, log_d, log_y = np.log(x["M"]), np.log(x["D"]), np.log(y)
  best, best_u = np.inf, None
  for u0 in starts:
    with np.errstate(all="ignore"):
      res = optimize.minimize(numpy_objective, u0, args=(log_m, log_d, log_y), jac=True,
                              method="L-BFGS-B")
    if np.isfinite(res.fun) and res.fun < best:
      best, best_u = float(res.fun), res.x
  return best, best_u


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--points", type=int, default=250)
  parser.add_argument("--boot", type=int, default=1000)
  parser.add_argument("--scipy-starts", type=int, default=4500,
                      help="starts for the scipy loop (all 4,500 by default)")
  args = parser.parse_args()
  x, y = make_data(args.points)
  form = laws.get("chinchilla")
  starts = fit_lib.initial_grid(form, x, y, max_starts=10 ** 6)
  print(f"chinchilla, {args.points} points, {len(starts)} starts; load average at start "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")

  t = time.perf_counter()
  fit_lib.fit(form, x, y, init=starts)
  t_first = time.perf_counter() - t
  t = time.perf_counter()
  res = fit_lib.fit(form, x, y, init=starts)
  t_jax = time.perf_counter() - t
  obj_jax = numpy_objective(res.u, np.log(x["M"]), np.log(x["D"]), np.log(y))[0]

  sub = starts[:args.scipy_starts]
  t = time.perf_counter()
  obj_scipy, _ = run_scipy(sub, x, y)
  t_scipy = time.perf_counter() - t
  if len(sub) < len(starts):
    t_scipy_all = t_scipy * len(starts) / len(sub)
    print(f"scipy ran {len(sub)} starts; its time is scaled to {len(starts)}")
  else:
    t_scipy_all = t_scipy

  print(f"jaxscale  first call (with compilation) {t_first:8.2f} s")
  print(f"jaxscale  after compilation             {t_jax:8.2f} s   best objective {obj_jax:.12g}")
  print(f"scipy L-BFGS-B loop                     {t_scipy_all:8.2f} s   best objective {obj_scipy:.12g}")
  rel = (obj_jax - obj_scipy) / abs(obj_scipy)
  print(f"speed-up {t_scipy_all / t_jax:.1f}x (goal >= 20x); objective jaxscale - scipy = "
        f"{rel:+.2e} relative (goal <= 1e-6)")
  print(f"jaxscale best basin: {res.n_best_basin} of {res.n_starts} starts; converged={res.converged}")

  t = time.perf_counter()
  boot = uncertainty.bootstrap(res, x, y, args.boot, seed=0, progress=False)
  t_boot = time.perf_counter() - t
  lo, hi = boot.ci("alpha")
  print(f"{args.boot} bootstrap refits {t_boot:8.2f} s (goal <= 60 s); alpha 95% CI "
        f"[{lo:.4f}, {hi:.4f}], truth {TRUTH['alpha']}")
  print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  main()
