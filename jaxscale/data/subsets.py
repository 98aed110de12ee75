"""Nested, class-balanced, seeded subsets of a split, and their manifest hash.

For one seed every example gets a fixed place in a single draw order: round r of the order holds
the r-th example (in a seeded per-class shuffle) of every class that has one, the classes in a
seeded random order within the round. The subset of size n is the first n examples of that order,
so subsets are nested (size a ⊂ size b for a < b) and per-class counts differ by at most one among
classes that still have examples left.
"""

from __future__ import annotations

import hashlib

import numpy as np

from jaxscale.data.seeding import derive_seed
from jaxscale.errors import JaxscaleError


def draw_order_keys(labels: np.ndarray, seed: int) -> np.ndarray:
  """float64 [N] keys; sorting by them gives the draw order (round number + a tie-break in [0, 1))."""
  labels = np.asarray(labels)
  n = labels.shape[0]
  _, dense = np.unique(labels, return_inverse=True)  # labels as 0 .. C-1
  dense = dense.astype(np.int16 if dense.max(initial=0) < 2**15 else np.int64)  # radix sort
  rng = np.random.default_rng(derive_seed(seed, "subset"))
  perm = rng.permutation(n)                     # random order within each class
  by_class = perm[np.argsort(dense[perm], kind="stable")]
  counts = np.bincount(dense)
  first = np.repeat(np.cumsum(counts) - counts, counts)
  rank = np.empty(n, np.float64)
  rank[by_class] = np.arange(n) - first         # position of each example within its class
  return rank + rng.random(n)                   # random class order within each round


def nested_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
  """int64 [size] sorted indices of a class-balanced subset of examples with `labels` (int [N]).

  Nested in `size` for a fixed `seed`; a pure function of (labels, size, seed).
  """
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
  n = labels.shape[0]
  n_classes = np.unique(labels).size if n else 0
  if size > n:
    raise JaxscaleError(f"subset size {size} is larger than the split ({n} examples); use a size <= {n}")
  if size < n_classes:
    raise JaxscaleError(f"subset size {size} is smaller than the number of classes ({n_classes}); "
                        f"use a size >= {n_classes}")
  if size == n:
    return np.arange(n, dtype=np.int64)
  keys = draw_order_keys(labels, seed)
  chosen = np.argpartition(keys, size - 1)[:size]
  return np.sort(chosen).astype(np.int64)


def manifest_hash(indices: np.ndarray) -> str:
  """16 hex characters identifying a set of example indices (order-independent)."""
  arr = np.sort(np.asarray(indices, dtype=np.int64)).astype("<i8")
  return hashlib.sha256(arr.tobytes()).hexdigest()[:16]
