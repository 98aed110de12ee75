"""`jaxscale report`: rebuild a study's fits.json and report from the files in its workdir.

The study's config comes from study.json and its runs from records.jsonl; nothing is trained.
`jaxscale study` calls `build` too once its cells are done.
"""

from __future__ import annotations

import argparse

from ml_collections import ConfigDict

from jaxscale import config as config_lib
from jaxscale.report import render, sections
from jaxscale.study import analysis, records

HELP = "rebuild a study's fits.json and report (md, html, PNG figures) from its records.jsonl"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--workdir", required=True, help="a study directory written by `jaxscale study`")


def study_config(workdir: str) -> ConfigDict:
  """The validated config stored in `workdir`/study.json."""
  from jaxscale.study import runner
  return config_lib.from_dict(runner.read_study(workdir)["config"])


def build(config: ConfigDict, workdir: str, progress: bool = True) -> str:
  """Analyses the study, writes fits.json and report/; returns the verdict lines and the paths."""
  from jaxscale.study import rounds
  result = analysis.analyze_study(config, workdir, progress=progress)
  where = records.workdir_paths(workdir)
  out = render.write_report(result, where["report"], rounds.read_log(workdir))
  return "\n".join(sections.verdict_lines(result) + [f"fits: {where['fits']}",
                              f"report: {out['html']} (and {out['markdown']})"])


def run(args: argparse.Namespace) -> int:
  from jaxscale import fileio
  config = study_config(args.workdir)
  fileio.lock_workdir(args.workdir, "jaxscale report")  # not while a study or another report writes it
  print(build(config, args.workdir))
  return 0
