"""Numeric helpers of the laws package: scoped float64 and the per-residual losses.

The losses act on log-residuals r = log f(x; u) - log y (elementwise, any shape) and are optax's:

* ``huber``:   rho(r) = r^2 / 2 if |r| <= delta else delta * (|r| - delta / 2)
               (`optax.losses.huber_loss`; Hoffmann et al. 2022 use delta = 1e-3);
* ``squared``: rho(r) = r^2 / 2 (`optax.losses.l2_loss`; least squares on log values).

For Gauss-Newton each loss also gives psi(r) = rho'(r) and the weight omega(r) = psi(r) / r of the
quadratic that majorises rho at r (1 for ``squared``; min(1, delta / |r|) for ``huber``, the
iteratively-reweighted least-squares weight), so J^T diag(w omega) J is the curvature of a
majoriser of the objective.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import jax
import jax.numpy as jnp
import optax

from jaxscale.errors import JaxscaleError

LOSSES = ("huber", "squared")


@contextlib.contextmanager
def float64() -> Iterator[None]:
  """Enables float64 inside the block only (jitted functions traced here are float64)."""
  with jax.enable_x64(True):
    yield


def check_loss(loss: str) -> str:
  """`loss` if it is a known loss name, else a one-line error."""
  if loss not in LOSSES:
    raise JaxscaleError(f"unknown loss '{loss}'; choose one of: {', '.join(LOSSES)}")
  return loss


def rho(loss: str, r: jax.Array, delta) -> jax.Array:
  """The loss of residuals r, elementwise (same shape as r)."""
  if loss == "squared":
    return optax.losses.l2_loss(r)
  return optax.losses.huber_loss(r, delta=delta)


def psi_omega(loss: str, r: jax.Array, delta) -> tuple[jax.Array, jax.Array]:
  """(rho'(r), rho'(r) / r) elementwise: the gradient and the majoriser's Gauss-Newton weight."""
  if loss == "squared":
    return r, jnp.ones_like(r)
  a = jnp.abs(r)
  return jnp.clip(r, -delta, delta), delta / jnp.maximum(a, delta)
