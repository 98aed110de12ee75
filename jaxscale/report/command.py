"""`jaxscale report`: rebuild a study's fits.json and report from the files in its workdir.

The study's config comes from study.json and its runs from records.jsonl; nothing is trained.
`jaxscale study` calls `build` too once its cells are done.
"""

from __future__ import annotations

import argparse
import json
import os

from ml_collections import ConfigDict

from jaxscale import config as config_lib
from jaxscale.errors import JaxscaleError
from jaxscale.report import render, sections
from jaxscale.study import analysis

HELP = "rebuild a study's fits.json and report (md, html, PNG figures) from its records.jsonl"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--workdir", required=True, help="a study directory written by `jaxscale study`")


def study_config(workdir: str) -> ConfigDict:
  """The validated config stored in `workdir`/study.json."""
  path = os.path.join(workdir, "study.json")
  if not os.path.exists(path):
    raise JaxscaleError(f"{workdir!r} holds no study (no study.json); pass the --workdir of a `jaxscale study` run")
  with open(path, encoding="utf-8") as f:
    return config_lib.from_dict(json.load(f)["config"])


def build(config: ConfigDict, workdir: str, progress: bool = True) -> str:
  """Analyses the study, writes fits.json and report/; returns the verdict lines and the paths."""
  result = analysis.analyze_study(config, workdir, progress=progress)
  out = render.write_report(result, os.path.join(workdir, "report"))
  return "\n".join(sections.verdict_lines(result) + [f"fits: {os.path.join(workdir, 'fits.json')}",
                              f"report: {out['html']} (and {out['markdown']})"])


def run(args: argparse.Namespace) -> int:
  print(build(study_config(args.workdir), args.workdir))
  return 0
