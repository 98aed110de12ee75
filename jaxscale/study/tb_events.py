"""TensorBoard event files of a study's runs: ``<workdir>/tb/<stage>/<model>/<cell id>/``.

Each run is a subdirectory, so ``tensorboard --logdir <workdir>/tb`` lists every run and filters them
by stage and model. Its scalars have examples seen as their step: ``train/loss`` (every step's training
loss), ``curve/train_loss`` (smoothed), ``curve/eval_error`` and ``curve/eval_loss`` (the points along
the budget, :mod:`jaxscale.train.evals`; the last on the whole eval split). A group's runs are written
when the group finishes; a run's directory is written whole each time (a group finished again after a
resume replaces it, never adds a second copy).

The writer is tensorboardX (numpy and protobuf only, no TensorFlow or torch; ``pip install
'jaxscale[tb]'``); without it the study logs one info line and writes none.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any, Sequence

logger = logging.getLogger("jaxscale")

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


def write_run(directory: str, losses: Sequence[float], curve: Sequence[dict], batch: int) -> bool:
  """Writes one run's event file in `directory` (replacing what it held); False without the writer."""
  writer_class = _writer_class()
  if writer_class is None:
    return False
  shutil.rmtree(directory, ignore_errors=True)
  writer = writer_class(logdir=directory, flush_secs=3600)
  try:
    for i, loss in enumerate(losses):
      writer.add_scalar("train/loss", float(loss), (i + 1) * batch)
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
