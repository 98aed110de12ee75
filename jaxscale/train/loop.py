"""Train a group of runs as one program: prepare, create or restore the state, train, evaluate.

A **group** is R runs of one model on one stage (pretrain or fine-tune), their subset sizes and step
counts free (the group trains as long as its longest run; a run's steps past its own last one are
masked and change nothing): in a study, e.g. the plain (or the distilled) pretraining runs of one
model, or its fine-tunes (:mod:`jaxscale.study.grid`); a single ``jaxscale train`` run is a group of one. :func:`train_group`
reads like a training script: :func:`prepare_inputs` draws every run's subset, example order and
learning-rate table; :func:`initial_params` builds (or loads) the students; the loop dispatches
K scanned steps at a time (:func:`jaxscale.train.steps.make_train_chunk`) and saves the group every
``checkpoint.every_steps``; :func:`evaluate` measures every run on the whole eval split.

Every random choice comes from a run's seed and a purpose name (:func:`purpose_key`,
:func:`jaxscale.data.seeding.derive_seed`): the subset (``<stage>/subset``, independent of the size,
so subsets are nested), the example order (``<stage>/data``), the augmentation (``<stage>/augment``),
the initialisation (``init``); a fine-tune's new head starts at zero. None depends on the group a
run is trained in; on a CPU, where each device loops over its runs (:func:`jaxscale.train.steps.runs_one_by_one`)
and the mesh depends on the device count alone, neither does any float: a run's record is bit for bit
the same alone or in a group of any size.

The trainer returns results; it writes only checkpoints, each finished run's parameters (when the
run names an ``out_dir``) and the group's ``result.json``. Records are the caller's business.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import logging
import os
import signal
import threading
import time
from typing import Any, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from ml_collections import ConfigDict

from jaxscale import models
from jaxscale.models import transfer, vit
from jaxscale.data import builders, pipeline, sources, subsets
from jaxscale.data import scores as data_scores
from jaxscale.data.seeding import derive_seed
from jaxscale.errors import JaxscaleError
from jaxscale.fileio import atomic_write_text
from jaxscale.progress import Progress
from jaxscale.train import checkpoint as ckpt_lib
from jaxscale.train import evals as evals_lib
from jaxscale.train import sharding as sharding_lib
from jaxscale.train import steps as steps_lib

logger = logging.getLogger("jaxscale")

STAGES = ("pretrain", "finetune")
RESULT_FILE = "result.json"  # in a group directory once every run of the group finished


class Preempted(JaxscaleError):
  """SIGTERM arrived; the group was saved and stopped (run it again to resume)."""


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a group.

  Attributes:
    name: unique within the group (a study uses the cell id).
    seed: the run's seed (subset, order, augmentation, init).
    size: its subset size (Dp for pretraining, Df for fine-tuning).
    alpha: KD weight in [0, 1]; 0 is a plain run.
    uniform_teacher: the KD term's teacher outputs are uniform (the smoothed control: label smoothing).
    lr: the run's peak learning rate (0 = the model's, :func:`jaxscale.train.steps.peak_lr`).
    init: fine-tuning: the finished pretraining run directory to start from.
    out_dir: where to save the finished run's parameters ("" = not saved).
    meta: extra fields for the saved run's ``run.json`` (e.g. dp, distilled, teacher).
    selection: how its subset is chosen (:mod:`jaxscale.data.subsets`: "random" or a prototype rule).
    scores: a prototype rule's difficulty scores file (:mod:`jaxscale.data.scores`).
  """
  name: str
  seed: int
  size: int
  alpha: float = 0.0
  uniform_teacher: bool = False
  lr: float = 0.0
  init: str = ""
  out_dir: str = ""
  meta: tuple = ()
  selection: str = "random"
  scores: str = ""


def purpose_key(seed: int, purpose: str) -> jax.Array:
  """A JAX key for one purpose: ``fold_in(key(seed), derive_seed(0, purpose))``."""
  return jax.random.fold_in(jax.random.key(int(seed)), derive_seed(0, purpose))


def finished(group_dir: str) -> list[dict] | None:
  """The results of a finished group directory, or None."""
  path = os.path.join(group_dir, RESULT_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)["runs"]


@contextlib.contextmanager
def _sigterm_flag() -> Iterator[threading.Event]:
  """Yields an Event set on SIGTERM while the block runs (main thread only; else never set)."""
  event = threading.Event()
  if threading.current_thread() is not threading.main_thread():
    yield event
    return
  previous = signal.signal(signal.SIGTERM, lambda *_: event.set())
  try:
    yield event
  finally:
    signal.signal(signal.SIGTERM, previous)


# ----------------------------------------------------------------------------- inputs

_READ_LOCK = threading.Lock()  # a split is read once even when a group compiles ahead in another thread


def _device_split(name: str, split: str, data_dir: str, image_size: int, channels: int, mesh):
  """A whole (small) split as uint8 images and labels on the device, read and placed once per process."""
  with _READ_LOCK:
    return _read_device_split(name, split, data_dir, image_size, channels, mesh)


@functools.lru_cache(maxsize=2)
def _read_device_split(name: str, split: str, data_dir: str, image_size: int, channels: int, mesh):
  source = sources.open_source(name, split, data_dir)
  images, labels = pipeline.read_images(source, np.arange(len(source)), image_size, channels)
  repl = sharding_lib.replicated(mesh)
  return sharding_lib.put(images, repl), sharding_lib.put(labels, repl)


