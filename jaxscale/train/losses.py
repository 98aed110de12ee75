"""Classification and knowledge-distillation losses (batch means, float32).

Every loss averages over the batch (the leading axis), never over all elements, and returns a
float32 scalar. An optional ``weights`` [B] (e.g. a padding mask) turns the mean into a weighted
mean ``sum(w * l) / max(sum(w), 1)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _batch_mean(per_example: jax.Array, weights: jax.Array | None) -> jax.Array:
  if weights is None:
    return jnp.mean(per_example)
  weights = weights.astype(jnp.float32)
  return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def cross_entropy_per_example(logits: jax.Array, labels: jax.Array,
                              label_smoothing: float = 0.0) -> jax.Array:
  """``-sum_k q_k log softmax(logits)_k`` with ``q = (1 - eps) onehot(y) + eps / K``.

  Args:
    logits: float [B, K].
    labels: int [B] class indices in ``[0, K)``.
    label_smoothing: eps in [0, 1).

  Returns:
    float32 [B].
  """
  logits = logits.astype(jnp.float32)
  num_classes = logits.shape[-1]
  log_p = jax.nn.log_softmax(logits, axis=-1)
  targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  if label_smoothing:
    targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
  return -jnp.sum(targets * log_p, axis=-1)


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0,
                  weights: jax.Array | None = None) -> jax.Array:
  """Mean cross-entropy over the batch; see :func:`cross_entropy_per_example`. Scalar float32."""
  return _batch_mean(cross_entropy_per_example(logits, labels, label_smoothing), weights)


def kl_divergence_per_example(teacher_logits: jax.Array, student_logits: jax.Array,
                              temperature: float = 1.0) -> jax.Array:
  """``KL(softmax(t/T) || softmax(s/T)) = sum_k p_k (log p_k - log q_k)``; float32 [B].

  Args:
    teacher_logits: float [B, K]; treated as a constant (no gradient flows into it).
    student_logits: float [B, K].
    temperature: T > 0.
  """
  t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32)) / temperature
  s = student_logits.astype(jnp.float32) / temperature
  log_p = jax.nn.log_softmax(t, axis=-1)
  log_q = jax.nn.log_softmax(s, axis=-1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def kd_loss(student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array,
            alpha: float, temperature: float, label_smoothing: float = 0.0,
            weights: jax.Array | None = None) -> jax.Array:
  """Knowledge distillation (Hinton et al., 2015), averaged over the batch.

  ``(1 - alpha) * CE(y, s) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))``. The ``T^2`` factor
  keeps the soft-target gradients on the scale of the hard-label ones as T changes.

  Args:
    student_logits: float [B, K].
    teacher_logits: float [B, K] (no gradient flows into them).
    labels: int [B].
    alpha: weight of the KD term in [0, 1]; 0 is plain cross-entropy.
    temperature: T > 0.

  Returns:
    Scalar float32.
  """
  ce = cross_entropy_per_example(student_logits, labels, label_smoothing)
  kl = kl_divergence_per_example(teacher_logits, student_logits, temperature)
  per_example = (1.0 - alpha) * ce + alpha * (temperature ** 2) * kl
  return _batch_mean(per_example, weights)
