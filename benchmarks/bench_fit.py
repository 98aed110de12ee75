"""Fitting at scale: jaxscale's Levenberg-Marquardt multi-start vs a scipy L-BFGS-B loop.

Table (default): for rows in {1e3, 1e4, 1e5, 1e6} x laws {power, transfer_additive}, synthetic
data (2% log-noise, log-uniform inputs), the objective of `jaxscale fit` (Huber, delta 1e-3, on
log residuals):

* jaxscale: `fit.fit` with its defaults (up to 4,096 starts, screened on 512 rows), run in a
  fresh process: wall time (compilation included, as a user meets it) and the whole process's
  peak resident memory;
* same starts: K starts drawn from the law's grid; jaxscale `fit.fit(init=starts)` and scipy's
  L-BFGS-B from each of the K starts on the same objective (value and gradient by a jitted
  float64 JAX function over all rows), in one process; both best objectives and scipy's time.

Goals on 2 cores: 1e6 rows of transfer_additive in < 60 s and < 2 GB peak; jaxscale's objective
never worse than scipy's from the same starts (relative 1e-9).

  python benchmarks/bench_fit.py [--rows 1e3,1e4,1e5,1e6] [--laws power,transfer_additive]
  python benchmarks/bench_fit.py --small   # the chinchilla speed-up and bootstrap benchmark
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from jaxscale import laws
from jaxscale.laws import fit as fit_lib
from jaxscale.laws import numeric
from jaxscale.laws import uncertainty

TRUTH = {"power": dict(E_inf=0.05, A=2.0, alpha=0.4),
         "transfer_additive": dict(E_inf=0.05, A=3.0, alpha=0.35, B=20.0, beta=0.3, C=2.0,
                                   gamma=0.4),
         "chinchilla": dict(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)}
DELTA = 1e-3
# Starts for the same-starts comparison, by rows (scipy's time grows with rows x starts).
SAME_STARTS = {1_000: 32, 10_000: 8, 100_000: 4, 1_000_000: 2}


def make_data(law: str, n: int, seed: int = 0, sigma: float = 0.02):
  rng = np.random.default_rng(seed)
  u = lambda lo, hi: np.exp(rng.uniform(np.log(lo), np.log(hi), n))
  if law == "power":
    x = {"x": u(10, 1e6)}
  elif law == "chinchilla":
    x = {"M": u(1e7, 1e10), "D": u(1e8, 1e11)}
  else:
    x = {"Dp": u(1e3, 1e5), "M": u(1e5, 1e7), "Df": u(100, 3000)}
  y = laws.predict(law, TRUTH[law], x) * np.exp(sigma * rng.standard_normal(n))
  return x, y


def peak_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB


def scipy_multistart(form, starts, x, y):
  """Best objective of L-BFGS-B from each start, on the fit's objective over all rows."""
  with numeric.float64():
    xj = {k: jnp.asarray(v) for k, v in x.items()}
    ly = jnp.log(jnp.asarray(y))

    @jax.jit
    def vg(u):
      objective = lambda v: jnp.sum(numeric.rho("huber", form.log_predict(v, xj) - ly, DELTA))
      return jax.value_and_grad(objective)(u)

    def fun(u):
      f, g = vg(jnp.asarray(u))
      f, g = float(f), np.asarray(g, np.float64)
      return (f, g) if np.isfinite(f) and np.all(np.isfinite(g)) else (1e300, np.zeros_like(u))

    best = np.inf
    for u0 in starts:
      res = optimize.minimize(fun, u0, jac=True, method="L-BFGS-B")
      if np.isfinite(res.fun) and res.fun < best:
        best = float(res.fun)
    return best


def child_default(law: str, n: int) -> dict:
  x, y = make_data(law, n)
  t = time.perf_counter()
  res = fit_lib.fit(law, x, y, progress=True)
  return {"wall_s": time.perf_counter() - t, "peak_gb": peak_gb(), "objective": res.objective,
          "converged": res.converged, "n_starts": res.n_starts}


