"""Nested, class-balanced, seeded subsets of a split, and their manifest hash.

For one seed every example gets a fixed place in a single draw order: round r of the order holds
the r-th example (in a seeded per-class shuffle) of every class that has one, the classes in a
seeded random order within the round. The subset of size n is the first n examples of that order,
so subsets are nested (size a ⊂ size b for a < b) and per-class counts differ by at most one among
classes that still have examples left.

A **selection** sets the order within each class: ``random`` (the seeded shuffle),
``prototypes_hard`` (the highest difficulty score first: keep the examples farthest from their
prototype) or ``prototypes_easy`` (the lowest first), with the seeded shuffle breaking ties
(:mod:`jaxscale.data.scores`). The rounds and the class order within a round are the same rule for
every selection, so each is nested and class-balanced.
"""

from __future__ import annotations

import hashlib

import numpy as np

from jaxscale.config import SELECTIONS
from jaxscale.data.seeding import derive_seed
from jaxscale.errors import JaxscaleError



def check_selection(selection: str, scores: np.ndarray | None = None, n: int | None = None) -> None:
  """Raises JaxscaleError for an unknown selection, or a scored one without scores for all `n` examples."""
  if selection not in SELECTIONS:
    raise JaxscaleError(f"unknown subset selection {selection!r}; use one of {', '.join(SELECTIONS)}")
  if selection != "random":
    if scores is None:
      raise JaxscaleError(f"selection {selection!r} needs difficulty scores; compute them with "
                          "`jaxscale data score NAME --by prototypes --backbone RUN_DIR`")
    if n is not None and np.shape(scores) != (n,):
      raise JaxscaleError(f"the difficulty scores hold {np.size(scores)} values but the split has {n} "
                          "examples; score this split")
    if not np.all(np.isfinite(scores)):
      raise JaxscaleError("the difficulty scores hold a value that is not finite; compute them again")


def draw_order_keys(labels: np.ndarray, seed: int, selection: str = "random",
                    scores: np.ndarray | None = None) -> np.ndarray:
  """float64 [N] keys; sorting by them gives the draw order (round number + a tie-break in [0, 1)).

  `scores` (float [N], higher = harder) order each class for the prototype selections."""
  labels = np.asarray(labels)
  n = labels.shape[0]
  check_selection(selection, scores, n)
  _, dense = np.unique(labels, return_inverse=True)  # labels as 0 .. C-1
  dense = dense.astype(np.int16 if dense.max(initial=0) < 2**15 else np.int64)  # radix sort
  rng = np.random.default_rng(derive_seed(seed, "subset"))
  perm = rng.permutation(n)                     # random order within each class
  if selection != "random":                     # by score within each class; the shuffle breaks ties
    s = np.asarray(scores, np.float64)[perm]
    perm = perm[np.argsort(-s if selection == "prototypes_hard" else s, kind="stable")]
  by_class = perm[np.argsort(dense[perm], kind="stable")]
  counts = np.bincount(dense)
  first = np.repeat(np.cumsum(counts) - counts, counts)
  rank = np.empty(n, np.float64)
  rank[by_class] = np.arange(n) - first         # position of each example within its class
  return rank + rng.random(n)                   # random class order within each round


def nested_subset(labels: np.ndarray, size: int, seed: int, selection: str = "random",
                  scores: np.ndarray | None = None) -> np.ndarray:
  """int64 [size] sorted indices of a class-balanced subset of examples with `labels` (int [N]).

  Nested in `size` for a fixed `seed` and `selection`; a pure function of (labels, size, seed,
  selection, scores). `scores` (float [N], higher = harder) are needed by the prototype selections.
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
  check_selection(selection, scores, n)
  if size == n:
    return np.arange(n, dtype=np.int64)
  keys = draw_order_keys(labels, seed, selection, scores)
  chosen = np.argpartition(keys, size - 1)[:size]
  return np.sort(chosen).astype(np.int64)


def manifest_hash(indices: np.ndarray, selection: str = "random") -> str:
  """16 hex characters identifying a set of example indices (order-independent) and the selection
  that chose it (a "random" subset's hash is that of its indices alone)."""
  arr = np.sort(np.asarray(indices, dtype=np.int64)).astype("<i8")
  prefix = b"" if selection == "random" else f"selection={selection};".encode()
  return hashlib.sha256(prefix + arr.tobytes()).hexdigest()[:16]
