"""Opening prepared datasets by name; labels without decoding; one-line errors."""

import numpy as np
import pytest

from jaxscale.data import sources
from jaxscale.errors import JaxscaleError


def test_labels_match_examples_and_batched_reads(data_dir):
  src = sources.open_source("jaxscale_digits/16px", "train", data_dir)
  labels = sources.load_labels("jaxscale_digits/16px", "train", data_dir)
  assert labels.dtype == np.int64 and labels.shape == (len(src),)
  rows = [0, 5, 1436]
  images, got = src.get_many(rows)
  assert [src[i]["label"] for i in rows] == list(labels[rows]) == list(got)
  for i, image in zip(rows, images):
    np.testing.assert_array_equal(image, src[i]["image"])


def test_num_classes_needs_no_prepared_data():
  assert sources.num_classes("jaxscale_glyphs/16px_1m") == 52
  assert sources.num_classes("jaxscale_digits/32px") == 10
  assert sources.num_classes("cifar100") == 100
  assert sources.num_classes("imagenet100") == 100


def test_imagenet100_class_list_is_100_distinct_wordnet_ids():
  classes = sources.class_list("imagenet100")
  assert len(classes) == len(set(classes)) == 100
  assert all(c.startswith("n") and len(c) == 9 for c in classes)


def test_unknown_dataset(data_dir):
  with pytest.raises(JaxscaleError, match="unknown dataset 'no_such_set'"):
    sources.open_source("no_such_set", "train", data_dir)


def test_unknown_split(data_dir):
  with pytest.raises(JaxscaleError, match="has no split 'validation'; its splits: test, train"):
    sources.open_source("jaxscale_digits/16px", "validation", data_dir)


def test_unprepared_datasets_name_the_build_command(data_dir):
  with pytest.raises(JaxscaleError, match=f"run: jaxscale data build jaxscale_digits/32px --data-dir {data_dir}"):
    sources.open_source("jaxscale_digits/32px", "train", data_dir)
  with pytest.raises(JaxscaleError, match="run: tfds build cifar10 --file_format=array_record"):
    sources.open_source("cifar10", "train", data_dir)
  with pytest.raises(JaxscaleError, match="tfds build imagenet2012"):
    sources.open_source("imagenet100", "train", data_dir)


def test_flip_policy():
  assert not sources.allows_flip("jaxscale_glyphs/16px_30k")
  assert sources.allows_flip("imagenet100") and sources.allows_flip("cifar10")