def child_same(law: str, n: int) -> dict:
  x, y = make_data(law, n)
  form = laws.get(law)
  grid = fit_lib.initial_grid(form, x, y, max_starts=10 ** 6)
  k = SAME_STARTS.get(n, 4)
  starts = grid[np.random.default_rng(1).choice(len(grid), size=min(k, len(grid)), replace=False)]
  t = time.perf_counter()
  res = fit_lib.fit(form, x, y, init=starts)
  t_jax = time.perf_counter() - t
  t = time.perf_counter()
  best = scipy_multistart(form, starts, x, y)
  return {"k": len(starts), "jax_s": t_jax, "jax_obj": res.objective, "scipy_s": time.perf_counter() - t,
          "scipy_obj": best}


def run_child(kind: str, law: str, n: int) -> dict:
  cmd = [sys.executable, __file__, "--child", kind, "--laws", law, "--rows", str(n)]
  out = subprocess.run(cmd, capture_output=True, text=True)
  if out.returncode != 0:
    return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
  return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[int], law_names: list[str]) -> None:
  print(f"load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
        f"jax {jax.__version__}")
  head = (f"{'law':<18} {'rows':>9} | {'jaxscale s':>10} {'peak GB':>8} {'conv':>5} | "
          f"{'K':>3} {'jax(K) s':>8} {'scipy(K) s':>10} {'jax objective':>16} {'scipy objective':>16} "
          f"{'rel diff':>9}")
  print(head)
  print("-" * len(head))
  for law in law_names:
    for n in rows:
      d = run_child("default", law, n)
      s = run_child("same", law, n)
      if "error" in d or "error" in s:
        print(f"{law:<18} {n:>9} | error: {d.get('error') or s.get('error')}")
        continue
      rel = (s["jax_obj"] - s["scipy_obj"]) / abs(s["scipy_obj"])
      print(f"{law:<18} {n:>9} | {d['wall_s']:>10.1f} {d['peak_gb']:>8.2f} {str(d['converged']):>5} | "
            f"{s['k']:>3} {s['jax_s']:>8.1f} {s['scipy_s']:>10.1f} {s['jax_obj']:>16.10g} "
            f"{s['scipy_obj']:>16.10g} {rel:>+9.1e}", flush=True)
  print(f"load average at end {os.getloadavg()[0]:.2f}")
  print("rel diff = (jaxscale - scipy) / scipy on the same K starts; <= 0 means jaxscale is as "
        "good or better")


def small(points: int, boot: int) -> None:
  """Chinchilla on a small table: jaxscale vs scipy over the full 4,500-start grid, and a bootstrap."""
  x, y = make_data("chinchilla", points, sigma=0.01)
  form = laws.get("chinchilla")
  starts = fit_lib.initial_grid(form, x, y, max_starts=10 ** 6)
  fit_lib.fit(form, x, y, init=starts)
  t = time.perf_counter()
  res = fit_lib.fit(form, x, y, init=starts)
  t_jax = time.perf_counter() - t
  t = time.perf_counter()
  best = scipy_multistart(form, starts, x, y)
  t_scipy = time.perf_counter() - t
  print(f"chinchilla, {points} points, {len(starts)} starts: jaxscale {t_jax:.2f} s (after "
        f"compilation), objective {res.objective:.12g}; scipy {t_scipy:.2f} s, objective {best:.12g}")
  t = time.perf_counter()
  b = uncertainty.bootstrap(res, x, y, boot, seed=0, progress=False)
  print(f"{boot} bootstrap refits {time.perf_counter() - t:.2f} s; alpha 95% CI "
        f"[{b.ci('alpha')[0]:.4f}, {b.ci('alpha')[1]:.4f}], truth {TRUTH['chinchilla']['alpha']}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", default="1e3,1e4,1e5,1e6")
  parser.add_argument("--laws", default="power,transfer_additive")
  parser.add_argument("--small", action="store_true")
  parser.add_argument("--points", type=int, default=250)
  parser.add_argument("--boot", type=int, default=1000)
  parser.add_argument("--child", choices=("default", "same"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  rows = [int(float(r)) for r in args.rows.split(",")]
  law_names = args.laws.split(",")
  if args.child:
    fn = child_default if args.child == "default" else child_same
    print(json.dumps(fn(law_names[0], rows[0])))
  elif args.small:
    small(args.points, args.boot)
  else:
    table(rows, law_names)


if __name__ == "__main__":
  main()
