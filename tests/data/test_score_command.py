"""`jaxscale data score NAME --by prototypes --backbone RUN_DIR`: stored beside the data, reused, refused."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from jaxscale import cli, models
from jaxscale.data import scores, sources
from jaxscale.train import checkpoint as ckpt_lib

NAME = "jaxscale_glyphs/16px_1k"


def _backbone(path, seed=0):
  """A finished run directory holding a freshly initialised smallest ViT (its features are not trained,
  but they are a function of the images, which is all the scores need)."""
  model = models.create("vit_tiny_xxs", 52, 16, rngs=nnx.Rngs(seed))
  params = jax.device_get(nnx.split(model, nnx.Param)[1].to_pure_dict())
  ckpt_lib.save_run(str(path), params, {"stage": "pretrain", "model": "vit_tiny_xxs", "num_classes": 52,
                                        "image_size": 16, "dataset": NAME})
  return str(path)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
  return _backbone(tmp_path_factory.mktemp("backbone") / "run")


def _score(data_dir, backbone, *extra):
  return cli.main(["data", "score", NAME, "--by", "prototypes", "--backbone", backbone, "--k", "8",
                   "--data-dir", data_dir, *extra])


def test_scores_are_stored_beside_the_data_and_reused(data_dir, backbone, capsys, tmp_path):
  assert _score(data_dir, backbone) == 0
  out = capsys.readouterr().out
  path = out.strip().rsplit(": ", 1)[1]
  assert "computed in" in out and path.startswith(sources.prepared_dir(NAME, "train", data_dir))
  manifest = scores.read_manifest(path)
  n = len(sources.load_labels(NAME, "train", data_dir))
  assert {k: manifest[k] for k in ("metric", "dataset", "split", "k", "seed", "count", "backbone_model")} == {
      "metric": "prototypes", "dataset": NAME, "split": "train", "k": 8, "seed": 0, "count": n,
      "backbone_model": "vit_tiny_xxs"}
  first = scores.load(path)
  assert first.shape == (n,) and np.all((first >= 0) & (first <= 2)) and first.std() > 0
  assert _score(data_dir, backbone) == 0
  assert "already computed" in capsys.readouterr().out
  # A fresh computation (another file) gives the same bytes: a pure function of backbone, k, seed.
  again = str(tmp_path / "again.npy")
  assert _score(data_dir, backbone, "--out", again) == 0
  assert scores.load(again).tobytes() == first.tobytes()
  assert json.load(open(again[:-4] + ".json"))["scores_hash"] == manifest["scores_hash"]
  other = str(tmp_path / "seed1.npy")
  assert _score(data_dir, backbone, "--out", other, "--seed", "1") == 0
  assert scores.read_manifest(other)["scores_hash"] != manifest["scores_hash"]


def test_another_backbone_has_another_id(data_dir, backbone, tmp_path, capsys):
  a, b = str(tmp_path / "a.npy"), str(tmp_path / "b.npy")
  assert _score(data_dir, backbone, "--out", a) == 0
  assert _score(data_dir, _backbone(tmp_path / "other", seed=1), "--out", b) == 0
  assert scores.read_manifest(a)["backbone"] != scores.read_manifest(b)["backbone"]


@pytest.mark.parametrize("args, needle", [
    (["--backbone", "/nonexistent/run"], "backbone /nonexistent/run does not exist"),
    (["--k", "1"], "--k 1 is too few clusters"),
    (["--k", "100000"], "larger than the split"),
    (["--by", "forgetting"], "unknown scoring metric --by forgetting"),
])
def test_bad_input_is_one_line_exit_2(data_dir, backbone, capsys, args, needle):
  flags = {"--backbone": backbone, "--k": "8", "--data-dir": data_dir, **dict(zip(args[::2], args[1::2]))}
  assert cli.main(["data", "score", NAME, *[item for pair in flags.items() for item in pair]]) == 2
  err = capsys.readouterr().err.strip()
  assert needle in err and "\n" not in err


def test_a_folder_that_is_not_a_run(data_dir, tmp_path, capsys):
  assert cli.main(["data", "score", NAME, "--backbone", str(tmp_path), "--data-dir", data_dir]) == 2
  err = capsys.readouterr().err.strip()
  assert "neither a finished run directory" in err and "\n" not in err
  assert not os.listdir(tmp_path)
