"""Stage checkpoints with orbax: parameters, optimizer state, step, RNG and data-iterator state.

A stage directory holds numbered step directories written atomically by an orbax
``CheckpointManager`` (the last ``keep`` are kept). Each step has four items:

* ``params``: the student's parameters as a nested dict (what a teacher or a fine-tune loads);
* ``train``: optimizer state (leaves keyed by position), ``step`` and ``rng``;
* ``data``: the grain iterator state, one JSON file per process;
* ``meta``: JSON describing the run (model, classes, image size, whether it was distilled,
  whether the stage finished and its record).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from jaxscale.errors import JaxscaleError

logger = logging.getLogger("jaxscale")

ITEMS = ("params", "train", "data", "meta")


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


def _params_to_tree(params: nnx.State) -> dict:
  return params.to_pure_dict()


def _flat(tree: Any) -> dict[str, Any]:
  return {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree_util.tree_leaves(tree))}


def _unflat(like: Any, flat: dict[str, Any]) -> Any:
  treedef = jax.tree_util.tree_structure(like)
  return jax.tree_util.tree_unflatten(treedef, [flat[k] for k in sorted(flat)])


def _abstract(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings (what orbax restores into)."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


class StageCheckpoints:
  """The checkpoints of one stage directory."""

  def __init__(self, directory: str, *, keep: int = 2, every_steps: int = 500, read_only: bool = False):
    self.directory = str(directory)
    # Reading needs no read_only manager (orbax only writes on save); create=False keeps it from
    # making the directory.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=every_steps, create=not read_only,
        enable_async_checkpointing=False, save_root_metadata=False)
    import grain.checkpoint  # registers grain's orbax handler  # noqa: F401
    handlers = {"params": ocp.StandardCheckpointHandler(), "train": ocp.StandardCheckpointHandler(),
                "data": grain.checkpoint.CheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS,
                                          item_handlers=handlers)

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> "StageCheckpoints":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def should_save(self, step: int) -> bool:
    return self._manager.should_save(step)

  def save(self, state: Any, data_iterator: Any, meta: dict, *, force: bool = False) -> bool:
    """Saves `state` (a TrainState) at its step; returns whether a checkpoint was written."""
    import grain.checkpoint
    step = int(jax.device_get(state.step))
    args = ocp.args.Composite(
        params=ocp.args.StandardSave(_params_to_tree(state.params)),
        train=ocp.args.StandardSave({"opt_state": _flat(state.opt_state), "step": state.step,
                                     "rng": state.rng}),
        data=grain.checkpoint.CheckpointSave(data_iterator),
        meta=ocp.args.JsonSave(meta))
    saved = self._manager.save(step, args=args, force=force)
    if saved:
      self._manager.wait_until_finished()
    return saved

  def read_meta(self, step: int | None = None) -> dict | None:
    """The ``meta`` item of `step` (default the latest), or None if there is no checkpoint."""
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    return dict(self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

  def restore_params(self, like: nnx.State, shardings: Any, step: int | None = None) -> nnx.State:
    """The ``params`` item restored into the structure of `like` (an nnx.State), sharded."""
    step = self.latest_step() if step is None else step
    target = _abstract(_params_to_tree(like), _params_to_tree(shardings))
    got = self._manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))
    params = jax.tree_util.tree_map(lambda x: x, like)  # a copy to fill
    params.replace_by_pure_dict(got["params"])
    return params

  def restore(self, like: Any, shardings: Any, data_iterator: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores a TrainState shaped like `like` (with `shardings`) and the data iterator's state."""
    import grain.checkpoint
    step = self.latest_step() if step is None else step
    params_target = _abstract(_params_to_tree(like.params), _params_to_tree(shardings.params))
    train_target = {"opt_state": _flat(_abstract(like.opt_state, shardings.opt_state)),
                    "step": _abstract(like.step, shardings.step),
                    "rng": _abstract(like.rng, shardings.rng)}
    got = self._manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(params_target),
        train=ocp.args.StandardRestore(train_target),
        data=grain.checkpoint.CheckpointRestore(data_iterator),
        meta=ocp.args.JsonRestore()))
    params = jax.tree_util.tree_map(lambda x: x, like.params)
    params.replace_by_pure_dict(got["params"])
    train = got["train"]
    state = like.replace(step=train["step"], params=params,
                         opt_state=_unflat(like.opt_state, train["opt_state"]), rng=train["rng"])
    return state, dict(got["meta"])


def has_checkpoint(directory: str) -> bool:
  """Whether `directory` holds at least one finished orbax step (cheap; creates nothing)."""
  path = epath.Path(directory)
  if not path.exists():
    return False
  return any(p.is_dir() and p.name.isdigit() for p in path.iterdir())


def open_finished(directory: str, what: str) -> tuple["StageCheckpoints", dict]:
  """Opens a stage directory read-only for its final parameters; raises JaxscaleError if unusable.

  Args:
    directory: a stage directory written by :func:`jaxscale.train.loop.run_stage`.
    what: how to name it in an error ("teacher checkpoint", "pretrain checkpoint").
  """
  if not has_checkpoint(directory):
    raise JaxscaleError(f"{what} {directory} has no checkpoint; train that stage first or fix the path")
  ckpt = StageCheckpoints(directory, read_only=True)
  meta = ckpt.read_meta()
  if not meta or not meta.get("finished"):
    ckpt.close()
    raise JaxscaleError(f"{what} {directory} is not a finished stage; finish training it first")
  return ckpt, meta
