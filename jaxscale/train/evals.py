"""Evaluations along a run's budget: at which steps (``config.<stage>.eval_at``), on which images
(``config.<stage>.eval_subset``), and the per-run curves they make.

A fraction ``f`` of the budget of T steps is evaluated at the dispatch boundary nearest ``f * T`` (a
multiple of ``config.engine.steps_per_dispatch`` K, at least K): the train program keeps its one
compiled shape and the only host syncs added are the evaluations themselves. T is the run's own step
count (runs of one group may train different counts), so a run's points are those it has alone. A
curve records the step it was measured at, so the rounding is visible. Points before the end use a fixed subset of the
stage's eval split (``eval_subset`` images, drawn with a seed of their own: every run and arm sees the
same images); the last point is the run's final evaluation on the whole split, the one its record holds.

The points measured so far are kept in the group directory (``curve_points.json``, written atomically
after each evaluation): a resumed group keeps those up to the step its checkpoint restores, and
measures the later ones again (the same parameters give the same numbers), so a resumed run's curve is
the uninterrupted run's.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np
from ml_collections import ConfigDict

from jaxscale.data import pipeline, sources
from jaxscale.data.seeding import derive_seed
from jaxscale.errors import JaxscaleError
from jaxscale.fileio import atomic_write_text

POINTS_FILE = "curve_points.json"   # in a group directory while (and after) it trains
SMOOTH_FRAC = 0.05                  # a point's train loss: the mean over the last 5% of the budget


def eval_steps(fractions: Sequence[float], total: int, k: int) -> list[int]:
  """The steps before `total` at which a group is evaluated: each fraction's nearest dispatch
  boundary (a multiple of `k`, at least `k`), once each, sorted. The end (step `total`) is not
  listed: it is the final evaluation."""
  out = {max(k, int(round(f * total / k)) * k) for f in fractions}
  return sorted(s for s in out if s < total)


def subset_rows(config: ConfigDict, stage: str) -> np.ndarray:
  """The rows of the stage's eval split that intermediate points use (sorted; the whole split when
  ``eval_subset`` equals its size). Raises a one-line error when the split is smaller."""
  s = config[stage]
  n = len(sources.open_source(s.dataset, s.eval_split, config.data.data_dir))
  size = int(s.eval_subset)
  if size > n:
    raise JaxscaleError(f"config.{stage}.eval_subset={size} is larger than the {n} images of "
                        f"{s.dataset}:{s.eval_split}; use at most {n}")
  rng = np.random.default_rng(derive_seed(0, f"{stage}/eval_subset"))
  return np.sort(rng.choice(n, size, replace=False))


def check(config: ConfigDict, stage: str) -> None:
  """Fails early (one line) when the stage evaluates along its budget on more images than its split has."""
  if any(f < 1.0 for f in config[stage].eval_at):
    subset_rows(config, stage)


@functools.lru_cache(maxsize=4)
def _subset_chunks(name: str, split: str, data_dir: str, image_size: int, channels: int, chunk: int,
                   rows: tuple) -> tuple:
  source = sources.open_source(name, split, data_dir)
  rows = np.asarray(rows)
  out = []
  for start in range(0, len(rows), chunk):
    part = rows[start:start + chunk]
    images, labels = pipeline.read_images(source, part, image_size, channels)
    pad = chunk - len(part)
    out.append({"image": np.concatenate([images, np.zeros((pad, *images.shape[1:]), np.uint8)]),
                "label": np.concatenate([labels, np.zeros(pad, np.int32)]).astype(np.int32),
                "mask": np.arange(chunk) < len(part)})
  return tuple(out)


def subset_chunks(config: ConfigDict, stage: str, channels: int) -> tuple:
  """The eval subset as padded chunks of the stage's eval batch, or of the subset's size when that is
  smaller (a subset of 256 in chunks of 1,000 would spend three quarters of each forward on padding)."""
  s = config[stage]
  chunk = min(int(s.optim.eval_batch_size), int(s.eval_subset))
  return _subset_chunks(s.dataset, s.eval_split, config.data.data_dir, int(config.data.image_size), channels,
                        chunk, tuple(int(r) for r in subset_rows(config, stage)))


class AlongBudget:
  """The group's intermediate evaluations: call it after every dispatch with (steps done, state).

  An evaluation is queued behind the dispatch that ends at its step and fetched at the next call,
  when the next dispatch is queued behind it: the device never waits for the host, and the host only
  for an evaluation that is (nearly) done. The points are written as they are fetched; a checkpoint is
  saved only after a later call, so no saved step lacks an earlier point, and a point due at the
  restored step itself is measured on the restored state (:meth:`start`).

  An evaluation at a step measures every run of the group; a run's curve keeps the steps of its own.

  Args:
    steps: :func:`eval_steps` of each run (a list per run).
    names: the group's run names (the padded copies left out).
    dispatch: ``dispatch(params) -> sums``, device values not waited for (:func:`totals` reads them).
    group_dir: where the points are kept; resumed_step: the group's step training starts (or resumes) at.
    total: each run's step count; batch: the batch size.
  """

  def __init__(self, steps: Sequence[Sequence[int]], names: Sequence[str], dispatch: Callable[[Any], Any],
               group_dir: str, resumed_step: int, total: Sequence[int], batch: int):
    self.names, self._dispatch = list(names), dispatch
    self.totals, self.run_steps = [int(t) for t in total], [set(s) for s in steps]
    self.steps, self.batch = set().union(*self.run_steps), int(batch)
    self._path = os.path.join(group_dir, POINTS_FILE)
    self.points, self._pending = [], None
    if resumed_step and os.path.exists(self._path):
      with open(self._path, encoding="utf-8") as f:
        saved = json.load(f)
      if saved.get("runs") == self.names:
        self.points = [p for p in saved["points"] if p["step"] <= resumed_step and p["step"] in self.steps]

  def start(self, step: int, state: Any) -> None:
    """Before training from `step`: a point due there and not kept is measured on `state`."""
    self(step, state)

  def __call__(self, done: int, state: Any) -> None:
    self.flush()
    if done in self.steps and not any(p["step"] == done for p in self.points):
      self._pending = (int(done), self._dispatch(state.params))

  def flush(self) -> None:
    """Fetches the queued evaluation, if any, and writes the points."""
    if self._pending is None:
      return
    (done, sums), self._pending = self._pending, None
    got, n = totals(sums), len(self.names)
    self.points.append({"step": done, "eval_error": [float(v) for v in got["eval_error"][:n]],
                        "eval_loss": [float(v) for v in got["eval_loss"][:n]], "eval_count": got["eval_count"]})
    atomic_write_text(self._path, json.dumps({"runs": self.names, "points": self.points}, sort_keys=True))

  def curve(self, i: int, losses: Sequence[float], final: dict) -> list[dict]:
    """Run `i`'s points in step order, the last its final evaluation on the whole split (``final``: the
    group's evaluation result). Each point: ``step, examples`` (seen: step x batch), ``train_loss``
    (:func:`smoothed_loss`), ``eval_error, eval_loss, eval_count``."""
    self.flush()
    total = self.totals[i]
    pts = sorted((p["step"], p["eval_error"][i], p["eval_loss"][i], p["eval_count"]) for p in self.points
                 if p["step"] in self.run_steps[i])
    pts.append((total, float(final["eval_error"][i]), float(final["eval_loss"][i]), int(final["eval_count"])))
    return [{"step": s, "examples": s * self.batch, "train_loss": smoothed_loss(losses, s, total),
             "eval_error": e, "eval_loss": l, "eval_count": c} for s, e, l, c in pts]


def totals(sums: Sequence[dict]) -> dict:
  """Per-run error and mean loss over eval chunks' device sums (``errors``, ``loss`` [R], ``count``),
  fetched here: the sums of :func:`jaxscale.train.steps.make_eval_chunk`'s program."""
  sums = jax.device_get(list(sums))
  count = float(sum(x["count"] for x in sums))
  errors = np.sum([x["errors"] for x in sums], axis=0)
  loss = np.sum([x["loss"] for x in sums], axis=0)
  return {"eval_error": errors / count, "eval_loss": loss / count, "eval_count": int(count)}


def smoothed_loss(losses: Sequence[float], step: int, total: int) -> float:
  """The mean training loss of the last ``SMOOTH_FRAC`` of the budget before `step` (at least one
  step; NaN steps, after a divergence, left out; NaN when every step is)."""
  window = max(1, int(round(SMOOTH_FRAC * total)))
  part = np.asarray(losses[max(0, step - window):step], np.float64)
  part = part[np.isfinite(part)]
  return float(part.mean()) if part.size else float("nan")