@dataclasses.dataclass(frozen=True)
class GroupInputs:
  """What a group trains on (:func:`prepare_inputs`).

  Attributes:
    num_classes, channels: of the stage's dataset.
    total_steps: T, the group's step count: its longest run's.
    steps: [R] each run's own step count (:func:`jaxscale.train.steps.num_train_steps` of its size).
    hashes: [R] each run's subset manifest hash.
    lr: float32 [R, T_pad], each run's learning rate per step, its own schedule over its own steps and
      0 after them (T_pad = T rounded up to whole dispatches).
    valid: bool [T_pad, R], True on each run's own steps (False after its last one).
    on_device: the images are on the device (``device``), else read per dispatch (``reader``).
    device: ``images``, ``labels`` on device (or their shapes) and ``index`` int32 [R, T_pad, B]; or None.
    reader: a :class:`jaxscale.data.pipeline.DispatchReader`, or None.
  """
  num_classes: int
  channels: int
  total_steps: int
  steps: list
  hashes: list
  lr: np.ndarray
  valid: np.ndarray
  on_device: bool
  device: dict | None = None
  reader: Any = None


def prepare_inputs(config: ConfigDict, stage: str, runs: Sequence[Run], mesh, *,
                   shapes_only: bool = False) -> GroupInputs:
  """Every run's subset, order table and learning rates, and the images on device or a grain reader
  (:class:`GroupInputs`).

  ``shapes_only`` (for :func:`compile_ahead`): a group's own subset of images is not read or placed;
  ``device`` then holds its ``jax.ShapeDtypeStruct``s. A whole split is read anyway: it is placed once
  per process and every group uses it.
  """
  s, e = config[stage], config.engine
  name, data_dir, size_px = s.dataset, config.data.data_dir, int(config.data.image_size)
  if name.startswith("jaxscale_"):
    builders.ensure_built(name, data_dir)
  pipeline.check_image_size(size_px, int(s.crop_padding))
  source = sources.open_source(name, s.train_split, data_dir)
  labels = sources.load_labels(name, s.train_split, data_dir)
  batch, k = int(s.optim.batch_size), int(e.steps_per_dispatch)
  _check_runs(config, stage, runs, len(labels))
  steps = [steps_lib.num_train_steps(s.optim, r.size) for r in runs]   # each run's own
  total = max(steps)
  padded = -(-total // k) * k
  order, hashes, lr = [], [], []
  peak = steps_lib.peak_lr(s.optim, config.model.name)
  for r, n in zip(runs, steps):   # each run's tables as alone, padded to the group's length
    ranking = data_scores.load(r.scores) if r.selection != "random" else None
    idx = subsets.nested_subset(labels, r.size, derive_seed(r.seed, f"{stage}/subset"), r.selection, ranking)
    hashes.append(subsets.manifest_hash(idx, r.selection))
    table = pipeline.example_order(idx, derive_seed(r.seed, f"{stage}/data"), batch, 0, n)
    order.append(np.concatenate([table, np.repeat(table[-1:], padded - n, axis=0)]))
    lr.append(np.concatenate([steps_lib.learning_rate_table(s.optim, n, r.lr or peak),
                              np.zeros(padded - n, np.float32)]))
  order = np.stack(order)                                              # [R, T_pad, B]
  out = {"num_classes": int(sources.num_classes(name, data_dir)), "channels": pipeline.image_channels(source),
         "total_steps": total, "steps": steps, "hashes": hashes, "lr": np.ascontiguousarray(np.stack(lr)),
         "valid": np.arange(padded)[:, None] < np.asarray(steps)[None, :]}   # the fields of the GroupInputs returned
  used = np.unique(order)
  need_mb = pipeline.images_mb(len(used), size_px, out["channels"])
  budget = float(e.device_data_mb)
  if e.data_on_device == "always" and need_mb > budget:
    raise JaxscaleError(f"config.engine.data_on_device='always' needs {need_mb:.0f} MB for the images of "
                        f"{name} but config.engine.device_data_mb={budget:g}; raise the budget or use 'auto'")
  out["on_device"] = e.data_on_device == "always" or (e.data_on_device == "auto" and need_mb <= budget)
  if out["on_device"]:
    out["device"] = _device_images(config, stage, source, order, used, out["channels"], mesh, shapes_only)
  else:
    out["reader"] = pipeline.DispatchReader(source, order, steps_per_dispatch=k, image_size=size_px,
                                            channels=out["channels"], prefetch=int(config.data.prefetch),
                                            num_workers=int(config.data.num_workers))
  return GroupInputs(**out)


def _check_runs(config: ConfigDict, stage: str, runs: Sequence[Run], num_images: int) -> None:
  """The config's checks that need the registry or the split's size: ``lr_by_model``'s model names
  and each run's subset size against the `num_images` of the stage's train split."""
  s = config[stage]
  unknown = sorted(set(s.optim.lr_by_model) - set(models.names()))
  if unknown:
    raise JaxscaleError(f"config.{stage}.optim.lr_by_model names unknown model(s) {', '.join(unknown)}; "
                        f"valid models: {', '.join(models.names())}")
  for r in runs:
    if r.size > num_images:
      raise JaxscaleError(f"config.{stage}.size={r.size} is larger than the {num_images} images of "
                          f"{s.dataset}:{s.train_split}; lower it")


def _device_images(config: ConfigDict, stage: str, source, order: np.ndarray, used: np.ndarray, channels: int,
                   mesh, shapes_only: bool) -> dict:
  """``images``, ``labels`` on the device and the gather ``index`` [R, T_pad, B] into them: the whole
  split when it fits ``config.engine.device_data_mb`` (placed once per process: every group's program
  has one shape), else the `used` images (only their shapes with `shapes_only`)."""
  s, size_px = config[stage], int(config.data.image_size)
  if pipeline.images_mb(len(source), size_px, channels) <= float(config.engine.device_data_mb):
    images, labels = _device_split(s.dataset, s.train_split, config.data.data_dir, size_px, channels, mesh)
    return {"images": images, "labels": labels, "index": order.astype(np.int32)}
  repl = sharding_lib.replicated(mesh)
  if shapes_only:
    images = jax.ShapeDtypeStruct((len(used), size_px, size_px, channels), np.uint8, sharding=repl)
    labels = jax.ShapeDtypeStruct((len(used),), np.int32, sharding=repl)
  else:
    host_images, host_labels = pipeline.read_images(source, used, size_px, channels)
    images, labels = sharding_lib.put(host_images, repl), sharding_lib.put(host_labels, repl)
  return {"images": images, "labels": labels, "index": np.searchsorted(used, order).astype(np.int32)}


def _dispatch_data(inputs: GroupInputs, d: int, k: int, batch_iter) -> dict:
  """The ``data`` argument of dispatch `d`: device gather indices, or the images grain read."""
  if inputs.on_device:
    dev = inputs.device
    index = np.ascontiguousarray(np.swapaxes(dev["index"][:, d * k:(d + 1) * k], 0, 1))   # [K, R, B]
    return {"images": dev["images"], "labels": dev["labels"], "index": index}
  images, labels = next(batch_iter)
  return {"images": images, "labels": labels}


# ----------------------------------------------------------------------------- models

@functools.lru_cache(maxsize=32)
def _abstract_params(name: str, num_classes: int, image_size: int, dtype) -> tuple[Any, dict]:
  """(graphdef, abstract nnx.State of the params) of a model; cached, since building a model's Python
  object graph costs about 0.2 s and every group, teacher and checkpoint load asks for it (read only)."""
  abstract = nnx.eval_shape(lambda: models.create(name, num_classes, image_size, rngs=nnx.Rngs(0), dtype=dtype))
  graphdef, state = nnx.split(abstract, nnx.Param)
  return graphdef, state


@functools.lru_cache(maxsize=16)
def _init_fn(name: str, num_classes: int, image_size: int, dtype):
  def init(key):
    model = models.create(name, num_classes, image_size, rngs=nnx.Rngs(jax.random.wrap_key_data(key)),
                          dtype=dtype)
    return nnx.split(model, nnx.Param)[1].to_pure_dict()
  return jax.jit(init)


def _fresh_params(name: str, num_classes: int, image_size: int, dtype, keys: np.ndarray) -> dict:
  """Host parameters of len(keys) freshly initialised models (runs axis first), one key each.

  One compiled initialiser per model serves every group size."""
  init = _init_fn(name, num_classes, image_size, dtype)
  per_run = jax.device_get([init(jnp.asarray(key)) for key in keys])
  return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *per_run)


