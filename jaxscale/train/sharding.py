"""The device mesh, batch sharding and parameter shardings.

The mesh has two named axes, ``("data", "fsdp")``. Batches are split over both (FSDP is data
parallel too); parameters are laid out by the models' logical-axis annotations, so large weights
are sharded over ``fsdp`` and everything else is replicated. The same code runs on one device, on
simulated host devices and on several processes (after :func:`initialize_distributed`).
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

AXES = ("data", "fsdp")
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


def mesh_shape(data: int, fsdp: int, num_devices: int) -> tuple[int, int]:
  """Resolves ``-1`` (all remaining devices) and checks the product; raises JaxscaleError."""
  if data == -1 and fsdp == -1:
    raise JaxscaleError("only one of config.mesh.data and config.mesh.fsdp may be -1")
  if data == -1 or fsdp == -1:
    known = fsdp if data == -1 else data
    if known < 1 or num_devices % known:
      raise JaxscaleError(
          f"mesh axis of size {known} does not divide the {num_devices} devices; "
          f"set config.mesh.data and config.mesh.fsdp to divisors of {num_devices}")
    other = num_devices // known
    data, fsdp = (other, fsdp) if data == -1 else (data, other)
  if data * fsdp != num_devices:
    raise JaxscaleError(
        f"mesh data={data} x fsdp={fsdp} = {data * fsdp} does not match the {num_devices} devices; "
        f"set config.mesh.data * config.mesh.fsdp = {num_devices} (or one of them to -1)")
  return data, fsdp


def make_mesh(mesh_config: Any, devices: list | None = None) -> Mesh:
  """A ``("data", "fsdp")`` mesh over all (global) devices from ``config.mesh``."""
  devices = jax.devices() if devices is None else devices
  data, fsdp = mesh_shape(int(mesh_config.data), int(mesh_config.fsdp), len(devices))
  # Order devices process by process so each process holds a contiguous block of the batch.
  ordered = sorted(devices, key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(ordered, dtype=object).reshape(data, fsdp), AXES)


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


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data axes; other axes whole."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles this process's local batch slices into global arrays sharded on the batch axes."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def param_shardings(params: Any, mesh: Mesh) -> Any:
  """NamedShardings for a parameter state from the models' logical annotations."""
  from jaxscale.models import partitioning
  return partitioning.param_shardings(params, mesh, fsdp_axis="fsdp")


def to_host(tree: Any) -> Any:
  """Fetches a (possibly sharded across processes) pytree to NumPy on every process."""
  from jax.experimental import multihost_utils

  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
  return jax.tree_util.tree_map(fetch, tree)
