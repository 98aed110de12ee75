"""The capacity plan of a study: compile each model's train step ahead of time and read its cost.

For every model of the grid, in every stage it trains (pretrain, fine-tune; with the teacher's
forward when that stage is distilled), :func:`compiled_step` compiles the train step at the
config's batch size and mesh without running it (``jax.jit(...).lower(...).compile()``). The
compiled executable says

* per-device memory: ``memory_analysis()``: arguments + outputs + temporaries - aliased (donated)
  bytes, plus the generated code;
* FLOPs per step: ``cost_analysis()["flops"]`` of the per-device program times the devices, per run
  (the program holds one run per device of the mesh's ``runs`` axis);

Each (model, stage, teacher) program is compiled at the size of its largest group of runs (the
engine vmaps a group's runs on one device), so a group too large for a device is caught too;
:func:`largest_batch` searches the largest per-device batch that fits a device memory by
compiling (memory is affine in the batch: two compiles give the line, a third checks the
prediction, and the search steps down until a compile fits). :func:`capacity_table` adds each
row's grid total (steps x FLOPs per step over the row's cells) and :func:`check_fits` refuses a
grid with a row that cannot fit. The numbers are those of the backend the plan ran on (XLA's CPU
backend lays out memory and fuses differently from a GPU's or a TPU's).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from typing import Any

from ml_collections import ConfigDict

from jaxscale.errors import JaxscaleError
from jaxscale.study import grid

logger = logging.getLogger("jaxscale")

_UNITS = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9, "T": 1e12,
          "TB": 1e12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_bytes(text: str) -> int:
  """``"80GB"`` -> 80e9, ``"80GiB"`` -> 80 * 2**30, ``"123"`` -> 123; JaxscaleError otherwise."""
  m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
  if not m or m.group(2).upper() not in _UNITS:
    raise JaxscaleError(f"cannot read the memory size {text!r}; write e.g. 80GB, 16GiB or 512MB")
  return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def format_bytes(n: float) -> str:
  return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


# ----------------------------------------------------------------------------- one compile

@dataclasses.dataclass(frozen=True)
class StepCost:
  """What one compiled train step costs (one run per device of the ``runs`` axis).

  Attributes:
    memory_bytes: per-device bytes: arguments + outputs + temporaries - aliased + code.
    flops: FLOPs of one run's step over all its devices (per-device program FLOPs x devices / runs).
    memory: the raw ``memory_analysis()`` fields (bytes).
  """
  memory_bytes: int
  flops: float
  memory: dict


def stage_classes(config: ConfigDict, stage: str) -> int:
  """Number of classes of the stage's dataset (from tfds metadata; nothing prepared needed)."""
  from jaxscale.data import sources
  return int(sources.num_classes(config[stage].dataset, config.data.data_dir))


def compiled_step(config: ConfigDict, stage: str, model_name: str, batch_size: int, mesh,
                  teacher_model: str = "", runs: int = 0):
  """The train program of `model_name` in `stage` at global `batch_size`, compiled, not run.

  Built by :func:`jaxscale.train.loop.program_spec`, as ``train.loop`` builds it
  (optimizer settings, augmentation, label smoothing, KD temperature and shardings from the
  config) for a group of `runs` runs (0 = one per device of the mesh's ``runs`` axis) and one step
  per dispatch, with the batch arriving from the host (``on_device=False``): the cost of one train
  step, without a group's images kept on device. Abstract arrays only: nothing is allocated. With
  `teacher_model` the step carries the teacher's forward. Returns the ``jax.stages.Compiled``.
  """
  chunk, args = _chunk_and_arguments(config, stage, model_name, batch_size, mesh, teacher_model, runs)
  return chunk.lower(*args).compile()