def _keys(runs: Sequence[Run], purpose: str) -> np.ndarray:
  return np.stack([np.asarray(jax.random.key_data(purpose_key(r.seed, purpose))) for r in runs])


def _load_run(directory: str, what: str, dtype) -> tuple[Any, dict, dict]:
  """(graphdef, host params, run.json) of a finished run directory."""
  meta = ckpt_lib.open_finished(directory, what)
  try:
    graphdef, state = _abstract_params(meta["model"], meta["num_classes"], meta["image_size"], dtype)
  except JaxscaleError:
    raise JaxscaleError(f"{what} {directory} holds model {meta['model']!r}, which this version does not know")
  return graphdef, ckpt_lib.load_params(directory, state.to_pure_dict()), meta


def _with_backbone(abstract: dict, backbone: dict) -> dict:
  """`backbone`'s parameters with a fresh (zero) head for a model shaped like `abstract`
  (:func:`jaxscale.models.transfer.zero_head`); a ViT's position embedding resized if needed."""
  out = {k: v for k, v in backbone.items() if k != transfer.HEAD}
  out[transfer.HEAD] = transfer.zero_head(abstract)
  if "pos_embed" in out and np.shape(out["pos_embed"]) != abstract["pos_embed"].shape:
    grid = int(round(abstract["pos_embed"].shape[1] ** 0.5))
    out["pos_embed"] = vit.interpolate_pos_embed(jnp.asarray(out["pos_embed"]), grid)
  return out


def initial_params(config: ConfigDict, stage: str, runs: Sequence[Run], num_classes: int, dtype
                   ) -> tuple[Any, dict, list[dict | None]]:
  """(graphdef, params [R, ...], init metas): fresh models for pretraining; for fine-tuning each
  run's pretrained backbone with a zero head (nothing random, nothing compiled)."""
  name, size_px = config.model.name, int(config.data.image_size)
  graphdef, abstract = _abstract_params(name, num_classes, size_px, dtype)
  if stage == "pretrain":
    return graphdef, _fresh_params(name, num_classes, size_px, dtype, _keys(runs, "init")), [None] * len(runs)
  abstract = abstract.to_pure_dict()
  # Each pretrained backbone is read once (several fine-tunes may start from it), the reads in parallel.
  dirs = list(dict.fromkeys(r.init for r in runs))
  with concurrent.futures.ThreadPoolExecutor(min(8, len(dirs))) as pool:
    loaded = dict(zip(dirs, pool.map(lambda d: _load_run(d, "pretrain checkpoint", dtype), dirs)))
  params, metas = [], []
  for r in runs:
    _, backbone, meta = loaded[r.init]
    if meta.get("stage") != "pretrain":
      raise JaxscaleError(f"{r.init} is a {meta.get('stage')} run; config.finetune.init_checkpoint must name "
                          "a pretrain run directory")
    if meta["model"] != name:
      raise JaxscaleError(f"pretrain checkpoint {r.init} holds model {meta['model']!r}, not "
                          f"config.model.name={name!r}; point config.finetune.init_checkpoint at a pretrain "
                          "of this model")
    params.append(_with_backbone(abstract, backbone))
    metas.append(meta)
  return graphdef, jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *params), metas


