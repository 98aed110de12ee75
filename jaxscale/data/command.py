"""`jaxscale data`: build the embedded datasets, list what is known and prepared, score a split."""

from __future__ import annotations

import argparse
import time

from jaxscale.study import score_command

HELP = ("build the embedded datasets (jaxscale_glyphs, jaxscale_symbols, jaxscale_digits), list datasets, "
        "score a split for pruning")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
  build = sub.add_parser("build", help="build an embedded dataset to ArrayRecord (no download)")
  build.add_argument("name", help="an embedded dataset/config, e.g. jaxscale_glyphs/16px_30k, jaxscale_symbols/16px "
                                     "or jaxscale_digits/16px (`jaxscale data list` names them all)")
  build.add_argument("--data-dir", default="", help="tfds data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
  ls = sub.add_parser("list", help="list the embedded datasets and whether each is prepared")
  ls.add_argument("--data-dir", default="", help="tfds data dir (default: tfds's default)")
  score_command.add_arguments(sub)


def run(args: argparse.Namespace) -> int:
  from jaxscale.data import builders
  if args.data_command == "score":
    return score_command.run(args)
  if args.data_command == "build":
    t0 = time.monotonic()
    already = builders.is_built(args.name, args.data_dir)
    if args.data_dir and not already:  # a prepared dataset is only read: a read-only folder is fine
      from jaxscale import fileio
      fileio.check_folder(args.data_dir, "--data-dir")
    path = builders.build(args.name, args.data_dir)
    took = "already prepared" if already else f"built in {time.monotonic() - t0:.1f}s"
    print(f"{args.name}: {took}: {path}")
    return 0
  from jaxscale.data import sources
  print(f"{'dataset':<28} {'classes':>7}  prepared")
  for name in builders.embedded_names():
    print(f"{name:<28} {sources.num_classes(name):>7}  {'yes' if builders.is_built(name, args.data_dir) else 'no'}")
  for view, (base, _) in sources.VIEWS.items():
    print(f"{view:<28} {sources.num_classes(view):>7}  (class subset of {base}; "
          f"prepare with: tfds build {base} --file_format=array_record)")
  return 0
