"""Runs a study's cells in dependency order, resumably (the study command then fits the laws and
writes the report: :mod:`jaxscale.study.analysis`, :mod:`jaxscale.report`).

Workdir layout::

  study.json       the study's config and its hash (a different config is refused)
  records.jsonl    one record per finished cell (teacher, pretrain and fine-tune stages)
  curves.jsonl     per finished cell, its evaluations along the budget (:func:`records.curve`)
  tb/<stage>/<model>/<cell>/  TensorBoard event files of each run (:mod:`jaxscale.study.tb_events`)
  groups/<id>/     each group's checkpoints and, once finished, its results (a killed group resumes);
                   an adaptive study's later rounds under groups/round<k>/<id>/
  rounds.json      an adaptive study's rounds: what each added, where and why (:mod:`jaxscale.study.rounds`)
  cells/<id>/      the finished parameters of pretraining and teacher cells (what later stages load)
  fits.json        fitted laws per arm and the distillation boundary
  report/          report.md, report.html and the PNG figures

A finished cell is never run again: its record in records.jsonl is the proof it is done. Records
are appended by one function, `records.add_results` (called by this runner and by the Ray driver):
the trainer returns results, the caller turns them into records with `record_of`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import threading
import time
from typing import Any

import jax
import numpy as np
from ml_collections import ConfigDict

from jaxscale import config as config_lib
from jaxscale import fileio
from jaxscale.errors import JaxscaleError
from jaxscale.fileio import atomic_write_text
from jaxscale.progress import Progress
from jaxscale.study import grid, pruning, records, tb_events
from jaxscale.train import evals, loop

logger = logging.getLogger("jaxscale")

# Fields that change only the analysis, not any cell: editing them keeps the study's identity.
ANALYSIS_FIELDS = ("law", "bootstrap", "law_points", "burn_in")
# Groups that say how cells are run, not what they compute: editing them keeps the study's identity.
EXECUTION_GROUPS = ("engine", "mesh")


def study_hash(config: ConfigDict) -> str:
  """Hash of everything that determines the cells' results (analysis-only fields excluded)."""
  c = ConfigDict(config.to_dict())
  for field in ANALYSIS_FIELDS + ("max_runs",):  # the run budget of later rounds: raising it resumes
    if field in c.study:
      del c.study[field]
  for group, field in config_lib.OBSERVATION_FIELDS:  # what is observed along a run changes no cell
    del c[group][field]
  if tuple(c.study.selection) == ("random",):  # no scores used: the hash of a study from before the axis
    del c.study["selection"], c.study["scores"]
  return config_lib.config_hash(c, exclude=EXECUTION_GROUPS)


paths = records.workdir_paths   # the workdir's files by role (defined in records)


def read_study(workdir: str) -> dict[str, Any]:
  """The content of `workdir`/study.json ({"hash", "config"}); a one-line error when it is missing,
  unreadable or not the JSON a study writes (e.g. cut short by a full disk)."""
  path = paths(workdir)["study"]
  if not os.path.exists(path):
    raise JaxscaleError(f"{workdir!r} holds no study (no study.json); pass the --workdir of a `jaxscale study` run")
  try:
    with open(path, encoding="utf-8") as f:
      content = json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    content = str(e)
  if not isinstance(content, dict) or not isinstance(content.get("config"), dict):
    raise JaxscaleError(f"{path} is not a study's config (truncated or edited?); restore it, or pass "
                        "--force-new to `jaxscale study` to archive this workdir and start again")
  return content