def load_teacher(config: ConfigDict, stage: str, num_classes: int, dtype) -> dict:
  """The distillation teacher of `stage`, checked against the stage's data."""
  d = config.distill
  graphdef, params, meta = _load_run(d.teacher_checkpoint, "teacher checkpoint", dtype)
  want = teacher_model(config)
  if meta["model"] != want:
    raise JaxscaleError(f"incompatible teacher: {d.teacher_checkpoint} holds model {meta['model']!r} but "
                        f"config.distill.teacher_model asks for {want!r}; fix one of them")
  if meta["num_classes"] != num_classes or meta["image_size"] != config.data.image_size:
    raise JaxscaleError(
        f"incompatible teacher: {d.teacher_checkpoint} predicts {meta['num_classes']} classes at "
        f"{meta['image_size']}px but the {stage} data has {num_classes} classes at "
        f"{config.data.image_size}px; use a teacher trained on the same label set or change config.distill.stage")
  return {"graphdef": graphdef, "params": params, "model": meta["model"]}


# ----------------------------------------------------------------------------- evaluation

def _eval_chunks(name: str, split: str, data_dir: str, image_size: int, channels: int, chunk: int):
  """The eval split as padded chunks (``image``, ``label``, ``mask``), read once per process."""
  with _READ_LOCK:
    return _read_eval_chunks(name, split, data_dir, image_size, channels, chunk)


@functools.lru_cache(maxsize=4)
def _read_eval_chunks(name: str, split: str, data_dir: str, image_size: int, channels: int, chunk: int):
  source = sources.open_source(name, split, data_dir)
  return tuple(pipeline.eval_chunks(source, chunk_size=chunk, image_size=image_size, channels=channels))


def evaluate(config: ConfigDict, stage: str, graphdef, params, params_sharding, mesh, channels: int
             ) -> dict[str, np.ndarray]:
  """Top-1 error and mean cross-entropy of every run on the stage's whole eval split ([R] each)."""
  s = config[stage]
  eval_chunk = steps_lib.make_eval_chunk(graphdef, mesh, params_sharding)
  chunks = _eval_chunks(s.dataset, s.eval_split, config.data.data_dir, int(config.data.image_size), channels,
                        int(s.optim.eval_batch_size))
  repl = sharding_lib.replicated(mesh)
  sums = [eval_chunk(params, {k: sharding_lib.put(v, repl) for k, v in chunk.items()}) for chunk in chunks]
  sums = jax.device_get(sums)
  count = float(sum(x["count"] for x in sums))
  errors = np.sum([x["errors"] for x in sums], axis=0)
  loss = np.sum([x["loss"] for x in sums], axis=0)
  return {"eval_error": errors / count, "eval_loss": loss / count, "eval_count": int(count)}


def _along_budget(config: ConfigDict, stage: str, program: Program, inputs: GroupInputs, mesh, names: list[str],
                  group_dir: str, start: int, state) -> evals_lib.AlongBudget:
  """The group's evaluations along its budget (``config.<stage>.eval_at``, each run's at its own fractions
  of its own steps) on the eval subset, with the eval program of :func:`evaluate`; the subset is placed
  on the device once."""
  k, totals = int(config.engine.steps_per_dispatch), inputs.steps[:len(names)]
  steps = [evals_lib.eval_steps(config[stage].eval_at, total, k) for total in totals]
  repl = sharding_lib.replicated(mesh)
  chunks = [{key: sharding_lib.put(v, repl) for key, v in c.items()}
            for c in (evals_lib.subset_chunks(config, stage, inputs.channels) if any(steps) else ())]
  eval_chunk = steps_lib.make_eval_chunk(program.graphdef, mesh, program.state_sh.params)
  along = evals_lib.AlongBudget(steps, names, lambda params: [eval_chunk(params, c) for c in chunks], group_dir,
                                start, totals, int(config[stage].optim.batch_size))
  along.start(start, state)
  return along


# ----------------------------------------------------------------------------- the group

def _pad_runs(runs: Sequence[Run], mesh) -> list[Run]:
  """Repeats the first run up to :func:`sharding.padded_runs` (the copies are discarded)."""
  runs = list(runs)
  return runs + [runs[0]] * (sharding_lib.padded_runs(len(runs), mesh) - len(runs))


