"""Runs a study's groups as tasks on a Ray cluster (``jaxscale study --engine ray``).

Each group (:func:`jaxscale.study.grid.groups`) is one Ray task asking for
``config.engine.resources`` (e.g. ``{"GPU": 1}``: one group per GPU). The driver submits a group
once the groups it needs have finished (a fine-tune group needs the pretraining groups of its
cells; a group with a distilled cell needs the teacher), so independent groups run side by side
across the cluster's devices and machines.

The division of labour keeps the in-process engine's guarantees:

- A task trains its group with :func:`jaxscale.train.loop.train_group`, which writes only the
  group's checkpoints and ``result.json`` and its finished runs' parameters, all under the workdir
  (which every node must see: the driver writes a token there and a probe task on every node must
  read it back, else the study is refused with one line). The task returns the results.
- The driver is the only writer of ``records.jsonl`` (and of ``study.json``, ``fits.json`` and the
  report): it turns each returned result into a record with :func:`runner.record_of`.
- A worker killed mid-group is a system failure Ray retries (``MAX_RETRIES``); the retried task
  resumes from the group's last checkpoint. A driver killed and started again skips every cell with
  a record and every group with a ``result.json``, so no finished group is trained again.
- A user error inside a task (:class:`JaxscaleError`) comes back as its one line and stops the study.

Ray is optional: nothing here is imported by the in-process engine.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
import warnings
from typing import Any

from ml_collections import ConfigDict

from jaxscale.errors import JaxscaleError
from jaxscale.fileio import atomic_write_text
from jaxscale.progress import format_duration
from jaxscale.study import grid, pruning, records, runner
from jaxscale.train import loop

logger = logging.getLogger("jaxscale")

MAX_RETRIES = 3          # Ray retries of a group whose worker or node died
PROBE_TIMEOUT_S = 120.0  # how long the workdir probe waits for every node
PROGRESS_EVERY_S = 10.0  # driver progress line at most this often (and on every finished group)


def _import_ray():
  try:
    import ray
  except ImportError:
    raise JaxscaleError("--engine ray needs Ray: pip install 'jaxscale[ray]' (or use --engine local)") from None
  return ray


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__


def connect(address: str = ""):
  """Connects to the Ray cluster at `address` ("auto", "HOST:PORT"), or starts one on this machine."""
  ray = _import_ray()
  # Ray starts its services with subprocess (fork + exec), which JAX warns about needlessly.
  warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
  try:
    # "local" starts a new cluster here even where `ray start` left an address file behind.
    ray.init(address=address or "local", include_dashboard=False, log_to_driver=True)
  except (ConnectionError, RuntimeError, ValueError) as e:
    where = f"at {address}" if address else "on this machine"
    raise JaxscaleError(f"cannot connect to a Ray cluster {where} ({_first_line(e)}); start one with "
                        "`ray start --head` and pass --address auto, or leave --address out") from None
  return ray


# ----------------------------------------------------------------------------- dependencies

def dependencies(config: ConfigDict, groups: list[grid.Group]) -> dict[str, set[str]]:
  """For each group id, the ids of the groups it needs finished first.

  A fine-tune cell starts from its pretraining cell's parameters; a cell with a KD weight
  (:func:`grid.kd_alpha` > 0) loads the teacher's (exactly when :func:`grid.group_config` names one),
  and so does a subset chosen by the teacher's difficulty scores (:func:`grid.scores_from_teacher`).
  """
  owner = {cell.id: g.id for g in groups for cell in g.cells}
  teacher = grid.teacher_of(config.study).id
  needs: dict[str, set[str]] = {}
  for g in groups:
    deps = set()
    for cell in g.cells:
      if cell.kind == grid.FINETUNE:
        deps.add(owner[cell.pretrain_cell().id])
      if grid.kd_alpha(config, cell) > 0 or (grid.selects_by_scores(cell) and grid.scores_from_teacher(config.study)):
        deps.add(owner[teacher])
    deps.discard(g.id)
    needs[g.id] = deps
  return needs


# ----------------------------------------------------------------------------- remote side

def _probe(path: str) -> str:
  """Runs on a node: the token the driver wrote at `path`, or "" when this node cannot read it."""
  try:
    with open(path, encoding="utf-8") as f:
      return f.read()
  except OSError:
    return ""


def _cpu_devices(config: ConfigDict) -> int:
  """A worker's CPU devices: ``config.engine.cpu_devices``, or for 0 the CPUs Ray gave its task."""
  count = int(config.engine.cpu_devices)
  if count:
    return count
  import ray
  return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))


