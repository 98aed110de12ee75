"""Bootstrap uncertainty: refit on resampled data, vmapped over resamples; percentile CIs.

A resample draws clusters with replacement (by default a cluster is the set of records sharing one
configuration, i.e. the same values of every input, such as the seeds of one cell) and gives each
record the number of times its cluster was drawn as its weight in the fit's objective (Huber or
squared). Weights keep every resample the same shape: the B resamples x K starts (the few diverse
end points of the full fit) are B * K weighted problems, refitted by `fit.solve` in chunks through
one `jit(vmap(...))` over problems. Fixed parameters stay fixed in every refit (the form carries
them), so they add no spread.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import numpy as np

from jaxscale.laws import fit as fit_lib
from jaxscale.laws.fit import FitResult
from jaxscale.progress import Progress

DEFAULT_ITERS = 40
DEFAULT_LEVEL = 0.95


def cluster_ids(x: Mapping[str, np.ndarray]) -> np.ndarray:
  """Cluster index of every record: records with equal values of all inputs share one; int [N]."""
  cols = np.stack([np.asarray(v, np.float64) for v in x.values()], axis=1)
  _, ids = np.unique(cols, axis=0, return_inverse=True)
  return ids.reshape(-1).astype(np.int64)


def resample_weights(ids: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
  """Weights float64 [n_boot, N]: how often each record's cluster was drawn in each resample."""
  rng = np.random.default_rng(seed)
  n_clusters = int(ids.max()) + 1
  draws = rng.integers(0, n_clusters, size=(n_boot, n_clusters))
  counts = np.stack([np.bincount(d, minlength=n_clusters) for d in draws])
  return counts[:, ids].astype(np.float64)


def percentile_ci(samples: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
  """Percentile interval of the finite samples [B]; (nan, nan) when there are none."""
  s = np.asarray(samples, np.float64)
  s = s[np.isfinite(s)]
  if not len(s):
    return float("nan"), float("nan")
  a = (1.0 - level) / 2.0
  lo, hi = np.quantile(s, [a, 1.0 - a])
  return float(lo), float(hi)


@dataclasses.dataclass
class Bootstrap:
  """Refits on resamples. u: float64 [B, P]; params: name -> float64 [B] (incl. derived)."""
  u: np.ndarray
  params: dict[str, np.ndarray]
  objective: np.ndarray

  def ci(self, name: str, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    return percentile_ci(self.params[name], level)

  def derived(self, fn: Callable[[dict[str, float]], float], level: float = DEFAULT_LEVEL):
    """Samples [B] and the percentile CI of any quantity fn(params by name)."""
    b = len(self.u)
    vals = np.array([fn({k: float(v[i]) for k, v in self.params.items()}) for i in range(b)])
    return vals, percentile_ci(vals, level)


def bootstrap(result: FitResult, x: Mapping[str, np.ndarray], y: np.ndarray, n_boot: int, *,
              seed: int = 0, delta: float | None = None, iters: int = DEFAULT_ITERS,
              clusters: np.ndarray | None = None, progress: bool = True,
              desc: str = "bootstrap") -> Bootstrap:
  """Refits `result`'s law on `n_boot` cluster resamples of (x, y), each from result.starts.

  The objective (loss, delta) is the fit's unless `delta` is given.
  clusters: int [N] cluster ids (default `cluster_ids(x)`; pass np.arange(N) to resample records).
  """
  form = result.form
  x = {k: np.asarray(v, np.float64).reshape(-1) for k, v in x.items()}
  y = np.asarray(y, np.float64).reshape(-1)
  ids = cluster_ids(x) if clusters is None else np.asarray(clusters)
  weights = resample_weights(ids, n_boot, seed)
  starts = np.asarray(result.starts, np.float64)
  k = len(starts)
  u0 = np.tile(starts, (n_boot, 1))              # [B * K, P], resample-major
  w = np.repeat(weights, k, axis=0)              # [B * K, N]
  with Progress(n_boot * k * iters, desc=desc, unit="step", enabled=progress, delay_s=3.0) as bar:
    s = fit_lib.solve(form, u0, x, y, w, loss=result.loss,
                      delta=result.delta if delta is None else delta, iters=iters, bar=bar)
  u, f = s.u.reshape(n_boot, k, -1), s.objective.reshape(n_boot, k)
  best = np.argmin(f, axis=1)
  us, fs = [u[np.arange(n_boot), best]], [f[np.arange(n_boot), best]]
  u = np.concatenate(us)
  return Bootstrap(u=u, params=fit_lib.natural_params(form, u), objective=np.concatenate(fs))
