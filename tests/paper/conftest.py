"""Stand-ins of the paper's datasets (real tfds names, versions, features and splits; generated
images), built once per test session into a temporary tfds data dir."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import standins  # noqa: E402



@pytest.fixture(scope="session")
def paper_data_dir(tmp_path_factory) -> str:
  """imagenet2012 (3 images for each ImageNet-100 class plus 6 of other classes; 100 validation)
  and cifar100 (300 train / 100 test)."""
  import tensorflow_datasets as tfds
  tfds.disable_progress_bar()
  root = str(tmp_path_factory.mktemp("paper_tfds"))
  view = standins.imagenet100_classes(root)
  standins.build("imagenet2012", root, {"train": 306, "validation": 100}, classes=view + [0, 1, 2])
  standins.build("cifar100", root, {"train": 300, "test": 100})
  return root
