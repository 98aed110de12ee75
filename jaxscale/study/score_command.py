"""`jaxscale data score`: difficulty scores of a split from a trained backbone, stored beside the data."""

from __future__ import annotations

import argparse
import json
import os
import time

from jaxscale.errors import JaxscaleError

HELP = "score every example of a split by its distance to the nearest k-means prototype of a backbone's features"


def add_arguments(sub) -> None:
  score = sub.add_parser("score", help=HELP)
  score.add_argument("name", help="dataset (or view), e.g. jaxscale_glyphs/16px_30k")
  score.add_argument("--by", default="prototypes", help="the metric: prototypes (the only one)")
  score.add_argument("--backbone", required=True, metavar="RUN_DIR_OR_WORKDIR",
                     help="a finished run directory (holds run.json) or a study workdir (its teacher)")
  score.add_argument("--k", type=int, default=0, help="k-means clusters (default: the dataset's classes)")
  score.add_argument("--seed", type=int, default=0, help="k-means seed (default %(default)s)")
  score.add_argument("--split", default="train", help="the split to score (default %(default)s)")
  score.add_argument("--data-dir", default="", help="tfds data dir (default: tfds's default)")
  score.add_argument("--out", default="", metavar="FILE.npy",
                     help="where to write the scores (default: <dataset dir>/scores/, beside the data)")


def resolve_backbone(path: str) -> str:
  """A finished run directory as given, or a study workdir's scores backbone (by default its teacher)."""
  from jaxscale import config as config_lib
  from jaxscale.study import pruning, runner
  if os.path.isfile(os.path.join(path, "run.json")):
    return path
  study = runner.paths(path)["study"]
  if os.path.isfile(study):
    with open(study, encoding="utf-8") as f:
      config = config_lib.from_dict(json.load(f)["config"])
    return pruning.study_backbone(config, runner.paths(path)["cells"])
  if not os.path.exists(path):
    raise JaxscaleError(f"backbone {path} does not exist; pass a finished run directory or a study workdir")
  raise JaxscaleError(f"backbone {path} is neither a finished run directory (no run.json) nor a study "
                      "workdir (no study.json); train it first or fix the path")


def run(args: argparse.Namespace) -> int:
  from jaxscale.data import builders, scores, sources
  from jaxscale.study import pruning
  if args.by not in scores.METRICS:
    raise JaxscaleError(f"unknown scoring metric --by {args.by}; use one of {', '.join(scores.METRICS)}")
  if args.k != 0 and args.k < 2:
    raise JaxscaleError(f"--k {args.k} is too few clusters; use --k >= 2 (or leave it out: one per class)")
  if args.out and not args.out.endswith(".npy"):
    raise JaxscaleError(f"--out {args.out} must name a .npy file")
  backbone = resolve_backbone(args.backbone)
  if builders.is_embedded(args.name):
    builders.ensure_built(args.name, args.data_dir)
  k = args.k or sources.num_classes(args.name, args.data_dir)
  t0 = time.monotonic()
  path, manifest, reused = pruning.score_split(backbone, args.name, args.split, args.data_dir, k, args.seed,
                                               path=args.out)
  took = "already computed" if reused else f"computed in {time.monotonic() - t0:.1f}s"
  print(f"{args.name}:{args.split} scored by prototypes (backbone {manifest['backbone']}, "
        f"{manifest['backbone_model']}, k = {manifest['k']}, seed {manifest['seed']}): {took}: {path}")
  return 0
