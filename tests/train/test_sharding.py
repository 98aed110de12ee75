"""Mesh construction and batch-size checks (mesh shapes are checked without devices)."""

import json
import os
import subprocess
import sys
import types

import jax
import pytest

from jaxscale.errors import JaxscaleError
from jaxscale.train import sharding


@pytest.mark.parametrize("runs,data,fsdp,n,want", [
    (1, -1, 1, 8, (1, 8, 1)), (1, 2, -1, 8, (1, 2, 4)), (1, 2, 4, 8, (1, 2, 4)), (-1, 1, 1, 8, (8, 1, 1)),
    (2, -1, 2, 8, (2, 2, 2)), (1, 1, 1, 1, (1, 1, 1))])
def test_mesh_shape(runs, data, fsdp, n, want):
  assert sharding.mesh_shape(runs, data, fsdp, n) == want


@pytest.mark.parametrize("runs,data,fsdp,n", [(1, 3, 1, 8), (1, -1, 3, 8), (1, 2, 2, 8), (1, -1, -1, 8),
                                              (3, -1, 1, 8)])
def test_mesh_that_does_not_divide_is_one_line_error(runs, data, fsdp, n):
  with pytest.raises(JaxscaleError) as e:
    sharding.mesh_shape(runs, data, fsdp, n)
  assert "\n" not in str(e.value) and "config.mesh" in str(e.value)


def test_make_mesh_on_local_devices():
  mesh = sharding.make_mesh(types.SimpleNamespace(runs=1, data=-1, fsdp=1))
  assert mesh.axis_names == ("runs", "data", "fsdp")
  assert mesh.shape["data"] == jax.device_count()


def test_batch_not_divisible():
  mesh = sharding.make_mesh(types.SimpleNamespace(runs=1, data=-1, fsdp=1))
  sharding.check_batch_size(32 * mesh.shape["data"], mesh, "config.pretrain.optim.batch_size")
  fake = types.SimpleNamespace(shape={"runs": 1, "data": 4, "fsdp": 2})
  with pytest.raises(JaxscaleError, match="not divisible by the data-parallel size 8"):
    sharding.check_batch_size(20, fake, "config.pretrain.optim.batch_size")


def test_initialize_distributed_is_noop_on_one_host():
  assert sharding.initialize_distributed({}) is False
  assert sharding.initialize_distributed({"SLURM_JOB_NUM_NODES": "1"}) is False


@pytest.mark.parametrize("axes, devices, runs, want", [
    ((0, -1, 1), 1, 48, (1, 1, 1)),     # one device: nothing to spread
    ((0, -1, 1), 2, 1, (1, 2, 1)),      # a single run is data parallel
    ((0, -1, 1), 2, 5, (2, 1, 1)),      # several runs: one share per device (5 is padded to 6)
    ((0, -1, 1), 8, 3, (2, 4, 1)),      # the largest divisor of 8 not above 3, the rest data parallel
    ((0, -1, 1), 8, 64, (8, 1, 1)),
    ((0, 2, 1), 8, 64, (4, 2, 1)),      # an explicit data axis is kept
    ((0, -1, 2), 8, 3, (2, 2, 2)),
])
def test_auto_runs_axis(axes, devices, runs, want):
  assert sharding.mesh_shape(*axes, devices, num_runs=runs) == want


@pytest.mark.parametrize("axes, devices, runs, want", [
    ((0, -1, 1), 2, 1, (2, 1, 1)),      # a single run on a CPU: padded, so its mesh is the group's
    ((0, -1, 1), 8, 3, (8, 1, 1)),
    ((0, -1, 2), 8, 3, (4, 1, 2)),
    ((0, 2, 1), 8, 1, (4, 2, 1)),
])
def test_auto_runs_axis_of_whole_runs_takes_every_device(axes, devices, runs, want):
  assert sharding.mesh_shape(*axes, devices, num_runs=runs, whole_runs=True) == want


def test_auto_runs_axis_that_cannot_fit_says_so():
  with pytest.raises(JaxscaleError, match="does not match the 2 devices"):
    sharding.mesh_shape(0, 3, 1, 2, num_runs=4)


_DEVICES = ("import jax, json, os; from jaxscale.train import sharding; "
            "got = sharding.use_cpu_devices({n}); print(json.dumps([got, jax.device_count()]))")


@pytest.mark.parametrize("n, flags, want", [
    (3, "", [3, 3]),                                                  # splits the CPU before JAX starts
    (0, "", [sharding.usable_cores(), sharding.usable_cores()]),      # 0 = one device per core
    (3, "--xla_force_host_platform_device_count=5", [None, 5]),       # XLA_FLAGS wins
])
def test_use_cpu_devices(n, flags, want):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", **({"XLA_FLAGS": flags} if flags else {}))
  out = subprocess.run([sys.executable, "-c", _DEVICES.format(n=n)], env=env, check=True, timeout=120,
                       stdout=subprocess.PIPE, text=True).stdout
  assert json.loads(out.strip().splitlines()[-1]) == want


def test_use_cpu_devices_after_jax_started_does_nothing():
  jax.devices()
  assert sharding.use_cpu_devices(4) is None and jax.device_count() == 1


@pytest.mark.parametrize("axis, runs, want", [(1, 5, 5), (2, 5, 6), (2, 4, 4), (8, 3, 8), (4, 1, 4)])
def test_padded_runs_rounds_up_to_the_runs_axis(axis, runs, want):
  """The group size the engine trains at (and the capacity plan compiles at)."""
  assert sharding.padded_runs(runs, types.SimpleNamespace(shape={"runs": axis})) == want
