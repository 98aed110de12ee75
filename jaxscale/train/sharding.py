"""The device mesh, batch sharding and parameter shardings.

The mesh has three named axes, ``("runs", "data", "fsdp")``. A group of runs is spread over
``runs`` (each device trains whole runs: no communication between them); each run's batch is split
over ``data`` and ``fsdp`` (FSDP is data parallel too) and its parameters are laid out by the
models' logical-axis annotations, so large weights are sharded over ``fsdp`` and everything else is
replicated within a run. The same code runs on one device, on simulated host devices and on several
processes (after :func:`initialize_distributed`).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxscale.errors import JaxscaleError

logger = logging.getLogger("jaxscale")

AXES = ("runs", "data", "fsdp")
BATCH_AXES = ("data", "fsdp")

# Environment variables whose presence means "this process is one of several hosts".
_MULTIHOST_ENV = ("JAX_COORDINATOR_ADDRESS", "MEGASCALE_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES",
                  "SLURM_JOB_NUM_NODES", "OMPI_COMM_WORLD_SIZE")


def initialize_distributed(env: Mapping[str, str] | None = None) -> bool:
  """Calls ``jax.distributed.initialize()`` when launched on several hosts; True if it did.

  Multi-host launches are recognised by their environment (a coordinator address, Cloud TPU worker
  list, SLURM or Open MPI); on a single host this is a no-op, so it is safe to call always.
  """
  env = os.environ if env is None else env
  if jax.distributed.is_initialized():
    return True
  if env.get("SLURM_JOB_NUM_NODES", "1") == "1" and not any(
      k in env for k in _MULTIHOST_ENV if k != "SLURM_JOB_NUM_NODES"):
    return False
  if "TPU_WORKER_HOSTNAMES" in env and "," not in env["TPU_WORKER_HOSTNAMES"]:
    return False
  jax.distributed.initialize()
  logger.info("distributed: process %d of %d, %d devices", jax.process_index(),
              jax.process_count(), jax.device_count())
  return True


def mesh_shape(runs: int, data: int, fsdp: int, num_devices: int, num_runs: int = 1,
               whole_runs: bool = False) -> tuple[int, int, int]:
  """Resolves ``runs = 0`` (auto) and one ``-1`` (all remaining devices), then checks the product.

  Auto gives a group of `num_runs` runs the largest divisor of the devices left by ``data`` and
  ``fsdp`` (``data = -1`` counting as 1) that does not exceed `num_runs`; ``data = -1`` then takes
  what remains. So a group of several runs is spread over the devices and a single run is data
  parallel. With `whole_runs` (a CPU, where each device loops over whole runs) auto gives ``runs``
  every device left, whatever `num_runs` (the group is padded to it): the mesh, and so a run's
  floats, then depend on the device count alone, not on the group. Raises JaxscaleError.
  """
  sizes = [runs, data, fsdp]
  if runs == 0:
    per_run = fsdp * (1 if data == -1 else data)
    left = num_devices // per_run if num_devices % per_run == 0 else 1   # else the check below says why
    most = left if whole_runs else max(1, num_runs)
    sizes[0] = max(d for d in range(1, left + 1) if left % d == 0 and d <= most)
  if sizes.count(-1) > 1:
    raise JaxscaleError("only one of config.mesh.runs, config.mesh.data and config.mesh.fsdp may be -1")
  if -1 in sizes:
    known = int(np.prod([v for v in sizes if v != -1]))
    if known < 1 or num_devices % known:
      raise JaxscaleError(
          f"mesh axes of total size {known} do not divide the {num_devices} devices; "
          f"set config.mesh.runs, .data and .fsdp to divisors of {num_devices}")
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise JaxscaleError(
        f"mesh runs={sizes[0]} x data={sizes[1]} x fsdp={sizes[2]} = {int(np.prod(sizes))} does not match the "
        f"{num_devices} devices; make config.mesh.runs * .data * .fsdp = {num_devices} (or one of them -1)")
  return tuple(sizes)


def make_mesh(mesh_config: Any, devices: list | None = None, num_runs: int = 1) -> Mesh:
  """A ``("runs", "data", "fsdp")`` mesh over all (global) devices from ``config.mesh``, for a group
  of `num_runs` runs (which sizes the ``runs`` axis when ``config.mesh.runs`` is 0, auto; on CPU
  devices auto gives it every device, :func:`mesh_shape`)."""
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(int(mesh_config.runs), int(mesh_config.data), int(mesh_config.fsdp), len(devices),
                     num_runs, whole_runs=devices[0].platform == "cpu")
  # Order devices process by process so each process holds a contiguous block.
  ordered = sorted(devices, key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(ordered, dtype=object).reshape(shape), AXES)


def padded_runs(num_runs: int, mesh: Mesh) -> int:
  """The run count a group of `num_runs` is trained at: rounded up to a multiple of the ``runs``
  axis (the engine fills the gap with copies of a run, discarded after training)."""
  return -(-num_runs // mesh.shape["runs"]) * mesh.shape["runs"]


def put(x: Any, sharding: jax.sharding.Sharding) -> jax.Array:
  """Host-identical values onto a (possibly multi-process) sharding; device arrays pass through."""
  if isinstance(x, jax.Array):
    return x
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def usable_cores() -> int:
  """CPU cores this process may run on."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def use_cpu_devices(count: int) -> int | None:
  """Splits the CPU into `count` devices (0 = :func:`usable_cores`) before JAX starts its backends.

  XLA runs each small op of a tiny model on about one core, so one CPU device leaves the other cores
  idle; several devices, each training some of a group's runs, use them. Does nothing (and returns
  None) once JAX has started or when ``XLA_FLAGS`` already sets ``--xla_force_host_platform_device_count``
  (that choice wins). Returns the count set. Only the CPU backend is affected.
  """
  from jax._src import xla_bridge
  if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
    return None
  if xla_bridge.backends_are_initialized():
    logger.debug("JAX already started; config.engine.cpu_devices=%d not applied", count)
    return None
  count = int(count) or usable_cores()
  jax.config.update("jax_num_cpu_devices", count)
  return count