def _train(config: ConfigDict, group: grid.Group, workdir: str, board) -> dict[str, Any]:
  """Runs on a worker: trains one group; returns its results, or the one line of a user error."""
  from jaxscale.progress import setup_logging
  from jaxscale.train import sharding
  setup_logging()  # the worker's log lines (e.g. "resuming ... from step N") reach the driver through Ray
  sharding.use_cpu_devices(_cpu_devices(config))  # the worker's first task; later ones find JAX started
  sharding.enable_compilation_cache()
  if board is not None:
    board.started.remote(group.id)
  p = runner.paths(workdir)
  cfg = grid.group_config(config, group, p["cells"])
  group_dir = os.path.join(p["groups"], group.id)
  trained, t0 = loop.finished(group_dir) is None, time.time()
  try:
    pruning.prepare(config, group, p["cells"])
    results = loop.train_group(cfg, group.stage, [runner.run_of(config, c, p["cells"]) for c in group.cells],
                               group_dir, show_progress=False)
  except loop.Preempted:
    raise  # SIGTERM on the worker: Ray retries the task, which resumes from the saved checkpoint
  except JaxscaleError as e:
    return {"error": str(e)}
  return {"results": results, "trained": trained, "t0": t0, "t1": time.time(), "pid": os.getpid()}


class _Board:
  """A Ray actor that knows which groups have started (the driver's "running" count)."""

  def __init__(self):
    self.ids: set[str] = set()

  def started(self, group_id: str) -> None:
    self.ids.add(group_id)

  def snapshot(self) -> set[str]:
    return set(self.ids)


# ----------------------------------------------------------------------------- driver

