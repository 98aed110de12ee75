"""Synthetic data for the laws tests, offered as the `synth` fixture."""

import types

import numpy as np
import pytest

from jaxscale import laws

TRANSFER_TRUTH = dict(E_inf=0.05, A=3.0, alpha=0.35, B=20.0, beta=0.3, C=2.0, gamma=0.4)
MS = (1e5, 4e5, 1.6e6)
DPS = (1e3, 3e3, 1e4, 3e4)
DFS = (100.0, 300.0, 1000.0)


def transfer_grid(seeds: int = 2) -> dict[str, np.ndarray]:
  """The study-sized grid: 3 M x 4 Dp x 3 Df x `seeds` rows; inputs float64 [N]."""
  g = np.array([(dp, m, df) for dp in DPS for m in MS for df in DFS for _ in range(seeds)], float)
  return {"Dp": g[:, 0], "M": g[:, 1], "Df": g[:, 2]}


def noisy(law: str, params: dict, x: dict, rng: np.random.Generator, sigma: float = 0.01):
  """law(params) at x times exp(sigma * N(0, 1)): sigma log-noise; float64 [N]."""
  mu = laws.predict(law, params, x)
  return mu * np.exp(sigma * rng.standard_normal(mu.shape))


@pytest.fixture
def synth():
  """The helpers above as one namespace."""
  return types.SimpleNamespace(TRANSFER_TRUTH=dict(TRANSFER_TRUTH), transfer_grid=transfer_grid,
                               noisy=noisy)