def _chunk_and_arguments(config: ConfigDict, stage: str, model_name: str, batch_size: int, mesh,
                         teacher_model: str = "", runs: int = 0, k: int = 1) -> tuple[Any, tuple]:
  """The jitted train chunk of :func:`compiled_step` and its arguments for `k` steps, as shapes."""
  from jaxscale.train import loop
  runs = runs or int(mesh.shape["runs"])
  c = ConfigDict(config.to_dict())
  c.model.name = model_name
  c[stage].optim.batch_size = int(batch_size)
  program = loop.program_spec(c, stage, runs, stage_classes(config, stage), False, mesh, teacher_model)
  data = loop.host_batch_shapes(k, runs, int(batch_size), int(config.data.image_size), 3)
  return program.chunk, loop.chunk_arguments(program, runs, k, data)


def step_cost(compiled, num_devices: int, runs: int = 1, looped_over: int = 0) -> StepCost:
  """Per-device memory and one run's FLOPs of a compiled step of `runs` runs (see :class:`StepCost`).

  `looped_over`: the size of the mesh's ``runs`` axis when each device loops over its runs
  (``train.steps.runs_one_by_one``): XLA's cost analysis counts a loop's body once, so the
  per-device count is then one run's share on that device, not its runs' sum."""
  m = compiled.memory_analysis()
  fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
            "alias_size_in_bytes", "generated_code_size_in_bytes")
  memory = {f: int(getattr(m, f, 0) or 0) for f in fields}
  total = (memory["argument_size_in_bytes"] + memory["output_size_in_bytes"] + memory["temp_size_in_bytes"]
           - memory["alias_size_in_bytes"] + memory["generated_code_size_in_bytes"])
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per program
    cost = cost[0] if cost else {}
  flops = float((cost or {}).get("flops", 0.0)) * num_devices / (looped_over or runs)
  return StepCost(memory_bytes=int(total), flops=flops, memory=memory)


# ----------------------------------------------------------------------------- measured speed

@dataclasses.dataclass(frozen=True)
class Rate:
  """Training speed measured on this machine by running one of the study's own train programs.

  Attributes:
    flops_per_s: the analytic training FLOPs (``train.steps.run_flops``, as the plan counts them)
      that program did per second, all devices together.
    compile_s: seconds it took to compile (short when the compilation cache held it).
    what: which program was timed, in words.
  """
  flops_per_s: float
  compile_s: float
  what: str


def _zeros_like(shapes: Any) -> Any:
  """Device arrays of zeros with the shapes, dtypes and shardings of `shapes` (ShapeDtypeStructs)."""
  import jax
  import numpy as np

  def make(s):
    x = np.zeros(s.shape, s.dtype)
    return jax.device_put(x, s.sharding) if getattr(s, "sharding", None) is not None else jax.device_put(x)
  return jax.tree_util.tree_map(make, shapes)


def time_program(chunk, args: tuple, min_s: float = 1.0, max_calls: int = 20) -> tuple[float, float]:
  """(compile seconds, seconds per call) of jitted train `chunk` on zero inputs shaped as `args`
  (state, consts, teacher params, data, lr, valid), but for `valid`: every step of every run is one
  of its own (the engine skips a run's dispatch when none is, so zeros would time an empty call).

  Runs it once to warm up, then until `min_s` seconds have passed (at least 2, at most
  `max_calls` calls); the state it returns is fed back, as the engine does (it is donated)."""
  import jax
  import numpy as np
  t0 = time.perf_counter()
  compiled = chunk.lower(*args).compile()
  compile_s = time.perf_counter() - t0
  state, *rest = _zeros_like(args[:-1])
  valid = args[-1]
  rest.append(jax.device_put(np.ones(valid.shape, valid.dtype), valid.sharding))
  state = jax.block_until_ready(compiled(state, *rest))[0]
  calls, t0 = 0, time.perf_counter()
  while calls < 2 or (calls < max_calls and time.perf_counter() - t0 < min_s):
    state = jax.block_until_ready(compiled(state, *rest))[0]
    calls += 1
  return compile_s, (time.perf_counter() - t0) / calls


