"""Shared helpers for the model tests: small random inputs and heads that are not all zeros."""

import jax
import numpy as np
import pytest
from flax import nnx

# Jitted calls: an eager forward pass compiles every op separately and is far slower on a CPU.
# Tests use the same class count and batch size where they can, so compilations are reused.
outputs = nnx.jit(lambda model, x: (model(x), model.features(x)))


def logits(model, x):
  return outputs(model, x)[0]


def features(model, x):
  return outputs(model, x)[1]


def images(batch: int, size: int, seed: int = 1) -> jax.Array:
  """float32 [batch, size, size, 3] uniform in [-1, 1]."""
  return jax.random.uniform(jax.random.key(seed), (batch, size, size, 3), minval=-1.0, maxval=1.0)


def randomize_head(model, seed: int = 2, scale: float = 0.2) -> None:
  """Replaces the (zero-initialised) head kernel by random values so logits carry signal."""
  k = model.head.kernel
  k[...] = scale * jax.random.normal(jax.random.key(seed), k.shape)


def rel_err(want, got) -> float:
  """Relative L2 error ||got - want|| / ||want|| in float64."""
  want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
  return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.fixture
def helpers():
  return type("Helpers", (), dict(
      images=staticmethod(images), randomize_head=staticmethod(randomize_head),
      rel_err=staticmethod(rel_err), outputs=staticmethod(outputs), logits=staticmethod(logits), features=staticmethod(features)))
