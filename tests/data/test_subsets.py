"""Nested, class-balanced, seeded subsets and their manifest hash."""

import subprocess
import sys

import numpy as np
import pytest

from jaxscale.data.subsets import manifest_hash, nested_subset
from jaxscale.errors import JaxscaleError


def _labels(n=5000, classes=10, seed=0):
  return np.random.default_rng(seed).integers(0, classes, n)


def test_subsets_are_nested_sorted_and_unique():
  labels = _labels()
  prev = set()
  for size in (10, 11, 57, 500, 1234, 4999):
    idx = nested_subset(labels, size, seed=3)
    assert idx.dtype == np.int64 and len(idx) == size == len(set(idx))
    assert np.all(np.diff(idx) > 0)
    assert prev <= set(idx)
    prev = set(idx)


def test_subsets_are_class_balanced():
  labels = _labels(classes=13)
  for size in (13, 100, 777):
    counts = np.bincount(labels[nested_subset(labels, size, seed=0)], minlength=13)
    assert counts.max() - counts.min() <= 1


def test_balance_where_classes_have_enough_examples():
  labels = np.concatenate([np.zeros(5, int), np.ones(500, int), np.full(500, 2)])
  counts = np.bincount(labels[nested_subset(labels, 300, seed=1)])
  assert counts[0] == 5 and abs(counts[1] - counts[2]) <= 1


def test_seed_changes_the_subset_and_same_seed_repeats():
  labels = _labels()
  a, b = nested_subset(labels, 200, 0), nested_subset(labels, 200, 0)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, nested_subset(labels, 200, 1))


def test_same_subset_in_another_process():
  code = ("import numpy as np; from jaxscale.data.subsets import nested_subset, manifest_hash\n"
          "labels = np.random.default_rng(0).integers(0, 10, 5000)\n"
          "print(manifest_hash(nested_subset(labels, 321, 7)))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == manifest_hash(nested_subset(_labels(), 321, 7))


def test_full_size_is_everything():
  labels = _labels(100)
  np.testing.assert_array_equal(nested_subset(labels, 100, 0), np.arange(100))


def test_size_errors():
  labels = _labels(100, classes=10)
  with pytest.raises(JaxscaleError, match="larger than the split"):
    nested_subset(labels, 101, 0)
  with pytest.raises(JaxscaleError, match="smaller than the number of classes"):
    nested_subset(labels, 9, 0)


def test_manifest_hash():
  h = manifest_hash(np.array([3, 1, 2]))
  assert len(h) == 16 and int(h, 16) >= 0
  assert h == manifest_hash([1, 2, 3]) and h != manifest_hash([1, 2, 4])


# ----------------------------------------------------------------------------- selections

PROTOTYPE_RULES = ("prototypes_hard", "prototypes_easy")


def _scores(n=5000, seed=0):
  return np.random.default_rng(seed + 100).random(n).astype(np.float32)


@pytest.mark.parametrize("selection", PROTOTYPE_RULES)
def test_prototype_subsets_are_nested_and_class_balanced(selection):
  labels, s = _labels(classes=13), _scores()
  prev = set()
  for size in (13, 14, 100, 777, 3000):
    idx = nested_subset(labels, size, 2, selection, s)
    assert len(idx) == size == len(set(idx)) and np.all(np.diff(idx) > 0)
    counts = np.bincount(labels[idx], minlength=13)
    assert counts.max() - counts.min() <= 1
    assert prev <= set(idx)
    prev = set(idx)


@pytest.mark.parametrize("selection", PROTOTYPE_RULES)
def test_prototype_rules_keep_the_extremes_of_each_class(selection):
  labels, s = _labels(classes=10), _scores()
  idx = nested_subset(labels, 10 * 30, 0, selection, s)
  for c in range(10):
    members = np.flatnonzero(labels == c)
    order = members[np.argsort(-s[members] if selection == "prototypes_hard" else s[members])]
    assert set(idx[labels[idx] == c]) == set(order[:30])


def test_rules_differ_and_ties_are_broken_by_the_seed():
  labels = _labels()
  s = _scores()
  hard, easy = (nested_subset(labels, 500, 0, r, s) for r in PROTOTYPE_RULES)
  rand = nested_subset(labels, 500, 0)
  assert s[hard].min() > s[easy].max() and s[hard].mean() > s[rand].mean() > s[easy].mean()
  flat = np.zeros(len(labels), np.float32)                 # all tied: the seed decides
  assert not np.array_equal(nested_subset(labels, 500, 0, "prototypes_hard", flat),
                            nested_subset(labels, 500, 1, "prototypes_hard", flat))


def test_random_selection_is_todays_subset():
  labels, s = _labels(), _scores()
  a = nested_subset(labels, 321, 7)
  np.testing.assert_array_equal(a, nested_subset(labels, 321, 7, "random", s))
  assert manifest_hash(a) == manifest_hash(a, "random")
  import hashlib
  assert manifest_hash(a) == hashlib.sha256(np.sort(a).astype("<i8").tobytes()).hexdigest()[:16]


def test_manifest_hash_changes_with_the_selection():
  idx = np.arange(50)
  hashes = {manifest_hash(idx, sel) for sel in ("random",) + PROTOTYPE_RULES}
  assert len(hashes) == 3


def test_selection_errors():
  labels = _labels(100)
  with pytest.raises(JaxscaleError, match="unknown subset selection 'hardest'"):
    nested_subset(labels, 50, 0, "hardest", _scores(100))
  with pytest.raises(JaxscaleError, match="needs difficulty scores"):
    nested_subset(labels, 50, 0, "prototypes_easy")
  with pytest.raises(JaxscaleError, match="hold 99 values but the split has 100"):
    nested_subset(labels, 50, 0, "prototypes_easy", _scores(99))
  bad = _scores(100)
  bad[3] = np.nan
  with pytest.raises(JaxscaleError, match="not finite"):
    nested_subset(labels, 50, 0, "prototypes_hard", bad)
