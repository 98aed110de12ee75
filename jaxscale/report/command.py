"""`jaxscale report`: rebuild fits.json and the report of a study from its records."""

from __future__ import annotations

import argparse
import json
import os

HELP = "rebuild a study's fits.json and report (md, html, PNG figures) from its records.jsonl"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--workdir", required=True, help="a study directory written by `jaxscale study`")


def run(args: argparse.Namespace) -> int:
  from ml_collections import ConfigDict

  from jaxscale import config as config_lib
  from jaxscale.errors import JaxscaleError
  from jaxscale.study import analysis
  from jaxscale.study.runner import paths
  p = paths(args.workdir)
  if not os.path.exists(p["study"]):
    raise JaxscaleError(f"{args.workdir!r} holds no study (no study.json); pass the --workdir of a `jaxscale study` run")
  with open(p["study"], encoding="utf-8") as f:
    config = config_lib.validate(ConfigDict(json.load(f)["config"]))
  print(analysis.analyze_study(config, args.workdir))
  return 0