def measure_rate(config: ConfigDict, steps_per_call: int = 4) -> Rate:
  """Times the study's train program with the most FLOPs over the grid (its largest group, as the
  engine lays it out, `steps_per_call` steps per call) and returns its speed (:class:`Rate`).

  One program stands for all: smaller models run at a lower FLOP rate, so their time is under-
  estimated, but they hold a small share of the grid's FLOPs. Takes one compile and about a second.
  """
  from jaxscale import models
  from jaxscale.train import sharding as sharding_lib
  from jaxscale.train.steps import num_train_steps, run_flops
  size = int(config.data.image_size)

  def step_flops(model, stage, teacher):
    classes = stage_classes(config, stage)
    t = models.flops_per_image(teacher, classes, size) if teacher else 0.0
    return run_flops(models.flops_per_image(model, classes, size), t, int(config[stage].optim.batch_size))

  def total(item):
    (model, stage, teacher), spec = item
    return step_flops(model, stage, teacher) * sum(
        num_train_steps(config[stage].optim, c.df if c.kind == grid.FINETUNE else c.dp) for c in spec["cells"])

  (model, stage, teacher), spec = max(_rows_of_groups(config).items(), key=total)
  mesh = sharding_lib.make_mesh(config.mesh, num_runs=spec["runs"])
  runs = sharding_lib.padded_runs(spec["runs"], mesh)
  chunk, args = _chunk_and_arguments(config, stage, model, int(config[stage].optim.batch_size), mesh,
                                     teacher, runs, k=steps_per_call)
  compile_s, call_s = time_program(chunk, args)
  rate = step_flops(model, stage, teacher) * spec["runs"] * steps_per_call / call_s  # padding is waste
  kd = f" distilled from {teacher}" if teacher else ""
  return Rate(rate, compile_s, f"{model}'s {stage} step{kd}, {runs} runs on {mesh.devices.size} device(s)")


# ----------------------------------------------------------------------------- batch search

