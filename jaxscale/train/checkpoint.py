"""Checkpoints of the training engine, with orbax.

Two kinds:

* A **group directory** holds the group's resumable train state: numbered step directories written
  atomically (and asynchronously) by an orbax ``CheckpointManager`` (the last ``keep`` are kept), each
  with a ``state`` item (parameters, optimizer state, step and divergence flags, all with a leading
  runs axis) and a ``meta`` item (JSON: the runs, their losses so far, wall time).
* A **run directory** holds one finished run's final parameters (``final/``, orbax) and
  ``run.json`` (model, classes, image size, stage, Dp, distilled, teacher): what a fine-tune or a
  distilled student loads. ``run.json`` is written last, so its presence means the run finished.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from jaxscale.errors import JaxscaleError
from jaxscale.fileio import atomic_write_text

logger = logging.getLogger("jaxscale")

RUN_FILE = "run.json"
FINAL_DIR = "final"


def _is_remote(path: str) -> bool:
  return "://" in str(path)


def check_shared_directory(directory: str) -> None:
  """On several processes, refuses a local directory that the processes do not all see.

  Process 0 writes a token file; every process must then find it. Remote paths (``gs://``) are
  shared by construction. Raises JaxscaleError naming the directory otherwise.
  """
  if jax.process_count() == 1 or _is_remote(directory):
    return
  from jax.experimental import multihost_utils
  path = epath.Path(directory)
  token = int(multihost_utils.broadcast_one_to_all(np.int64(uuid.uuid4().int % (2 ** 62))))
  probe = path / f".shared-probe-{token}"
  if jax.process_index() == 0:
    path.mkdir(parents=True, exist_ok=True)
    probe.write_text("ok")
  multihost_utils.sync_global_devices(f"jaxscale-probe-write-{token}")
  seen = multihost_utils.process_allgather(np.int32(probe.exists()))
  multihost_utils.sync_global_devices(f"jaxscale-probe-read-{token}")
  if jax.process_index() == 0:
    probe.unlink(missing_ok=True)
  if not np.all(seen):
    raise JaxscaleError(
        f"work directory {directory} is not shared by all {jax.process_count()} processes; "
        "on several hosts use a shared filesystem or a gs:// path for --workdir")


def _flat(tree: Any) -> dict[str, Any]:
  return {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree_util.tree_leaves(tree))}


def _unflat(like: Any, flat: dict[str, Any]) -> Any:
  treedef = jax.tree_util.tree_structure(like)
  return jax.tree_util.tree_unflatten(treedef, [flat[k] for k in sorted(flat)])


def _abstract(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings (what orbax restores into)."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _state_item(state: Any) -> dict:
  return {"params": state.params, "opt_state": _flat(state.opt_state), "step": state.step,
          "diverged_at": state.diverged_at}


class GroupCheckpoints:
  """The resumable checkpoints of one group directory."""

  def __init__(self, directory: str, *, keep: int = 2):
    self.directory = str(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=True, save_root_metadata=False)
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"),
                                          item_handlers=handlers)

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> "GroupCheckpoints":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Starts an asynchronous save of `state` and `meta` at `step`, both copied before it returns.

    A step that is already saved is kept (the state at a step is the same)."""
    self._manager.wait_until_finished()
    if step in self._manager.all_steps():
      return
    # The train step donates the state it is given: the background writer gets its own copy, so the
    # next dispatch cannot reuse the buffers it is still reading (zero-copy host views on the CPU).
    # The meta too: the trainer goes on appending to its per-step losses while the writer runs, and
    # a meta serialised late would claim steps the saved state has not taken.
    state, meta = _copy(state), json.loads(json.dumps(meta))
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(_state_item(state)),
                                                     meta=ocp.args.JsonSave(meta)), force=True)

  def latest_meta(self) -> dict:
    """The meta of the latest checkpoint, read without its state (to check it fits before restoring)."""
    got = self._manager.restore(self.latest_step(), args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(got["meta"])

  def restore(self, like: Any, shardings: Any) -> tuple[Any, dict]:
    """The latest state, shaped like `like` (a TrainState) on `shardings`, and its meta."""
    step = self.latest_step()
    target = _abstract(_state_item(like), _state_item(shardings))
    got = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                              meta=ocp.args.JsonRestore()))
    item = got["state"]
    state = like.replace(step=item["step"], params=item["params"],
                         opt_state=_unflat(like.opt_state, item["opt_state"]), diverged_at=item["diverged_at"])
    return state, dict(got["meta"])


def _copy(tree: Any) -> Any:
  """A copy of every array of `tree` in new buffers: on the host when this process holds all of
  them (no program to compile), else on the devices in one compiled program (a ``jnp.copy`` per
  leaf would compile and dispatch one program per leaf shape)."""
  leaves = jax.tree_util.tree_leaves(tree)
  if all(not isinstance(x, jax.Array) or x.is_fully_addressable for x in leaves):
    return jax.tree_util.tree_map(lambda x: np.array(x, copy=True), tree)
  return _device_copy(tree)


@jax.jit
def _device_copy(tree: Any) -> Any:
  return jax.tree_util.tree_map(jnp.copy, tree)


def save_run(directory: str, params: Any, meta: dict) -> None:
  """Writes one finished run: its parameters (a nested dict of arrays) and ``run.json`` last."""
  path = epath.Path(directory)
  path.mkdir(parents=True, exist_ok=True)
  final = path / FINAL_DIR
  if final.exists():  # a save interrupted before run.json landed: write it again
    final.rmtree()
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(final, jax.tree_util.tree_map(np.asarray, params))
  atomic_write_text(os.fspath(path / RUN_FILE), json.dumps(meta, sort_keys=True))


def run_meta(directory: str) -> dict | None:
  """The ``run.json`` of a finished run directory, or None when it has not finished."""
  path = epath.Path(directory) / RUN_FILE
  if not path.exists():
    return None
  return json.loads(path.read_text())


def open_finished(directory: str, what: str) -> dict:
  """The meta of a finished run directory; raises JaxscaleError if it is missing or unfinished.

  Args:
    directory: a run directory written by :func:`save_run`.
    what: how to name it in an error ("teacher checkpoint", "pretrain checkpoint").
  """
  meta = run_meta(directory)
  if meta is None:
    raise JaxscaleError(f"{what} {directory} is not a finished run (no {RUN_FILE}); train that stage "
                        "first or fix the path")
  return meta


def load_params(directory: str, like: Any, shardings: Any = None) -> Any:
  """A finished run's parameters restored into the structure of `like` (nested dict), optionally sharded."""
  if shardings is None:
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one), like)
  else:
    target = _abstract(like, shardings)
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(epath.Path(directory) / FINAL_DIR, target)
