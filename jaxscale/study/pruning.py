"""Difficulty scores from a trained backbone, for the prototype subset selections of a study.

:func:`score_split` embeds every example of a split with a finished run's pre-head representation
(the model's ``features``: the pooled, normalised output before the head), clusters the embeddings
and scores each example by its cosine distance to the nearest centroid
(:func:`jaxscale.data.scores.prototype_scores`), then stores the scores with their manifest. The
backbone is identified by a hash of its parameters and architecture (:func:`backbone_id`), so the
scores are a pure function of (backbone, dataset, split, k, seed).

In a study (``config.study.selection`` naming a prototype rule) the scores of the pretraining split
are computed once, from ``config.study.scores.backbone`` (by default the study's teacher, trained
on ``teacher_dp`` images of the same split) into ``<workdir>/scores/``, before the first group that
selects by them; every pretraining subset of that selection is then drawn from them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx
from ml_collections import ConfigDict

from jaxscale import models
from jaxscale.data import augment, pipeline, scores, sources
from jaxscale.errors import JaxscaleError
from jaxscale.study import grid
from jaxscale.train import checkpoint as ckpt_lib

logger = logging.getLogger("jaxscale")

EMBED_BATCH = 512  # images per forward pass when embedding a split


def _load_backbone(run_dir: str) -> tuple[nnx.GraphDef, dict, dict]:
  """(graphdef, host params, run.json) of a finished run directory."""
  if not epath.Path(run_dir).exists():
    raise JaxscaleError(f"backbone {run_dir} does not exist; pass a finished run directory or a study workdir")
  meta = ckpt_lib.open_finished(run_dir, "backbone")
  abstract = nnx.eval_shape(lambda: models.create(meta["model"], meta["num_classes"], meta["image_size"],
                                                  rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract, nnx.Param)
  return graphdef, ckpt_lib.load_params(run_dir, state.to_pure_dict()), meta


def backbone_id(params: dict, meta: dict) -> str:
  """16 hex characters identifying a backbone: its model, classes, resolution and parameter bytes."""
  h = hashlib.sha256(json.dumps([meta["model"], meta["num_classes"], meta["image_size"]]).encode())
  leaves, _ = jax.tree_util.tree_flatten_with_path(params)
  for path, leaf in leaves:
    h.update(jax.tree_util.keystr(path).encode())
    h.update(np.ascontiguousarray(np.asarray(leaf, "<f4")).tobytes())
  return h.hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def _features_fn(graphdef: nnx.GraphDef):
  return jax.jit(lambda p, images: nnx.merge(graphdef, p).features(augment.normalize(images)).astype(jnp.float32))


def embed(graphdef: nnx.GraphDef, params: dict, image_size: int, source) -> np.ndarray:
  """float32 [N, D]: the pre-head features of every example of `source`, in source order."""
  fn = _features_fn(graphdef)
  out = []
  for chunk in pipeline.eval_chunks(source, chunk_size=EMBED_BATCH, image_size=image_size,
                                    channels=pipeline.image_channels(source)):
    out.append(np.asarray(fn(params, chunk["image"]))[chunk["mask"]])
  return np.concatenate(out)


def score_split(backbone_dir: str, dataset: str, split: str, data_dir: str, k: int, seed: int,
                path: str = "") -> tuple[str, dict, bool]:
  """Prototype scores of `dataset`:`split` from the backbone in `backbone_dir`, stored at `path` ("" =
  beside the data, ``<dataset dir>/scores/<file_name>``). Returns (path, manifest, reused): a stored
  file with the same manifest (backbone id, dataset, split, k, seed) is reused, not computed again."""
  graphdef, params, meta = _load_backbone(backbone_dir)
  n = len(sources.load_labels(dataset, split, data_dir))
  scores.check_k(k, n)
  bid = backbone_id(params, meta)
  want = {"metric": "prototypes", "dataset": dataset, "split": split, "backbone": bid,
          "backbone_model": meta["model"], "k": int(k), "seed": int(seed)}
  if not path:
    folder = os.path.join(sources.prepared_dir(dataset, split, data_dir), "scores")
    path = os.path.join(folder, scores.file_name(dataset, split, "prototypes", bid, k, seed))
  if "://" in path:
    raise JaxscaleError(f"difficulty scores are written to a local folder, not {path}; pass a local --out "
                        "(or a local workdir)")
  have = scores.read_manifest(path)
  if have is not None and all(have.get(key) == value for key, value in want.items()) and have.get("count") == n:
    return path, have, True
  emb = embed(graphdef, params, int(meta["image_size"]), sources.open_source(dataset, split, data_dir))
  logger.info("clustering %d embeddings of width %d into k = %d prototypes", emb.shape[0], emb.shape[1], k)
  return path, scores.save(path, scores.prototype_scores(emb, k, seed), want), False


# ----------------------------------------------------------------------------- in a study

def scores_file(cells_dir: str) -> str:
  """Where a study keeps its prototype scores: ``<workdir>/scores/prototypes.npy`` (beside ``cells/``)."""
  return os.path.join(os.path.dirname(os.path.normpath(cells_dir)), "scores", "prototypes.npy")


def study_backbone(config: ConfigDict, cells_dir: str) -> str:
  """The run directory a study's scores come from: ``config.study.scores.backbone`` or its teacher's."""
  return config.study.scores.backbone or grid.run_dir(cells_dir, grid.teacher_of(config.study))


def study_k(config: ConfigDict) -> int:
  """``config.study.scores.k``; 0 means the number of classes of the pretraining dataset."""
  k = int(config.study.scores.k)
  return k or sources.num_classes(config.pretrain.dataset, config.data.data_dir)


def prepare(config: ConfigDict, group: grid.Group, cells_dir: str) -> None:
  """Computes the study's scores before `group` trains, if one of its cells selects by them."""
  if not any(grid.selects_by_scores(c) for c in group.cells):
    return
  p = config.pretrain
  path, manifest, reused = score_split(study_backbone(config, cells_dir), p.dataset, p.train_split,
                                       config.data.data_dir, study_k(config), int(config.study.scores.seed),
                                       path=scores_file(cells_dir))
  if not reused:
    logger.info("prototype scores of %s:%s from backbone %s (k = %d): %s", p.dataset, p.train_split,
                manifest["backbone"], manifest["k"], path)
