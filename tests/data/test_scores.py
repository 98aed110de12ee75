"""Prototype difficulty scores: k-means against a reference, the distances, the stored files."""

import json

import numpy as np
import pytest
from scipy.cluster.vq import kmeans2

from jaxscale.data import scores
from jaxscale.errors import JaxscaleError


def _blobs(n_per=40, k=3, dim=5, spread=0.05, seed=0):
  """Points around k random unit directions (unit-normalised), with their blob labels."""
  rng = np.random.default_rng(seed)
  centres = scores.normalize(rng.normal(size=(k, dim)))
  labels = np.repeat(np.arange(k), n_per)
  x = centres[labels] + spread * rng.normal(size=(k * n_per, dim))
  return scores.normalize(x), labels


def test_kmeans_matches_scipy_from_the_same_start():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(120, 4))                # no clear clusters: Lloyd's path matters
  init = x[rng.choice(len(x), 5, replace=False)]
  ours, ours_labels = scores.kmeans(x, 5, seed=0, init=init)
  ref, ref_labels = kmeans2(x, init.copy(), iter=300, minit="matrix")
  np.testing.assert_array_equal(ours_labels, ref_labels)
  np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_kmeans_plus_plus_recovers_separated_blobs():
  x, truth = _blobs()
  _, labels = scores.kmeans(x, 3, seed=4)
  # the same partition up to the names of the clusters
  pairs = {(int(a), int(b)) for a, b in zip(truth, labels)}
  assert len(pairs) == 3 and len({a for a, _ in pairs}) == 3 and len({b for _, b in pairs}) == 3


def test_scores_are_cosine_distance_to_the_nearest_centroid():
  x, _ = _blobs(seed=2)
  s = scores.prototype_scores(x, 3, seed=0)
  centroids, _ = scores.kmeans(scores.normalize(x), 3, seed=0)
  c = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
  cos = (x @ c.T).max(axis=1)
  assert s.dtype == np.float32 and s.shape == (len(x),)
  np.testing.assert_allclose(s, 1 - cos, atol=1e-6)


def test_outliers_score_highest():
  x, _ = _blobs(n_per=30, spread=0.02, seed=3)
  far = scores.normalize(np.random.default_rng(9).normal(size=(3, x.shape[1])))  # away from every blob
  s = scores.prototype_scores(np.concatenate([x, far]), 3, seed=0)
  assert set(np.argsort(s)[-3:]) == {len(x), len(x) + 1, len(x) + 2}


def test_scores_are_deterministic_and_depend_on_the_seed():
  x = np.random.default_rng(5).normal(size=(200, 6))
  a, b = scores.prototype_scores(x, 7, seed=1), scores.prototype_scores(x, 7, seed=1)
  assert a.tobytes() == b.tobytes()
  assert scores.scores_hash(a) == scores.scores_hash(b)
  assert scores.scores_hash(a) != scores.scores_hash(scores.prototype_scores(x, 7, seed=2))


@pytest.mark.parametrize("k, match", [(1, "too few"), (0, "too few"), (11, "larger than the split")])
def test_bad_k(k, match):
  with pytest.raises(JaxscaleError, match=match):
    scores.prototype_scores(np.ones((10, 3)), k, seed=0)


def test_save_and_load_with_manifest(tmp_path):
  path = str(tmp_path / "sub" / "s.npy")
  values = np.linspace(0, 1, 17).astype(np.float32)
  manifest = scores.save(path, values, {"metric": "prototypes", "k": 4, "seed": 0, "backbone": "abc"})
  assert manifest["count"] == 17 and manifest["scores_hash"] == scores.scores_hash(values)
  assert json.loads((tmp_path / "sub" / "s.json").read_text()) == manifest
  assert scores.read_manifest(path) == manifest
  np.testing.assert_array_equal(scores.load(path), values)
  np.save(path, values[::-1].copy())             # the file no longer matches its manifest
  with pytest.raises(JaxscaleError, match="do not match their manifest"):
    scores.load(path)
  with pytest.raises(JaxscaleError, match="no difficulty scores"):
    scores.load(str(tmp_path / "missing.npy"))
  assert list(tmp_path.rglob("*.tmp")) == []


def test_file_name_is_safe():
  name = scores.file_name("jaxscale_glyphs/16px_1k", "train[:50%]", "prototypes", "ab12", 8, 3)
  assert "/" not in name and name.endswith("-k8-s3.npy") and "ab12" in name
