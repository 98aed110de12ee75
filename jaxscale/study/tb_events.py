"""TensorBoard event files of a study's runs: ``<workdir>/tb/<stage>/<model>/<cell id>/``.

Each run is a subdirectory, so ``tensorboard --logdir <workdir>/tb`` lists every run and filters them
by stage and model. Its scalars have examples seen as their step: ``train/loss`` (the training loss:
every step's up to :data:`MAX_LOSS_POINTS` steps, else the mean of each window of ``w`` consecutive
steps, :func:`loss_points`), ``curve/train_loss`` (smoothed), ``curve/eval_error`` and ``curve/eval_loss`` (the points along
the budget, :mod:`jaxscale.train.evals`; the last on the whole eval split). A group's runs are written
when the group finishes; a run's directory is written whole each time (a group finished again after a
resume replaces it, never adds a second copy).

The writer is tensorboardX (numpy and protobuf only, no TensorFlow or torch; ``pip install
'jaxscale[tb]'``); without it the study logs one info line and writes none.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger("jaxscale")

# TensorBoard keeps 1,000 points of a scalar tag by default (it samples the rest away on loading),
# and each written point costs the writer about 70 us on a 2-core CPU: a 3,200-step run's events took
# 236-251 ms with every step, 66-74 ms with at most 1,000 loss points (the default study's 240
# pretraining runs: about 58 s against 17 s).
MAX_LOSS_POINTS = 1000

_SAID = []   # the missing-writer line is said once per process


def _writer_class():
  try:
    from tensorboardX import SummaryWriter
  except ImportError:
    if not _SAID:
      logger.info("tensorboardX is not installed: no TensorBoard event files (pip install 'jaxscale[tb]')")
      _SAID.append(True)
    return None
  return SummaryWriter


def run_dir(workdir: str, stage: str, model: str, cell_id: str) -> str:
  return os.path.join(workdir, "tb", stage, model, cell_id)


def loss_points(losses: Sequence[float], batch: int, max_points: int = MAX_LOSS_POINTS) -> list[tuple[int, float]]:
  """``(examples seen, loss)`` of a run's ``train/loss``: every step's loss when there are at most
  `max_points` steps; else windows of ``w = ceil(steps / max_points)`` consecutive steps, each
  written as its mean at the examples seen after its last step (the last window may be shorter)."""
  n = len(losses)
  w = max(1, math.ceil(n / max_points))
  values = np.asarray(losses, np.float64)
  return [(min(end, n) * batch, float(values[end - w:min(end, n)].mean())) for end in range(w, n + w, w)]


def write_run(directory: str, losses: Sequence[float], curve: Sequence[dict], batch: int) -> bool:
  """Writes one run's event file in `directory` (replacing what it held); False without the writer."""
  writer_class = _writer_class()
  if writer_class is None:
    return False
  shutil.rmtree(directory, ignore_errors=True)
  writer = writer_class(logdir=directory, flush_secs=3600)
  try:
    for examples, loss in loss_points(losses, batch):
      writer.add_scalar("train/loss", loss, examples)
    for p in curve:
      for name in ("train_loss", "eval_error", "eval_loss"):
        writer.add_scalar(f"curve/{name}", float(p[name]), int(p["examples"]))
  finally:
    writer.close()
  return True


def write_group(workdir: str, stage: str, model: str, cells: Sequence[Any], results: Sequence[dict],
                batch: int) -> None:
  """The event files of a finished group's runs (`cells` and their `results`, in order)."""
  for cell, result in zip(cells, results):
    if not write_run(run_dir(workdir, stage, model, cell.id), result.get("losses", ()), result.get("curve", ()),
                     batch):
      return
