"""Losses against float64 NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscale.train import losses


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _ce_ref(logits, labels, eps=0.0):
  logits = np.asarray(logits, np.float64)
  k = logits.shape[-1]
  q = np.eye(k)[labels] * (1 - eps) + eps / k
  return float(np.mean(-(q * _log_softmax(logits)).sum(-1)))


def _kd_ref(s, t, labels, alpha, temp):
  s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
  log_p, log_q = _log_softmax(t / temp), _log_softmax(s / temp)
  kl = (np.exp(log_p) * (log_p - log_q)).sum(-1)
  ce = -_log_softmax(s)[np.arange(len(labels)), labels]
  return float(np.mean((1 - alpha) * ce + alpha * temp ** 2 * kl))


@pytest.fixture
def batch():
  rng = np.random.default_rng(0)
  return (rng.normal(size=(6, 5)).astype(np.float32) * 3, rng.normal(size=(6, 5)).astype(np.float32) * 3,
          rng.integers(0, 5, size=6))


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_matches_reference(batch, eps):
  s, _, y = batch
  got = losses.cross_entropy(jnp.asarray(s), jnp.asarray(y), label_smoothing=eps)
  assert got.shape == () and got.dtype == jnp.float32
  np.testing.assert_allclose(float(got), _ce_ref(s, y, eps), rtol=1e-5)


@pytest.mark.parametrize("alpha,temp", [(0.0, 1.0), (0.5, 2.0), (1.0, 4.0), (0.3, 0.5)])
def test_kd_loss_matches_reference(batch, alpha, temp):
  s, t, y = batch
  got = losses.kd_loss(jnp.asarray(s), jnp.asarray(t), jnp.asarray(y), alpha, temp)
  assert got.shape == ()
  np.testing.assert_allclose(float(got), _kd_ref(s, t, y, alpha, temp), rtol=1e-5, atol=1e-6)


def test_kd_is_a_batch_mean_not_an_element_mean(batch):
  s, t, y = batch
  one = losses.kd_loss(jnp.asarray(s[:1]), jnp.asarray(t[:1]), jnp.asarray(y[:1]), 1.0, 2.0)
  ref = _kd_ref(s[:1], t[:1], y[:1], 1.0, 2.0)
  # An element mean would divide the KL sum over classes by K = 5.
  np.testing.assert_allclose(float(one), ref, rtol=1e-5)


def test_kd_gradient_vanishes_for_identical_teacher(batch):
  s, _, y = batch
  grad = jax.grad(lambda z: losses.kd_loss(z, z, jnp.asarray(y), 1.0, 3.0))(jnp.asarray(s))
  np.testing.assert_allclose(np.asarray(grad), 0.0, atol=1e-7)
  grad_ce = jax.grad(lambda z: losses.kd_loss(z, z, jnp.asarray(y), 0.5, 3.0))(jnp.asarray(s))
  assert np.abs(np.asarray(grad_ce)).max() > 1e-3


def test_masked_weights(batch):
  s, _, y = batch
  w = jnp.asarray([1, 1, 1, 0, 0, 0], jnp.float32)
  got = losses.cross_entropy(jnp.asarray(s), jnp.asarray(y), weights=w)
  np.testing.assert_allclose(float(got), _ce_ref(s[:3], y[:3]), rtol=1e-5)