def data_parallel_size(mesh: Mesh) -> int:
  """How many ways a batch is split (the product of the batch axes)."""
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def check_batch_size(global_batch_size: int, mesh: Mesh, what: str) -> None:
  """Raises JaxscaleError unless the global batch divides over the data-parallel devices and processes."""
  dp = data_parallel_size(mesh)
  if global_batch_size % dp:
    raise JaxscaleError(
        f"{what}={global_batch_size} is not divisible by the data-parallel size {dp} "
        f"(mesh data x fsdp); use a multiple of {dp}")
  if global_batch_size % jax.process_count():
    raise JaxscaleError(
        f"{what}={global_batch_size} is not divisible by the {jax.process_count()} processes")


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def runs_sharding(mesh: Mesh) -> NamedSharding:
  """An array whose leading axis is the runs axis ``[R, ...]``, split over the mesh's ``runs``."""
  return NamedSharding(mesh, P("runs"))


def param_shardings(params: Any, mesh: Mesh) -> Any:
  """NamedShardings for one run's parameter state from the models' logical annotations."""
  from jaxscale.models import partitioning
  return partitioning.param_shardings(params, mesh, fsdp_axis="fsdp")


def with_runs_axis(shardings: Any) -> Any:
  """Prepends the ``runs`` mesh axis to every NamedSharding of a tree (one run -> a group ``[R, ...]``)."""
  return jax.tree_util.tree_map(lambda s: NamedSharding(s.mesh, P("runs", *s.spec)), shardings)


def enable_compilation_cache(directory: str | None = None) -> str | None:
  """Keeps compiled programs on disk so a rerun (or a test worker) does not compile them again.

  The directory is `directory`, else ``$JAXSCALE_COMPILATION_CACHE``, else
  ``~/.cache/jaxscale/xla``; ``JAXSCALE_COMPILATION_CACHE=off`` disables it. A cached program is
  the same executable, so results do not change. Returns the directory used (None when off).
  """
  directory = directory or os.environ.get("JAXSCALE_COMPILATION_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "jaxscale", "xla")
  if directory == "off":
    return None
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory
