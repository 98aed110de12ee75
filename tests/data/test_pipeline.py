"""grain pipelines: shapes, determinism, resume, per-process shards, workers, complete eval."""

import json
import logging

import numpy as np
import pytest

from jaxscale.data import pipeline, sources, subsets
from jaxscale.errors import JaxscaleError

NAME = "jaxscale_glyphs/16px_1k"


@pytest.fixture(scope="module")
def src(data_dir):
  return sources.open_source(NAME, "train", data_dir)


@pytest.fixture(scope="module")
def subset(data_dir):
  return subsets.nested_subset(sources.load_labels(NAME, "train", data_dir), 208, seed=0)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _iter(src, subset, **kw):
  args = dict(global_batch_size=16, image_size=16, seed=0, crop_padding=2, process_index=0,
              process_count=1)
  args.update(kw)
  return pipeline.train_iterator(src, subset, **args)


def _same(a, b):
  return all(np.array_equal(x["image"], y["image"]) and np.array_equal(x["label"], y["label"])
             for x, y in zip(a, b, strict=True))


def test_train_batches_shapes_and_range(src, subset):
  batch = next(_iter(src, subset, image_size=24))
  assert batch["image"].shape == (16, 24, 24, 3) and batch["image"].dtype == np.float32
  assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
  assert batch["image"].min() >= -1 and batch["image"].max() <= 1
  np.testing.assert_array_equal(batch["image"][..., 0], batch["image"][..., 2])  # grey -> 3 channels


def test_same_seed_same_batches_other_seed_differs(src, subset):
  a, b = _take(_iter(src, subset), 4), _take(_iter(src, subset), 4)
  assert _same(a, b)
  assert not _same(a, _take(_iter(src, subset, seed=1), 4))


def test_epochs_cover_the_subset_and_reshuffle(src, subset):
  # 208 examples / 16 = 13 batches per epoch.
  it = _iter(src, subset, crop_padding=0)
  epoch1 = np.concatenate([b["label"] for b in _take(it, 13)])
  epoch2 = np.concatenate([b["label"] for b in _take(it, 13)])
  want = np.sort(np.array([src[int(i)]["label"] for i in subset]))
  np.testing.assert_array_equal(np.sort(epoch1), want)
  np.testing.assert_array_equal(np.sort(epoch2), want)
  assert not np.array_equal(epoch1, epoch2)


def test_restored_iterator_continues_exactly(src, subset):
  it = _iter(src, subset)
  _take(it, 5)
  state = json.loads(json.dumps(it.get_state()))
  expected = _take(it, 3)
  fresh = _iter(src, subset)
  fresh.set_state(state)
  assert _same(_take(fresh, 3), expected)


def test_process_shards_concatenate_to_the_global_batch(src, subset):
  global_batches = _take(_iter(src, subset), 6)
  shards = [_take(_iter(src, subset, process_index=p, process_count=4), 6) for p in range(4)]
  for k, batch in enumerate(global_batches):
    assert all(s[k]["image"].shape[0] == 4 for s in shards)
    np.testing.assert_array_equal(np.concatenate([s[k]["image"] for s in shards]), batch["image"])
    np.testing.assert_array_equal(np.concatenate([s[k]["label"] for s in shards]), batch["label"])


def test_process_shards_are_disjoint_and_cover_an_epoch(src, subset):
  # Without augmentation, map every yielded image back to its example: one epoch = 13 batches.
  lookup = {src[int(i)]["image"].tobytes(): int(i) for i in subset}
  seen = []
  for p in range(2):
    for b in _take(_iter(src, subset, crop_padding=0, process_index=p, process_count=2), 13):
      raw = np.rint((b["image"][..., :1] + 1) * 127.5).astype(np.uint8)
      seen += [lookup[im.tobytes()] for im in raw]
  assert len(seen) == len(set(seen)) == len(subset) and set(seen) == set(subset.tolist())


def test_output_does_not_depend_on_workers(src, subset):
  reference = _take(_iter(src, subset), 5)
  it = _iter(src, subset, num_workers=2)
  try:
    assert _same(_take(it, 3), reference[:3])
    state = it.get_state()
  finally:
    it.close()
  resumed = _iter(src, subset, num_workers=0)
  resumed.set_state(state)
  assert _same(_take(resumed, 2), reference[3:])


def test_flip_is_refused_for_letters(src, subset, caplog):
  with caplog.at_level(logging.WARNING, logger="jaxscale"):
    flipped = _take(_iter(src, subset, flip=True), 2)
  assert "flips are off" in caplog.text
  assert _same(flipped, _take(_iter(src, subset), 2))


def test_eval_is_complete_padded_and_masked(src):
  indices = np.arange(0, 1000, 7)  # 143 examples
  ev = pipeline.eval_batches(src, global_batch_size=32, image_size=16, indices=indices,
                             process_index=0, process_count=1)
  batches = list(ev)
  assert len(ev) == len(batches) == 5 and ev.num_examples == 143
  mask = np.concatenate([b["mask"] for b in batches])
  assert mask.sum() == 143 and mask[:143].all()
  labels = np.concatenate([b["label"] for b in batches])[:143]
  np.testing.assert_array_equal(labels, [src[int(i)]["label"] for i in indices])
  assert not batches[-1]["image"][~batches[-1]["mask"]].any()
  again = list(ev)
  assert all(np.array_equal(a["image"], b["image"]) for a, b in zip(batches, again))


def test_eval_shards_concatenate_to_the_global_batch(src):
  whole = list(pipeline.eval_batches(src, global_batch_size=64, image_size=16, process_index=0,
                                     process_count=1))
  parts = [list(pipeline.eval_batches(src, global_batch_size=64, image_size=16, process_index=p,
                                      process_count=2)) for p in range(2)]
  assert len(whole) == 16 and all(len(p) == 16 for p in parts)
  for k, batch in enumerate(whole):
    for key in ("image", "label", "mask"):
      np.testing.assert_array_equal(np.concatenate([parts[0][k][key], parts[1][k][key]]), batch[key])


def test_bad_inputs(src, subset):
  with pytest.raises(JaxscaleError, match="multiple of the process count 3"):
    _iter(src, subset, process_count=3)
  with pytest.raises(JaxscaleError, match="image size 4 is too small"):
    _iter(src, subset, image_size=4)
  with pytest.raises(JaxscaleError, match="outside the split"):
    _iter(src, np.array([0, 5000]))
