"""Mesh construction and batch-size checks (mesh shapes are checked without devices)."""

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