def train_group(config: ConfigDict, stage: str, runs: Sequence[Run], group_dir: str, *,
                show_progress: bool = True, progress_delay_s: float = 0.0, desc: str = "") -> list[dict]:
  """Trains, evaluates and (optionally) saves every run of a group; returns one result per run.

  A group that finished is not retrained: its saved results are returned. An unfinished one
  resumes from its last checkpoint in `group_dir`.

  Args:
    config: a validated config; ``config.model.name`` is the group's model and
      ``config.distill.teacher_checkpoint`` the teacher of its runs with ``alpha > 0``.
    stage: ``"pretrain"`` or ``"finetune"``.
    runs: the runs (subset sizes and step counts may differ; each trains its own steps, as alone).
    group_dir: checkpoints and ``result.json``.

  Returns:
    Per run, in order: ``name, eval_error, eval_loss, eval_count, steps`` (its own), ``diverged_at`` (the step
    whose loss or gradient was not finite, or None), ``losses`` (per step), ``subset_hash``,
    ``params`` (count), ``num_classes``, ``init`` (the run.json it started from, fine-tuning),
    ``wall_s`` (its share of the group's time), ``group_size``, ``mesh`` (the group's devices along runs, data, fsdp).

  Raises:
    JaxscaleError: a user-fixable problem (one line); :class:`Preempted` after SIGTERM.
  """
  if stage not in STAGES:
    raise JaxscaleError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
  done = finished(group_dir)
  if done is not None:
    return done
  t_start = time.time()
  mesh = sharding_lib.make_mesh(config.mesh, num_runs=len(runs))
  sharding_lib.check_batch_size(int(config[stage].optim.batch_size), mesh, f"config.{stage}.optim.batch_size")
  ckpt_lib.check_shared_directory(group_dir)
  names = [r.name for r in runs]
  runs = _pad_runs(runs, mesh)
  inputs = prepare_inputs(config, stage, runs, mesh)
  program, params = build_program(config, stage, runs, inputs, mesh)
  with ckpt_lib.GroupCheckpoints(group_dir, keep=int(config.checkpoint.keep)) as ckpts:
    resumed = _restore_or_init(program, params, ckpts, names, config, desc or stage)
    del params   # the host copy is no longer needed
    wall_before = resumed.wall_s
    along = _along_budget(config, stage, program, inputs, mesh, names, group_dir, resumed.step, resumed.state)
    job = GroupJob(config, stage, tuple(names), program, inputs, t_start)
    state, losses = _train_loop(job, resumed, ckpts, Display(show_progress, progress_delay_s, desc),
                                at_boundary=along)
    result = evaluate(config, stage, program.graphdef, state.params, program.state_sh.params, mesh,
                      inputs.channels)
    host_params = jax.device_get(state.params)
    diverged = np.asarray(jax.device_get(state.diverged_at))
  wall = wall_before + time.time() - t_start
  results = []
  for i, r in enumerate(runs[:len(names)]):
    if r.out_dir:
      meta = {"stage": stage, "model": config.model.name, "num_classes": inputs.num_classes,
              "image_size": int(config.data.image_size), "dataset": config[stage].dataset, **dict(r.meta)}
      ckpt_lib.save_run(r.out_dir, jax.tree_util.tree_map(lambda x: x[i], host_params), meta)
    results.append(_run_result(i, r.name, result, inputs, program, mesh, diverged, losses[i],
                               round(wall / len(names), 3), len(names), along))
  atomic_write_text(os.path.join(group_dir, RESULT_FILE), json.dumps({"runs": results}, sort_keys=True))
  return results


def _run_result(i: int, name: str, result: dict, inputs: GroupInputs, program: Program, mesh, diverged,
                losses: list, wall_s: float, group_size: int, along) -> dict:
  """Run `i`'s entry of `train_group`'s results (its keys are listed there)."""
  return {
      "name": name, "eval_error": float(result["eval_error"][i]), "eval_loss": float(result["eval_loss"][i]),
      "eval_count": result["eval_count"], "steps": inputs.steps[i],
      "diverged_at": int(diverged[i]) if diverged[i] else None, "losses": losses,
      "subset_hash": inputs.hashes[i], "params": program.param_count,
      "num_classes": inputs.num_classes, "init": program.init_metas[i], "wall_s": wall_s,
      "group_size": group_size, "mesh": [int(mesh.shape[a]) for a in sharding_lib.AXES],
      "curve": along.curve(i, losses, result)}


def _dtype(config: ConfigDict):
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.model.dtype]


def distils_in(config: ConfigDict, stage: str) -> bool:
  """Whether `stage` is one in which runs with a KD weight distil (``config.distill.stage``)."""
  return config.distill.stage in (stage, "both")


def teacher_model(config: ConfigDict) -> str:
  """The teacher's model name: ``config.distill.teacher_model``, else the student's own."""
  return config.distill.teacher_model or config.model.name


def stage_flops(config: ConfigDict, stage: str, model: str, teacher: str, steps: int) -> float:
  """Estimated training FLOPs of one run of `model` for `steps` steps of `stage`'s batch, with the
  forward of `teacher` ("" = none) on every image (:func:`jaxscale.train.steps.run_flops`)."""
  classes = sources.num_classes(config[stage].dataset, config.data.data_dir)
  size = int(config.data.image_size)
  t = models.flops_per_image(teacher, classes, size) if teacher else 0.0
  return steps_lib.run_flops(models.flops_per_image(model, classes, size), t,
                             int(steps) * int(config[stage].optim.batch_size))


def _distils(config: ConfigDict, stage: str, runs: Sequence[Run]) -> bool:
  return distils_in(config, stage) and any(r.alpha > 0 for r in runs)


def _teacher_model(config: ConfigDict, stage: str, runs: Sequence[Run]) -> str:
  """The model whose forward the group's program runs for KD ("" when no run distils)."""
  return teacher_model(config) if _distils(config, stage, runs) else ""


