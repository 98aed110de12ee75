"""Parameter initialisers that are cheap to compile.

`jax.nn.initializers` draw every parameter with its own random program, so creating a model
eagerly compiles one threefry program per distinct parameter shape (about 0.1-0.5 s each on a
CPU), which dominated creating a tiny model. These initialisers draw from a flat vector whose
length is rounded up to a power of two, so a few compiled programs serve every shape of every
rung, then slice, reshape and scale it. The distributions are the usual ones (same mean and
variance); the values differ from `jax.nn.initializers` for the same key.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]

_MIN_BUCKET = 1024


def _bucket(n: int) -> int:
  return max(_MIN_BUCKET, 1 << (n - 1).bit_length())


@functools.partial(jax.jit, static_argnames=("size", "distribution"))
def _raw(key: jax.Array, size: int, distribution: str) -> jax.Array:
  """float32 [size]: standard normal, or uniform on [-1, 1)."""
  if distribution == "normal":
    return jax.random.normal(key, (size,), jnp.float32)
  return jax.random.uniform(key, (size,), jnp.float32, -1.0, 1.0)


@functools.partial(jax.jit, static_argnames=("shape", "dtype"))
def _finish(raw: jax.Array, scale: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
  n = math.prod(shape)
  return (raw[:n].reshape(shape) * scale).astype(dtype)


def draw(key: jax.Array, shape: Sequence[int], distribution: str, scale: float,
         dtype=jnp.float32) -> jax.Array:
  """`scale` x (standard normal | uniform[-1, 1)) samples of `shape` from `key`."""
  shape = tuple(int(d) for d in shape)
  raw = _raw(key, _bucket(max(1, math.prod(shape))), distribution)
  return _finish(raw, jnp.float32(scale), shape, jnp.dtype(dtype))


def _fans(shape: Sequence[int]) -> tuple[int, int]:
  """(fan_in, fan_out) of a dense [in, out] or conv [..., in, out] kernel."""
  if len(shape) < 2:
    return int(shape[0]), int(shape[0])
  receptive = math.prod(shape[:-2])
  return int(shape[-2]) * receptive, int(shape[-1]) * receptive


def variance_scaling(scale: float, mode: str, distribution: str) -> Initializer:
  """Like `jax.nn.initializers.variance_scaling` with an untruncated "normal" or "uniform".

  Variance = scale / fan, fan = fan_in | fan_out | (fan_in + fan_out) / 2 for `mode` "fan_in" |
  "fan_out" | "fan_avg".
  """
  def init(key, shape, dtype=jnp.float32):
    fan_in, fan_out = _fans(shape)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    std = math.sqrt(scale / fan)
    if distribution == "normal":
      return draw(key, shape, "normal", std, dtype)
    return draw(key, shape, "uniform", std * math.sqrt(3.0), dtype)
  return init


def normal(stddev: float) -> Initializer:
  """Zero-mean normal with standard deviation `stddev`."""
  return lambda key, shape, dtype=jnp.float32: draw(key, shape, "normal", stddev, dtype)


he_normal = variance_scaling(2.0, "fan_in", "normal")
lecun_normal = variance_scaling(1.0, "fan_in", "normal")
xavier_uniform = variance_scaling(1.0, "fan_avg", "uniform")