def largest_batch(cost_at, limit_bytes: int, start: int, max_batch: int = 1 << 16) -> int:
  """The largest per-device batch b with ``cost_at(b).memory_bytes <= limit_bytes`` (0 if none).

  Memory is affine in the batch, ``m(b) = m0 + k * b``: `cost_at` at `start` and `2 * start` gives
  the line, the prediction is compiled, and while it does not fit the search steps down by a
  tenth (XLA may pick other layouts at other batches, so the line is a guide, not a proof). The
  answer is a batch that compiled and fit. `cost_at(b)` compiles at per-device batch b (per run).
  """
  m1, m2 = cost_at(start).memory_bytes, cost_at(2 * start).memory_bytes
  slope = max((m2 - m1) / start, 1.0)
  guess = int(min(max_batch, (limit_bytes - (m1 - slope * start)) // slope))
  while guess >= 1:
    if cost_at(guess).memory_bytes <= limit_bytes:
      return guess
    guess = min(guess - 1, int(guess * 0.9))
  return 0


# ----------------------------------------------------------------------------- the table

def _rows_of_groups(config: ConfigDict) -> dict[tuple[str, str, str], dict[str, Any]]:
  """(model, stage, teacher or "") -> ``{"cells": [...], "runs": largest group}`` over the study's groups.

  A group is one program: it carries the teacher's forward when any of its runs distils (its plain
  runs then pay for it too), and its runs are vmapped side by side, so its memory grows with its
  size (``config.engine.group_size`` caps it).
  """
  teacher = grid.teacher_of(config.study).model
  out: dict[tuple[str, str, str], dict[str, Any]] = {}
  for g in grid.groups(config):
    t = teacher if g.distils else ""
    row = out.setdefault((g.model, g.stage, t), {"cells": [], "runs": 0})
    row["cells"].extend(g.cells)
    row["runs"] = max(row["runs"], len(g.cells))
  return out


def device_memory(default: int | None = None) -> int | None:
  """The first device's memory limit in bytes (``memory_stats()["bytes_limit"]``), else `default`."""
  import jax
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # CPU backends may not implement memory_stats
    stats = {}
  return int(stats["bytes_limit"]) if "bytes_limit" in stats else default


def capacity_table(config: ConfigDict, device_memory_bytes: int | None = None,
                   search: bool = True) -> list[dict[str, Any]]:
  """One row per distinct train program of the study's groups: (model, stage, teacher).

  Each row is compiled at the size of its largest group (runs vmapped side by side, padded to the
  mesh's ``runs`` axis), so its memory is what the engine will allocate per device.

  Args:
    config: a validated study config.
    device_memory_bytes: memory of one device; None = the backend's own limit where it reports
      one (GPU/TPU), else no limit (CPU): then ``max_batch`` is None and nothing is refused.
    search: search the largest per-device batch (3+ extra compiles per row).

  Row fields: ``model``, ``stage``, ``teacher`` ("" = plain), ``batch`` (global, per run),
  ``device_batch``, ``replicas`` (data-parallel size), ``devices``, ``group_runs`` and
  ``runs_per_device`` (of the largest group), ``memory_bytes`` (per device), ``flops_per_step``,
  ``max_batch`` (largest per-run per-device batch that fits at that group size, or None),
  ``fits`` (bool or None),
  ``cells``, ``steps`` (summed over the row's cells), ``grid_flops`` (= steps x flops_per_step,
  ``flops_per_step`` being one run's),
  ``backend`` (``jax.default_backend()``), ``memory`` (raw memory_analysis fields).
  """
  limit = device_memory(None) if device_memory_bytes is None else int(device_memory_bytes)
  programs = _rows_of_groups(config)
  rows = []
  for i, ((model, stage, teacher), spec) in enumerate(programs.items()):
    logger.info("compiling %s's %s step%s (%d of %d train programs)%s", model, stage, teacher and
                f" distilled from {teacher}", i + 1, len(programs), "" if i else ": seconds to a minute each on a CPU")
    rows.append(_capacity_row(config, model, stage, teacher, spec, limit, search))
  return rows


def _capacity_row(config: ConfigDict, model: str, stage: str, teacher: str, spec: dict[str, Any],
                  limit: int | None, search: bool) -> dict[str, Any]:
  """`capacity_table`'s row of one train program (`spec`: its largest group's runs and its cells)."""
  import jax

  from jaxscale.train import sharding as sharding_lib
  from jaxscale.train.steps import num_train_steps, runs_one_by_one
  mesh = sharding_lib.make_mesh(config.mesh, num_runs=spec["runs"])   # as the engine makes it
  replicas = sharding_lib.data_parallel_size(mesh)
  devices = mesh.devices.size
  batch = int(config[stage].optim.batch_size)
  sharding_lib.check_batch_size(batch, mesh, f"config.{stage}.optim.batch_size")
  runs = sharding_lib.padded_runs(spec["runs"], mesh)   # as the engine pads the group
  looped = int(mesh.shape["runs"]) if runs_one_by_one(mesh) else 0
  costs: dict[int, Any] = {}     # this program's step cost per device batch, compiled once each

  def cost_at(device_batch):
    if device_batch not in costs:
      compiled = compiled_step(config, stage, model, device_batch * replicas, mesh, teacher, runs=runs)
      costs[device_batch] = step_cost(compiled, devices, runs, looped)
    return costs[device_batch]

  cost = cost_at(batch // replicas)
  cells = spec["cells"]
  steps = sum(num_train_steps(config[stage].optim, c.df if c.kind == grid.FINETUNE else c.dp)
              for c in cells)
  fits = None if limit is None else cost.memory_bytes <= limit
  max_batch = largest_batch(cost_at, limit, max(batch // replicas, 1)) if (search and limit) else None
  return {"model": model, "stage": stage, "teacher": teacher, "batch": batch,
          "device_batch": batch // replicas, "replicas": replicas, "devices": devices,
          "group_runs": runs, "runs_per_device": runs // mesh.shape["runs"],
          "memory_bytes": cost.memory_bytes, "flops_per_step": cost.flops,
          "max_batch": max_batch, "fits": fits, "limit_bytes": limit, "cells": len(cells),
          "steps": steps, "grid_flops": steps * cost.flops, "backend": jax.default_backend(),
          "memory": cost.memory}


def check_fits(rows: list[dict[str, Any]]) -> None:
  """Raises JaxscaleError (one line: model, batch, memory) for the first row that does not fit."""
  for r in rows:
    if r["fits"] is False:
      kd = f" distilled from {r['teacher']}" if r["teacher"] else ""
      field = f"config.{r['stage']}.optim.batch_size"
      if r.get("max_batch") is None:
        hint = f"lower {field}"
      elif r["max_batch"] == 0:
        hint = "not even 1 example per device fits: shard the model (config.mesh.fsdp) or pick a smaller one"
      else:
        hint = f"lower {field} to {r['max_batch'] * r['replicas']} or less"
      runs = r.get("runs_per_device", 1)
      group = f" x {runs} runs of a group" if runs > 1 else ""
      if runs > 1:
        hint += ", or lower config.engine.group_size"
      raise JaxscaleError(
          f"{r['model']} ({r['stage']}{kd}) at batch {r['batch']} ({r['device_batch']} per device){group} "
          f"needs {format_bytes(r['memory_bytes'])} per device, more than the "
          f"{format_bytes(r['limit_bytes'])} of device memory; {hint}")


def print_table(rows: list[dict[str, Any]], flops_per_s: float = 0.0, rate_source: str = "stated") -> None:
  """Prints the plan table, the grid total, what a "-" under "max b/dev" means and, given
  `flops_per_s`, the wall time at that rate."""
  from jaxscale.progress import format_duration, format_flops
  print(f"{'model':<18} {'stage':<9} {'teacher':<16} {'batch':>6} {'/dev':>5} {'runs/dev':>8} {'mem/dev':>10} "
        f"{'GFLOP/step':>11} {'max b/dev':>9} {'cells':>6} {'steps':>9} {'FLOPs':>9}")
  for r in rows:
    max_b = "-" if r["max_batch"] is None else str(r["max_batch"])
    print(f"{r['model']:<18} {r['stage']:<9} {r['teacher'] or '-':<16} {r['batch']:>6} "
          f"{r['device_batch']:>5} {r['runs_per_device']:>8} {format_bytes(r['memory_bytes']):>10} "
          f"{r['flops_per_step'] / 1e9:>11.1f} "
          f"{max_b:>9} {r['cells']:>6} {r['steps']:>9,} {r['grid_flops']:>9.3g}")
  if not rows:
    return
  total = sum(r["grid_flops"] for r in rows)
  limit = rows[0]["limit_bytes"]
  rate = format_flops(flops_per_s).replace("FLOPs", "FLOP/s")
  print(f"grid total {format_flops(total)} (XLA's count of the compiled steps)"
        + (f"; about {format_duration(total / flops_per_s)} at {rate} ({rate_source}, all devices together)"
           if flops_per_s else ""))
  print(f"numbers from XLA's {rows[0]['backend'].upper()} backend on {rows[0]['devices']} device(s)"
        + (f", device memory {format_bytes(limit)}" if limit else ", no device memory limit given")
        + "; another backend (GPU, TPU) fuses and lays out memory differently")
  if any(r["max_batch"] is None for r in rows):
    print("max b/dev '-': the largest batch was not searched, "
          + ("as `jaxscale plan --no-search` and `jaxscale study --dry-run` skip it" if limit else
             "as this backend reports no device memory (a CPU); pass --device-memory SIZE to search one"))