def prepare_workdir(config: ConfigDict, workdir: str, force_new: bool = False) -> None:
  """Creates `workdir` or checks it holds this same study; `force_new` archives a different one."""
  p = paths(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write-test-{os.getpid()}")
    open(probe, "w").close()
    os.remove(probe)
  except OSError as e:
    raise JaxscaleError(f"cannot write to workdir {workdir!r} ({e.strerror}); pass a writable --workdir") from None
  digest = study_hash(config)
  if os.path.exists(p["study"]):
    try:
      old = read_study(workdir)
    except JaxscaleError:
      if not force_new:
        raise
      old = {}
    if old.get("hash") != digest:
      if not force_new:
        raise JaxscaleError(
            f"workdir {workdir!r} holds a study with a different config (hash {old.get('hash')} != {digest}); "
            "use another --workdir, or pass --force-new to archive the old study and start again")
      archive = os.path.join(workdir, f"previous-{time.strftime('%Y%m%d-%H%M%S')}")
      os.makedirs(archive)
      for name in os.listdir(workdir):
        if not name.startswith("previous-"):
          shutil.move(os.path.join(workdir, name), os.path.join(archive, name))
      logger.info("archived the previous study to %s", archive)
  elif os.path.exists(p["records"]):
    raise JaxscaleError(f"workdir {workdir!r} has records.jsonl but no study.json; use an empty --workdir")
  atomic_write_text(p["study"], json.dumps(
      {"hash": digest, "config": config.to_dict()}, indent=2, sort_keys=True, default=str))
  records.resume(p["records"])  # a torn last line is moved aside now, before anything reads the records


# The grid axis (config.study field) each law input of the study's fits reads its values from.
LAW_AXES = {"Dp": "dp", "M": "models", "Df": "df"}


def check_law(config: ConfigDict) -> None:
  """Refuses, before any cell trains, a study law its grid cannot fit: an unknown name, a law reading
  an input the study does not vary (`law_selection.INPUTS`), an input whose grid axis has one value
  (the fit refuses an input that is constant over the rows: its exponent is not identified), or
  fewer fine-tune runs per arm than the law's free parameters + 1. With config.study.law_points =
  "curves" the law also reads T, the examples seen, which varies along each run (no grid axis)."""
  from jaxscale import laws
  from jaxscale.study import law_selection
  s = config.study
  runs = len(s.models) * len(s.dp) * len(s.df) * len(s.seeds)
  curves = s.law_points == "curves"
  inputs = law_selection.CURVE_INPUTS if curves else law_selection.INPUTS
  usable = [n for n in laws.names() if set(laws.get(n).inputs) == set(inputs)]
  for name in law_selection.law_candidates(str(s.law), str(s.law_points)):
    form = laws.get(name)
    other = [i for i in form.inputs if i not in inputs]
    if other:
      raise JaxscaleError(f"config.study.law '{name}' reads input {other[0]}, which a study does not have "
                          f"(it fits E({', '.join(inputs)})); use 'auto' or one of: {', '.join(usable)}")
    for given in (i for i in form.inputs if i in LAW_AXES):
      field = LAW_AXES[given]
      if len(s[field]) < 2:
        raise JaxscaleError(
            f"config.study.law '{name}' fits a term in {given}, but config.study.{field} has one value "
            f"({s[field][0]!r}), so {given} is constant over the runs and its exponent cannot be fitted; "
            f"give config.study.{field} at least 2 values")
    if runs < len(form.params) + 1:
      raise JaxscaleError(
          f"config.study.law '{name}' has {len(form.params)} free parameters but the grid gives each arm "
          f"{runs} fine-tune runs (models x dp x df x seeds); add values to config.study.seeds, .dp, .df or "
          f".models for at least {len(form.params) + 1}")


def check_sizes(config: ConfigDict, dry_run: bool) -> None:
  """Fails early if any Dp or Df is larger than its split (datasets built first unless dry-run)."""
  from jaxscale.data import builders, sources
  s = config.study
  teacher_dp = grid.teacher_of(s).dp if grid.needs_teacher(s) else 0
  for stage, sizes in (("pretrain", list(s.dp) + [teacher_dp]), ("finetune", list(s.df))):
    name, split = config[stage].dataset, config[stage].train_split
    if not dry_run and name.startswith("jaxscale_"):
      builders.ensure_built(name, config.data.data_dir)
    try:
      n = len(sources.load_labels(name, split, config.data.data_dir))
    except JaxscaleError:
      if dry_run:
        continue  # not prepared yet: a real run builds it (embedded) or says how
      raise
    evals.check(config, stage)
    key = "dp" if stage == "pretrain" else "df"
    if max(sizes) > n:
      raise JaxscaleError(
          f"config.study.{key} asks for {max(sizes)} images but {name}:{split} has {n}; "
          f"use values up to {n}" + (" (teacher_dp included)" if stage == "pretrain" else ""))


def cell_flops(config: ConfigDict, cell: grid.Cell) -> float:
  """Estimated training FLOPs of a cell (:func:`jaxscale.train.steps.run_flops`)."""
  teacher = grid.teacher_of(config.study).model if grid.kd_alpha(config, cell) > 0 else ""
  return loop.stage_flops(config, cell.stage, cell.model, teacher, grid.cell_steps(config, cell))


def grid_status(config: ConfigDict, workdir: str | None = None) -> dict[str, Any]:
  """The cells with their status and FLOPs, the FLOPs still to train, and the training speed the
  workdir's records measured (``flops_per_s`` None, ``rate_measured`` False without any; a study
  with nothing done when `workdir` is None)."""
  done = records.by_cell(paths(workdir)["records"]) if workdir else {}
  rows = [{"cell": c, "done": c.id in done, "flops": cell_flops(config, c)} for c in grid.expand(config)]
  measured = [r for r in done.values() if r.get("flops") and r.get("wall_s")]
  rate = sum(r["flops"] for r in measured) / sum(r["wall_s"] for r in measured) if measured else None
  return {"rows": rows, "flops_per_s": rate, "rate_measured": bool(measured),
          "todo_flops": sum(r["flops"] for r in rows if not r["done"])}


def run_of(config: ConfigDict, cell: grid.Cell, cells_dir: str) -> loop.Run:
  """The trainer's view of a cell: seed, subset size, KD weight, where it starts and is saved."""
  if cell.kind == grid.FINETUNE:
    return loop.Run(cell.id, cell.seed, cell.df, alpha=grid.kd_alpha(config, cell),
                    uniform_teacher=grid.uniform_teacher(config, cell),
                    init=grid.run_dir(cells_dir, cell.pretrain_cell()))
  distilled = cell.arm == "distilled"
  teacher = grid.teacher_of(config.study).model if distilled else ""
  return loop.Run(cell.id, cell.seed, cell.dp, alpha=grid.kd_alpha(config, cell),
                  uniform_teacher=grid.uniform_teacher(config, cell), out_dir=grid.run_dir(cells_dir, cell),
                  meta=(("dp", cell.dp), ("distilled", distilled), ("teacher", teacher)),
                  selection=cell.selection,
                  scores=pruning.scores_file(cells_dir) if grid.selects_by_scores(cell) else "")


def record_of(config: ConfigDict, cell: grid.Cell, result: dict[str, Any]) -> dict[str, Any]:
  distilled = cell.arm == "distilled"
  teacher = grid.teacher_of(config.study).model if distilled else ""
  return records.build(config, cell.stage, result, cell_id=cell.id, dp=cell.dp, df=cell.df,
                       distilled=distilled, teacher=teacher, alpha=grid.kd_alpha(config, cell),
                       seed=cell.seed, flops=cell_flops(config, cell), arm=cell.arm, selection=cell.selection)


def keep_results(cfg: ConfigDict, workdir: str, group: grid.Group, done: dict, results: list[dict[str, Any]],
                 write: bool = True) -> None:
  """A finished group's results kept, by whichever engine trained it: its records (and curves)
  appended to records.jsonl (`records.add_results`; `done` updated) and, by the one writer
  (`write`), its runs' TensorBoard event files (`tb_events.write_group`). `cfg` is the group's
  config (`grid.group_config`)."""
  p = paths(workdir)
  records.add_results(p["records"], done, group.cells, results, functools.partial(record_of, cfg), write=write)
  if write:
    tb_events.write_group(workdir, group.stage, group.model, group.cells, results,
                          int(cfg[group.stage].optim.batch_size))


def _compile_ahead(config: ConfigDict, group: grid.Group, cells_dir: str) -> threading.Thread:
  """Starts compiling `group`'s programs in a background thread (XLA compiles without the GIL, so
  this overlaps the current group's training). A failure here is left for the group itself to raise."""
  cfg = grid.group_config(config, group, cells_dir)
  runs = [run_of(config, c, cells_dir) for c in group.cells]

  def work():
    try:
      loop.compile_ahead(cfg, group.stage, runs)
    except Exception as e:  # noqa: BLE001 -- the group's own run reports the problem properly
      logger.debug("compiling %s ahead failed: %s", group.id, e)

  thread = threading.Thread(target=work, name=f"compile {group.id}", daemon=True)
  thread.start()
  return thread


def _check_space(config: ConfigDict, group: grid.Group, p: dict[str, str], n_done: int) -> None:
  """Refuses a pretraining group the workdir's disk certainly cannot hold, before it starts and fails
  half-way: less free space than 80% of its runs' float32 parameters, which it saves when it ends
  (checkpoints come on top, but their size on disk varies too much to count)."""
  if group.stage == grid.FINETUNE:
    return  # fine-tunes keep only checkpoints: nothing certain to count
  from jaxscale import models
  from jaxscale.data import sources
  classes = sources.num_classes(config[group.stage].dataset, config.data.data_dir)
  least = 0.8 * len(group.cells) * models.param_count(group.model, classes, int(config.data.image_size)) * 4
  free = shutil.disk_usage(p["groups"] if os.path.isdir(p["groups"]) else os.path.dirname(p["records"])).free
  if free < least:
    raise JaxscaleError(
        f"the disk of {os.path.dirname(p['records'])} has {free / 1e6:.2f} MB free but group {group.id} writes at "
        f"least {least / 1e6:.2f} MB; the {n_done} finished records in {p['records']} are intact: free space "
        "(or pass another --workdir) and run the same command again to resume")


class _OsErrorEchoes(logging.Filter):
  """Drops the log lines in which a checkpoint writer's threads repeat a refused write (tensorstore
  text with an ``os_error_code``): the same error reaches the study, which says it once."""

  def filter(self, record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return "os_error_code=" not in record.getMessage() and fileio.os_error_of(error) is None


def _train_group(config: ConfigDict, cfg: ConfigDict, group: grid.Group, p: dict[str, str], show_progress: bool,
                 n_done: int) -> list[dict[str, Any]]:
  """Trains one group (:func:`loop.train_group`); a write the disk refuses (full, read-only) is one
  line that names the path and says the finished records are intact."""
  _check_space(config, group, p, n_done)
  echoes, absl = _OsErrorEchoes(), logging.getLogger("absl")
  absl.addFilter(echoes)
  try:
    return loop.train_group(cfg, group.stage, [run_of(config, c, p["cells"]) for c in group.cells],
                            os.path.join(p["groups"], group.id), show_progress=show_progress,
                            progress_delay_s=5.0, desc=f"{group.id} ({len(group.cells)} runs)")
  except Exception as e:  # noqa: BLE001 -- anything else is re-raised as it came
    refused = fileio.os_error_of(e)
    if refused is None:
      raise
    raise JaxscaleError(
        f"{fileio.describe_os_error(refused)} while training group {group.id}; the {n_done} finished "
        f"records in {p['records']} are intact: free space (or pass another --workdir) and run the same "
        "command again to resume") from None
  finally:
    absl.removeFilter(echoes)


def run_cells(config: ConfigDict, workdir: str, show_progress: bool = True, cells: list[grid.Cell] | None = None,
              groups_dir: str = "") -> list[dict[str, Any]]:
  """Trains every group that has unfinished cells, in order; returns all records of the study.
  `cells`: these instead of the config's grid (an adaptive round), their groups under `groups_dir`
  (a group id names its cells only within one grid, so each round needs its own directory)."""
  p = paths(workdir)
  if groups_dir:
    p["groups"] = groups_dir
  cells = grid.expand(config) if cells is None else list(cells)
  done = records.resume(p["records"]) if jax.process_index() == 0 else records.by_cell(p["records"])
  todo = [g for g in grid.groups(config, cells) if any(c.id not in done for c in g.cells)]
  if done:
    logger.info("resuming: %d of %d cells already done", sum(c.id in done for c in cells), len(cells))
  main = jax.process_index() == 0
  ahead = None
  # the ETA weighs cells by their training FLOPs: a pretraining run here costs ~20 fine-tunes
  flops = {c.id: cell_flops(config, c) for c in cells}
  try:
    with Progress(total=len(cells), desc="study", unit="cell", initial=sum(c.id in done for c in cells),
                  enabled=show_progress and main, interval_s=0, work_total=sum(flops.values()),
                  work_initial=sum(f for i, f in flops.items() if i in done)) as bar:
      for i, group in enumerate(todo):
        if ahead is not None:
          ahead.join()  # this group's programs: compiled while the previous group trained
        cfg = grid.group_config(config, group, p["cells"])
        if i + 1 < len(todo) and jax.process_count() == 1:
          ahead = _compile_ahead(config, todo[i + 1], p["cells"])
        t0 = time.time()
        pruning.prepare(config, group, p["cells"])
        fresh = [c for c in group.cells if c.id not in done]  # a resumed group's finished cells are counted already
        results = _train_group(config, cfg, group, p, show_progress, len(done))
        keep_results(cfg, workdir, group, done, results, write=main)
        errors = [r["eval_error"] for r in results]
        bar.update(len(fresh), work=sum(flops[c.id] for c in fresh), group=group.id, err=round(float(np.mean(errors)), 4),
                   s=round(time.time() - t0, 1))
  finally:
    if ahead is not None:  # a thread still compiling when the process exits aborts it (C++ "exception not rethrown")
      ahead.join()
  return records.read(p["records"])