@dataclasses.dataclass(frozen=True)
class Program:
  """A group's train program and what it needs besides the state (:func:`program_spec`,
  :func:`build_program`).

  Attributes:
    graphdef: the student's structure; one_run: one run's abstract parameters.
    settings: :class:`jaxscale.train.steps.OptimizerSettings`.
    param_sh, state_sh: the parameters' and the group state's shardings; abstract: the state's shapes.
    teacher_abstract, teacher_sh: the teacher's parameter shapes and shardings (None without KD).
    in_sh: the train chunk's input shardings (:func:`jaxscale.train.steps.chunk_input_shardings`).
    chunk: the jitted train chunk (:func:`jaxscale.train.steps.make_train_chunk`).
    init_metas, param_count, consts, teacher_params: set by :func:`build_program` (None in a spec):
      each run's starting run.json, the parameter count, the per-run constants on device, the teacher.
  """
  graphdef: Any
  settings: steps_lib.OptimizerSettings
  param_sh: Any
  abstract: Any
  state_sh: Any
  teacher_abstract: Any
  teacher_sh: Any
  in_sh: dict
  chunk: Any
  one_run: Any
  init_metas: list | None = None
  param_count: int | None = None
  consts: dict | None = None
  teacher_params: Any = None


def program_spec(config: ConfigDict, stage: str, num_runs: int, num_classes: int, on_device: bool,
                 mesh, teacher_model: str = "") -> Program:
  """Everything about a group's programs that needs neither data nor parameters: the graphdefs,
  optimizer settings, shardings, the abstract state and the jitted train chunk of `num_runs` runs of
  ``config.model.name`` at ``config[stage].optim.batch_size``; with `teacher_model` the chunk runs
  its forward (KD). A :class:`Program` without the fields :func:`build_program` sets.
  """
  dtype, size_px, o = _dtype(config), int(config.data.image_size), config[stage].optim
  graphdef, one_run = _abstract_params(config.model.name, num_classes, size_px, dtype)
  settings = steps_lib.optimizer_settings(o, flat=mesh.shape["fsdp"] == 1)
  param_sh = sharding_lib.with_runs_axis(sharding_lib.param_shardings(one_run, mesh).to_pure_dict())
  params = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct((num_runs, *x.shape), x.dtype),
                                  one_run.to_pure_dict())
  abstract = jax.eval_shape(lambda p: steps_lib.create_state(p, settings), params)
  state_sh = steps_lib.state_shardings(abstract, settings, param_sh, mesh)
  teacher_graphdef = teacher_abstract = teacher_sh = None
  if teacher_model:
    teacher_graphdef, teacher_state = _abstract_params(teacher_model, num_classes, size_px, dtype)
    teacher_sh = sharding_lib.param_shardings(teacher_state, mesh).to_pure_dict()
    teacher_abstract = teacher_state.to_pure_dict()
  spec = steps_lib.StepSpec(
      graphdef=graphdef, settings=settings, batch_size=int(o.batch_size),
      crop_padding=int(config[stage].crop_padding),
      flip=bool(config[stage].flip) and sources.allows_flip(config[stage].dataset),
      resized_crop=bool(config[stage].random_resized_crop),
      label_smoothing=float(o.label_smoothing), teacher_graphdef=teacher_graphdef,
      temperature=float(config.distill.temperature), on_device=on_device)
  return Program(graphdef=graphdef, settings=settings, param_sh=param_sh, abstract=abstract, state_sh=state_sh,
                 teacher_abstract=teacher_abstract, teacher_sh=teacher_sh,
                 in_sh=steps_lib.chunk_input_shardings(spec, mesh), one_run=one_run,
                 chunk=steps_lib.make_train_chunk(spec, mesh, state_sh, teacher_sh))


def _shaped(x, sharding) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)


def chunk_arguments(program: Program, num_runs: int, k: int, data: dict) -> tuple:
  """The arguments of `program`'s train chunk for one dispatch of `k` steps, as shapes with their
  shardings: (state, consts, teacher params, data, lr, valid). `data` holds device arrays or shapes
  (see :func:`jaxscale.train.steps.make_train_chunk`)."""
  in_sh = program.in_sh
  teacher = None if program.teacher_sh is None else jax.tree_util.tree_map(
      _shaped, program.teacher_abstract, program.teacher_sh)
  return (jax.tree_util.tree_map(_shaped, program.abstract, program.state_sh),
          {"alpha": jax.ShapeDtypeStruct((num_runs,), np.float32, sharding=in_sh["consts"]["alpha"]),
           "key": jax.ShapeDtypeStruct((num_runs, 2), np.uint32, sharding=in_sh["consts"]["key"]),
           "uniform": jax.ShapeDtypeStruct((num_runs,), np.bool_, sharding=in_sh["consts"]["uniform"])},
          teacher,
          jax.tree_util.tree_map(lambda x, sh: x if isinstance(x, jax.Array) else _shaped(x, sh), data, in_sh["data"]),
          jax.ShapeDtypeStruct((k, num_runs), np.float32, sharding=in_sh["lr"]),
          jax.ShapeDtypeStruct((k, num_runs), np.bool_, sharding=in_sh["valid"]))


def host_batch_shapes(k: int, num_runs: int, batch: int, image_size: int, channels: int) -> dict:
  """Shapes of a dispatch's images and labels read on the host (the grain path)."""
  return {"images": jax.ShapeDtypeStruct((k, num_runs, batch, image_size, image_size, channels), np.uint8),
          "labels": jax.ShapeDtypeStruct((k, num_runs, batch), np.int32)}


