"""Input paths: example order tables, image reading, the grain dispatch reader, complete eval chunks."""

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


def test_order_is_a_function_of_seed_and_step(subset):
  full = pipeline.example_order(subset, seed=3, batch_size=16, start_step=0, num_steps=40)
  assert full.shape == (40, 16) and set(full.ravel()) <= set(subset)
  np.testing.assert_array_equal(pipeline.example_order(subset, 3, 16, 25, 15), full[25:])  # resume anywhere
  assert not np.array_equal(pipeline.example_order(subset, 4, 16, 0, 40), full)


def test_each_epoch_covers_the_subset_once_and_reshuffles(subset):
  flat = pipeline.example_order(subset, seed=0, batch_size=16, start_step=0, num_steps=26).ravel()  # 2 epochs
  first, second = flat[:208], flat[208:416]
  assert sorted(first) == sorted(subset) and sorted(second) == sorted(subset)
  assert not np.array_equal(first, second)


def test_read_images_shapes_and_labels(src, subset, data_dir):
  images, labels = pipeline.read_images(src, subset[:10], 16)
  assert images.dtype == np.uint8 and images.shape[:3] == (10, 16, 16)
  np.testing.assert_array_equal(labels, sources.load_labels(NAME, "train", data_dir)[subset[:10]])
  big, _ = pipeline.read_images(src, subset[:3], 24, channels=3)
  assert big.shape == (3, 24, 24, 3)
  with pytest.raises(JaxscaleError, match="outside the split"):
    pipeline.read_images(src, np.array([len(src)]), 16)


@pytest.mark.parametrize("workers", [0, 1])
def test_dispatch_reader_reads_the_order_table(src, subset, workers):
  order = np.stack([pipeline.example_order(subset, s, 8, 0, 6) for s in (0, 1)])       # [R=2, T=6, B=8]
  reader = pipeline.DispatchReader(src, order, steps_per_dispatch=3, image_size=16,
                                   channels=pipeline.image_channels(src), num_workers=workers)
  got = list(reader.iterate(0))
  assert reader.num_dispatches == 2 and len(got) == 2
  images, labels = got[1]
  assert images.shape[:3] == (3, 2, 8) and labels.shape == (3, 2, 8)
  want, want_labels = pipeline.read_images(src, order[1, 3:6].ravel(), 16)
  np.testing.assert_array_equal(images[:, 1].reshape(want.shape), want)
  np.testing.assert_array_equal(labels[:, 1].ravel(), want_labels)
  resumed = next(reader.iterate(1))
  np.testing.assert_array_equal(resumed[0], images)


def test_eval_chunks_are_complete_padded_and_masked(data_dir):
  test = sources.open_source(NAME, "test", data_dir)
  chunks = list(pipeline.eval_chunks(test, chunk_size=96, image_size=16, channels=1))
  n = len(test)
  assert len(chunks) == -(-n // 96) and all(c["image"].shape[0] == 96 for c in chunks)
  mask = np.concatenate([c["mask"] for c in chunks])
  assert mask.sum() == n and not mask[n:].any()
  labels = np.concatenate([c["label"] for c in chunks])[:n]
  np.testing.assert_array_equal(labels, sources.load_labels(NAME, "test", data_dir))


def test_bad_inputs(src):
  with pytest.raises(JaxscaleError, match="empty"):
    pipeline.example_order(np.array([], np.int64), 0, 8, 0, 2)
  with pytest.raises(JaxscaleError, match="image size"):
    pipeline.check_image_size(4)
  with pytest.raises(JaxscaleError, match="crop padding"):
    pipeline.check_image_size(16, 16)
