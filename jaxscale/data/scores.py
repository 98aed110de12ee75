"""Prototype difficulty scores of a split, and the files that keep them beside the data.

The self-supervised prototype metric of Sorscher et al. (2022, "Beyond neural scaling laws: beating
power law scaling via data pruning"): k-means on a pretrained backbone's embeddings; an example's
difficulty is its cosine distance to the nearest centroid (far from every prototype = hard).

Embeddings are L2-normalised, clustered with scikit-learn's k-means (Lloyd's algorithm, k-means++
seeding, one initialisation, ``random_state`` derived from the seed; scikit-learn is already a
dependency of the embedded digits, so it adds nothing, and it is a maintained implementation, not a
rewrite), and an example's score is ``1 - max_j cos(x, c_j)`` over the centroids ``c_j``.
The scores are a pure function of (embeddings, k, seed).

A scores file ``NAME.npy`` (float32 [N], the split's examples in source order) has a manifest
``NAME.json`` beside it: ``metric``, ``dataset``, ``split``, ``count``, ``backbone`` (its id, a
hash of its parameters), ``backbone_model``, ``k``, ``seed`` and ``scores_hash``; both are written
atomically, the manifest last, and a file whose manifest is missing or whose hash differs is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re

import numpy as np

from jaxscale.data.seeding import derive_seed
from jaxscale.errors import JaxscaleError
from jaxscale.fileio import atomic_write_bytes, atomic_write_text

METRICS = ("prototypes",)


def check_k(k: int, n: int) -> None:
  """Raises JaxscaleError unless 2 <= k <= n (n = the examples to cluster)."""
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
    raise JaxscaleError(f"k = {k!r} clusters is too few; use an integer k >= 2")
  if k > n:
    raise JaxscaleError(f"k = {k} clusters is larger than the split ({n} examples); use k <= {n}")


def normalize(x: np.ndarray) -> np.ndarray:
  """float64 rows of `x` [N, D] scaled to unit L2 norm (a zero row stays zero)."""
  x = np.asarray(x, np.float64)
  norm = np.linalg.norm(x, axis=1, keepdims=True)
  return x / np.where(norm > 0, norm, 1.0)


def kmeans(x: np.ndarray, k: int, seed: int, init: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(centroids float64 [k, D], labels int64 [N]) of k-means on `x` [N, D] (Lloyd's algorithm).

  `init` [k, D] starts from given centroids; otherwise k-means++ seeded by ``(seed, "prototypes")``.
  """
  from sklearn.cluster import KMeans
  x = np.asarray(x, np.float64)
  check_k(k, len(x))
  km = KMeans(n_clusters=int(k), init="k-means++" if init is None else np.asarray(init, np.float64),
              n_init=1, algorithm="lloyd", max_iter=300, tol=1e-6,
              random_state=derive_seed(seed, "prototypes"))
  km.fit(x)
  return km.cluster_centers_, km.labels_.astype(np.int64)


def nearest_cosine_distance(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
  """float64 [N]: ``1 - max_j cos(x_i, c_j)``, in [0, 2]."""
  cos = normalize(x) @ normalize(centroids).T
  return np.clip(1.0 - cos.max(axis=1), 0.0, 2.0)


def prototype_scores(embeddings: np.ndarray, k: int, seed: int) -> np.ndarray:
  """float32 [N] difficulty scores: cosine distance to the nearest of k centroids of the normalised
  embeddings (higher = harder)."""
  x = normalize(embeddings)
  centroids, _ = kmeans(x, k, seed)
  return nearest_cosine_distance(x, centroids).astype(np.float32)


def scores_hash(scores: np.ndarray) -> str:
  """16 hex characters identifying a scores array (its float32 little-endian bytes)."""
  return hashlib.sha256(np.asarray(scores, "<f4").tobytes()).hexdigest()[:16]


def file_name(dataset: str, split: str, metric: str, backbone: str, k: int, seed: int) -> str:
  """``<dataset>-<split>-<metric>-<backbone id>-k<k>-s<seed>.npy`` with path characters made safe."""
  safe = lambda t: re.sub(r"[^A-Za-z0-9_.-]+", "_", str(t))
  return f"{safe(dataset)}-{safe(split)}-{metric}-{safe(backbone)}-k{int(k)}-s{int(seed)}.npy"


def manifest_path(path: str) -> str:
  return os.fspath(path)[:-len(".npy")] + ".json" if os.fspath(path).endswith(".npy") else f"{path}.json"


def save(path: str, scores: np.ndarray, manifest: dict) -> dict:
  """Writes `scores` to `path` (.npy) and its manifest (with ``count`` and ``scores_hash``) beside it,
  each atomically, the manifest last; returns the manifest."""
  scores = np.asarray(scores, np.float32)
  buf = io.BytesIO()
  np.save(buf, scores)
  out = {**manifest, "count": int(scores.shape[0]), "scores_hash": scores_hash(scores)}
  atomic_write_bytes(os.fspath(path), buf.getvalue())
  atomic_write_text(manifest_path(path), json.dumps(out, indent=2, sort_keys=True))
  return out


def read_manifest(path: str) -> dict | None:
  """The manifest of scores file `path`, or None when there is none (not written, or interrupted)."""
  mpath = manifest_path(path)
  if not os.path.exists(mpath) or not os.path.exists(path):
    return None
  with open(mpath, encoding="utf-8") as f:
    return json.load(f)


def load(path: str) -> np.ndarray:
  """float32 [N] scores of `path`, checked against its manifest's hash."""
  manifest = read_manifest(path)
  if manifest is None:
    raise JaxscaleError(f"no difficulty scores at {path} (or no manifest beside them); compute them with "
                        "`jaxscale data score NAME --by prototypes --backbone RUN_DIR`")
  scores = np.load(os.fspath(path))
  if scores_hash(scores) != manifest.get("scores_hash"):
    raise JaxscaleError(f"the scores in {path} do not match their manifest's hash; delete both files and "
                        "compute them again")
  return scores