def build_program(config: ConfigDict, stage: str, runs: Sequence[Run], inputs: GroupInputs, mesh
                  ) -> tuple[Program, dict]:
  """(the group's compiled train program with what it runs on: shardings, per-run constants (KD
  weight, augmentation key, uniform teacher) and the teacher; the initial parameters [R, ...] on the host)."""
  dtype, classes = _dtype(config), inputs.num_classes
  distil = _distils(config, stage, runs)
  if distil and not config.distill.teacher_checkpoint:
    raise JaxscaleError("a run distils (alpha > 0) but config.distill.teacher_checkpoint is empty; "
                        "name a finished pretrain run directory")
  teacher = load_teacher(config, stage, classes, dtype) if distil else None
  program = program_spec(config, stage, len(runs), classes, inputs.on_device, mesh,
                         _teacher_model(config, stage, runs))
  _, params, init_metas = initial_params(config, stage, runs, classes, dtype)
  consts = {"alpha": np.asarray([r.alpha if distil else 0.0 for r in runs], np.float32),
            "key": _keys(runs, f"{stage}/augment"),
            "uniform": np.asarray([r.uniform_teacher for r in runs], np.bool_)}
  program = dataclasses.replace(
      program, init_metas=init_metas, param_count=models.count_params(program.one_run),
      consts=jax.tree_util.tree_map(sharding_lib.put, consts, program.in_sh["consts"]),
      # through the host: restored arrays sit on one device, and the program (compiled ahead, too)
      # takes the teacher with its own sharding
      teacher_params=jax.tree_util.tree_map(lambda x, sh: sharding_lib.put(np.asarray(x), sh), teacher["params"],
                                            program.teacher_sh) if teacher else None)
  return program, params


def compile_ahead(config: ConfigDict, stage: str, runs: Sequence[Run]) -> None:
  """Compiles the programs `train_group(config, stage, runs, ...)` will run (train chunk, eval,
  a pretraining's initialiser) from shapes alone, so a caller can overlap the next group's compilation with the
  current group's training in a background thread. Needs no parameters, teacher or checkpoint:
  they may not exist yet. jax.jit reuses what this compiled when the group calls the same program.
  """
  mesh = sharding_lib.make_mesh(config.mesh, num_runs=len(runs))
  runs = _pad_runs(runs, mesh)
  inputs = prepare_inputs(config, stage, runs, mesh, shapes_only=True)
  program = program_spec(config, stage, len(runs), inputs.num_classes, inputs.on_device, mesh,
                         _teacher_model(config, stage, runs))
  k, r, batch = int(config.engine.steps_per_dispatch), len(runs), int(config[stage].optim.batch_size)
  size_px, channels = int(config.data.image_size), inputs.channels
  if inputs.on_device:
    dev = inputs.device
    data = {"images": dev["images"], "labels": dev["labels"],
            "index": jax.ShapeDtypeStruct((k, r, batch), np.int32)}
  else:
    data = host_batch_shapes(k, r, batch, size_px, channels)
  args = chunk_arguments(program, r, k, data)
  program.chunk.lower(*args).compile()
  params = args[0].params
  if stage == "pretrain":
    key = jax.ShapeDtypeStruct((2,), np.uint32)
    _init_fn(config.model.name, inputs.num_classes, size_px, _dtype(config)).lower(key).compile()
  s = config[stage]
  chunks = _eval_chunks(s.dataset, s.eval_split, config.data.data_dir, size_px, channels, int(s.optim.eval_batch_size))
  repl = sharding_lib.replicated(mesh)
  eval_chunk = steps_lib.make_eval_chunk(program.graphdef, mesh, program.state_sh.params)
  eval_chunk.lower(params, {name: _shaped(v, repl) for name, v in chunks[0].items()}).compile()
  if any(evals_lib.eval_steps(s.eval_at, n, k) for n in inputs.steps):  # the points' chunks may be smaller
    subset = evals_lib.subset_chunks(config, stage, channels)
    eval_chunk.lower(params, {name: _shaped(v, repl) for name, v in subset[0].items()}).compile()


@dataclasses.dataclass
class Resumed:
  """Where a group (re)starts: its train `state`, each run's `losses` so far, the wall seconds `wall_s`
  it took before this process, and the group's `step` to go on from. The train loop takes the state
  over (sets it to None), so no second reference keeps the donated buffers' arrays alive."""
  state: Any
  losses: list
  wall_s: float
  step: int


@dataclasses.dataclass(frozen=True)
class GroupJob:
  """What the train loop works on: the group's config and stage, its runs' `names` (padding left out),
  its compiled `program`, its `inputs`, and `t_start` (time.time() when this process took it up)."""
  config: ConfigDict
  stage: str
  names: tuple
  program: Program
  inputs: GroupInputs
  t_start: float


class Display(NamedTuple):
  """The group's progress line: shown or not, after how many seconds, and its label."""
  show: bool = True
  delay_s: float = 0.0
  desc: str = ""


