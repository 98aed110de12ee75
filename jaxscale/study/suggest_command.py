"""`jaxscale suggest`: print what the next adaptive round of a study would run, and why; run nothing."""

from __future__ import annotations

import argparse
import os

from jaxscale.errors import JaxscaleError

HELP = "print the next adaptive round of a study (which points get new seed pairs, and why) without running it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--workdir", required=True, help="a study directory written by `jaxscale study`")
  parser.add_argument("--config", default=None,
                      help="optional: the study's config file; refused when it is not the workdir's study")


def run(args: argparse.Namespace) -> int:
  from jaxscale import config as config_lib
  from jaxscale.study import adaptive, records, runner
  stored = runner.read_study(args.workdir)
  config = config_lib.from_dict(stored["config"])
  if args.config:
    given = config_lib.load(args.config, [])
    if runner.study_hash(given) != stored.get("hash"):
      raise JaxscaleError(f"{args.config} is not the config of the study in {args.workdir!r} (another hash); "
                          "pass that study's config, or leave --config out to use its study.json")
  path = runner.paths(args.workdir)["records"]
  rows = records.read(path) if os.path.exists(path) else []
  if not rows:
    raise JaxscaleError(f"{args.workdir!r} has no records yet; run `jaxscale study` on it first")
  additions, cells, alpha = adaptive.next_round(config, rows)
  print(adaptive.describe(additions, cells, alpha, tuple(config.study.arms)))
  return 0