def check_workdir_visible(ray, workdir: str) -> None:
  """Refuses `workdir` unless every alive node of the cluster reads the token the driver writes there."""
  from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
  token = uuid.uuid4().hex
  path = os.path.join(workdir, f".ray-probe-{token}")
  atomic_write_text(path, token)
  try:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(path)
            for n in nodes]
    try:
      seen = ray.get(refs, timeout=PROBE_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
      raise JaxscaleError(f"the Ray nodes did not answer the workdir probe within {PROBE_TIMEOUT_S:.0f} s; "
                          "check the cluster with `ray status`") from None
  finally:
    os.remove(path)
  blind = [n.get("NodeManagerAddress", n["NodeID"]) for n, got in zip(nodes, seen) if got != token]
  if blind:
    raise JaxscaleError(
        f"workdir {workdir} is not visible on {len(blind)} of {len(nodes)} Ray nodes ({', '.join(blind)}); "
        "the groups' checkpoints and parameters live there: use a --workdir on a file system every node mounts")


def _resources(config: ConfigDict) -> dict[str, Any]:
  """Ray task options for one group from ``config.engine.resources`` (a JSON object of amounts)."""
  amounts = dict(json.loads(config.engine.resources))
  opts: dict[str, Any] = {"num_cpus": amounts.pop("CPU", 0), "num_gpus": amounts.pop("GPU", 0)}
  if amounts:
    opts["resources"] = amounts
  # A device held by a finished task's process is released only when that process exits.
  if opts["num_gpus"] or amounts:
    opts["max_calls"] = 1
  return opts


def _group_images(cfg: ConfigDict, group: grid.Group, results: list[dict]) -> int:
  return sum(int(r["steps"]) for r in results) * int(cfg[group.stage].optim.batch_size)


class _Status:
  """The driver's progress line: groups done / running / pending, images/s over the cluster, ETA."""

  def __init__(self, config: ConfigDict, todo: list[grid.Group], enabled: bool):
    self.flops = {g.id: sum(runner.cell_flops(config, c) for c in g.cells) for g in todo}
    self.total, self.enabled = len(todo), enabled
    self.t0, self.last = time.monotonic(), -float("inf")
    self.done_flops, self.images = 0.0, 0

  def finished(self, group: grid.Group, images: int) -> None:
    self.done_flops += self.flops[group.id]
    self.images += images

  def line(self, done: int, running: int, pending: int) -> str:
    elapsed = time.monotonic() - self.t0
    rate = self.done_flops / elapsed if self.done_flops else 0.0
    left = sum(self.flops.values()) - self.done_flops
    eta = format_duration(left / rate) if rate else "?"
    return (f"study (ray)  groups {done}/{self.total} done, {running} running, {pending} pending  "
            f"{self.images / max(elapsed, 1e-9):,.0f} img/s  "
            + (f"ETA {eta}" if done < self.total else f"took {format_duration(elapsed)}"))

  def show(self, done: int, running: int, pending: int, force: bool = False) -> None:
    now = time.monotonic()
    if self.enabled and (force or now - self.last >= PROGRESS_EVERY_S):
      print(self.line(done, running, pending), file=sys.stderr, flush=True)
      self.last = now


def _fail(ray, inflight: dict, message: str) -> None:
  for ref in inflight:
    ray.cancel(ref, force=True)  # killed mid-group like a SIGKILL: a rerun resumes from its checkpoint
  raise JaxscaleError(message)


def run_cells(config: ConfigDict, workdir: str, address: str = "", show_progress: bool = True
              ) -> list[dict[str, Any]]:
  """Trains every group with unfinished cells as Ray tasks; appends their records; returns all records."""
  ray = connect(address)
  try:
    check_workdir_visible(ray, workdir)
    _schedule(ray, config, workdir, show_progress)
  finally:
    ray.shutdown()
  return records.read(runner.paths(workdir)["records"])


def _schedule(ray, config: ConfigDict, workdir: str, show_progress: bool) -> None:
  p = runner.paths(workdir)
  done = records.resume(p["records"])
  groups = grid.groups(config)
  needs = dependencies(config, groups)
  finished = {g.id for g in groups if all(c.id in done for c in g.cells)}
  todo = [g for g in groups if g.id not in finished]
  if done:
    logger.info("resuming: %d of %d groups already done", len(finished), len(groups))
  status = _Status(config, todo, show_progress)
  board = ray.remote(num_cpus=0)(_Board).remote()
  task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=[loop.Preempted])(_train)
  opts = _resources(config)
  waiting, inflight = list(todo), {}
  while waiting or inflight:
    if not inflight and not any(needs[g.id] <= finished for g in waiting):
      raise RuntimeError(f"groups wait on groups that never run: {[g.id for g in waiting]}")
    for g in [g for g in waiting if needs[g.id] <= finished]:
      waiting.remove(g)
      inflight[task.options(**opts, name=f"group {g.id}").remote(config, g, workdir, board)] = g
    ready, _ = ray.wait(list(inflight), num_returns=1, timeout=PROGRESS_EVERY_S)
    for ref in ready:
      group = inflight.pop(ref)
      out = _result(ray, inflight, ref, group)
      cfg = grid.group_config(config, group, p["cells"])
      runner.keep_results(cfg, workdir, group, done, out["results"])
      finished.add(group.id)
      status.finished(group, _group_images(cfg, group, out["results"]) if out["trained"] else 0)
    started = ray.get(board.snapshot.remote())
    running = sum(g.id in started for g in inflight.values())
    status.show(len(finished) - (len(groups) - len(todo)), running, len(waiting) + len(inflight) - running,
                force=bool(ready))


def _result(ray, inflight: dict, ref, group: grid.Group) -> dict[str, Any]:
  """The task's output; a user error, or a group that failed past its retries, stops the study."""
  try:
    out = ray.get(ref)
  except ray.exceptions.RayTaskError as e:
    cause = e.cause
    if isinstance(cause, JaxscaleError):
      _fail(ray, inflight, _first_line(cause))
    raise cause if isinstance(cause, BaseException) else e
  except ray.exceptions.RayError as e:
    _fail(ray, inflight, f"group {group.id} failed {MAX_RETRIES + 1} times on the Ray cluster "
                         f"({type(e).__name__}); run the same command again to resume from its checkpoint")
  if "error" in out:
    _fail(ray, inflight, out["error"])
  return out