def _restore_or_init(program: Program, params: dict, ckpts, names: list[str], config: ConfigDict,
                     desc: str) -> Resumed:
  """The group's :class:`Resumed` start: from its last checkpoint, or fresh from the initial host `params`."""
  k = int(config.engine.steps_per_dispatch)
  if ckpts.latest_step() is None:
    init = steps_lib.make_init(program.settings, program.state_sh)
    return Resumed(init(jax.tree_util.tree_map(sharding_lib.put, params, program.param_sh)),
                   [[] for _ in names], 0.0, 0)
  saved = ckpts.latest_meta()
  if saved.get("runs") != names:
    raise JaxscaleError(f"{ckpts.directory} holds a checkpoint of other runs; use a fresh --workdir")
  if saved.get("steps_per_dispatch") != k:
    raise JaxscaleError(f"{ckpts.directory} was checkpointed with config.engine.steps_per_dispatch="
                        f"{saved.get('steps_per_dispatch')}; resume with that value")
  layout = saved.get("optimizer_state", "tree")  # checkpoints from before the flat layout are "tree"
  if layout != steps_lib.optimizer_layout(program.settings):
    raise JaxscaleError(
        f"{ckpts.directory} holds a {layout} optimizer state, which this mesh does not use (flat when its "
        f"fsdp axis has size 1, tree when larger); resume with "
        f"{'config.mesh.fsdp=1' if layout == 'flat' else 'config.mesh.fsdp above 1'}, or delete that directory "
        f"to train this group from its start")
  state, saved = ckpts.restore(program.abstract, program.state_sh)
  logger.info("resuming %s from step %d", desc, saved["step"])
  # The state is at the group's step saved["step"] (a run shorter than the group has fewer losses); a
  # checkpoint written before the meta was copied on save may list losses of later steps.
  step = int(saved["step"])
  return Resumed(state, [run[:step] for run in saved["losses"]], float(saved["wall_s"]), step)


def _dispatch(program: Program, inputs: GroupInputs, state, d: int, k: int, batch_iter):
  """Queues dispatch `d` (steps d·K ... d·K + K - 1 of every run); returns (state, device losses [K, R])."""
  in_sh = program.in_sh
  data = jax.tree_util.tree_map(sharding_lib.put, _dispatch_data(inputs, d, k, batch_iter), in_sh["data"])
  lr = sharding_lib.put(np.ascontiguousarray(inputs.lr[:, d * k:(d + 1) * k].T), in_sh["lr"])
  valid = sharding_lib.put(np.ascontiguousarray(inputs.valid[d * k:(d + 1) * k]), in_sh["valid"])
  return program.chunk(state, program.consts, program.teacher_params, data, lr, valid)


def _append_losses(losses: list, got: np.ndarray, step0: int, k: int, steps: Sequence[int]) -> tuple[float, int]:
  """Appends a dispatch's losses `got` [K, R] (from the group's step `step0`) to each run's `losses`, its
  own steps only; returns (their mean, NaN left out, for the progress line; how many were appended)."""
  taken = []
  for i, run in enumerate(losses):
    n = max(0, min(k, steps[i] - step0))
    run.extend(float(v) for v in got[:n, i])
    taken.append(got[:n, i])
  part = np.concatenate(taken)
  return (float(np.nanmean(part)) if part.size else float("nan")), int(part.size)


def _train_loop(job: GroupJob, resumed: Resumed, ckpts, display: Display, at_boundary=None):
  """Dispatches K steps at a time from the group's step `resumed.step` until every run has trained its
  own steps; returns (state, per-run losses). ``at_boundary(steps done, state)``, if given, is called
  after each dispatch is queued (evaluations along the budget)."""
  config, stage, program, inputs, names = job.config, job.stage, job.program, job.inputs, list(job.names)
  state, losses, start = resumed.state, resumed.losses, resumed.step
  resumed.state = None   # the loop owns the state now (its buffers are donated step after step)
  k = int(config.engine.steps_per_dispatch)
  total, batch = inputs.total_steps, int(config[stage].optim.batch_size)   # the group's step count
  every, last_save = int(config.checkpoint.every_steps), start
  batch_iter = None if inputs.on_device else inputs.reader.iterate(start // k)
  sync = bool(config.engine.sync_every_step)
  pending = None  # the previous dispatch's losses: fetched after the next dispatch is queued
  clock = {"t": time.perf_counter(), "rate": None}  # images/s between the last two finished dispatches

  def collect(item):
    step0, device_losses = item
    got = np.asarray(jax.device_get(device_losses))                  # [K, R]
    loss, taken = _append_losses(losses, got, step0, k, inputs.steps)
    now = time.perf_counter()
    clock["rate"], clock["t"] = batch * taken / max(now - clock["t"], 1e-9), now
    return loss

  def meta(step):  # what a resume checks and continues from (see `_restore_or_init`)
    return {"runs": names, "losses": losses, "step": step, "steps_per_dispatch": k,
            "optimizer_state": steps_lib.optimizer_layout(program.settings),
            "wall_s": resumed.wall_s + time.time() - job.t_start}

  bar = Progress(total, desc=display.desc or stage, unit="step", initial=start,
                 enabled=display.show and jax.process_index() == 0, delay_s=display.delay_s)
  with _sigterm_flag() as sigterm, bar:
    for step0 in range(start, total, k):
      if sigterm.is_set():
        if pending is not None:
          collect(pending)
        ckpts.save(step0, state, meta(step0))
        raise Preempted(f"{stage} stopped by SIGTERM at step {step0}; checkpoint saved in "
                        f"{ckpts.directory}; run again to resume")
      state, device_losses = _dispatch(program, inputs, state, step0 // k, k, batch_iter)
      loss = collect(pending) if pending is not None else None
      pending = (step0, device_losses)
      if sync:
        loss, pending = collect(pending), None
      done = min(step0 + k, total)
      bar.update(done - step0, **({"loss": round(loss, 4)} if loss is not None else {}),
                 **({"img/s": round(clock["rate"])} if clock["rate"] is not None else {}))
      if at_boundary is not None:
        at_boundary(done, state)
      if done < total and done - last_save >= every:
        if pending is not None:
          collect(pending)
          pending = None
        ckpts.save(done, state, meta(done))
        last_save = done
    if pending is not None:
      collect(pending)
  return state, losses
