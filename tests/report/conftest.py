"""One synthetic study (see synthetic.py), analysed and reported once for the report tests."""

import logging
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import synthetic  # noqa: E402


class _Collect(logging.Handler):
  def __init__(self):
    super().__init__()
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


@pytest.fixture(scope="session")
def study(tmp_path_factory):
  """(workdir, StudyAnalysis, report paths, log messages) of the synthetic study."""
  from jaxscale.report import render
  from jaxscale.study import analysis
  workdir = str(tmp_path_factory.mktemp("synthetic") / "study")
  config = synthetic.write_study(workdir, bootstrap=10)
  log = _Collect()
  logger = logging.getLogger("jaxscale")
  logger.addHandler(log)
  try:
    result = analysis.analyze_study(config, workdir, progress=False)
    out = render.write_report(result, os.path.join(workdir, "report"))
  finally:
    logger.removeHandler(log)
  return workdir, result, out, log.messages
