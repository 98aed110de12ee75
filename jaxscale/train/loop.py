"""One training stage of one cell: pretrain or fine-tune, optionally distilled, resumable.

:func:`run_stage` reads like a training script: prepare the data subset, build (or restore) the
student and the teacher, loop over jitted train steps with checkpoints, evaluate, write the record.

Training length (see :func:`jaxscale.train.steps.num_train_steps`) is
``steps = max(min_steps, ceil(epochs * size / batch_size))`` (capped by ``max_steps`` when > 0):
epochs over the subset, with a floor so tiny subsets still train. Below
``min_steps * batch_size / epochs`` images every run costs the same compute, which shapes the
fitted data exponents at small Dp / Df.

FLOPs in a record are ``steps * batch_size * (3 * F_student + F_teacher)`` with ``F`` the forward
FLOPs per image (backward counted as twice the forward; the teacher runs forward only).

Every random choice comes from ``config.seed`` and a purpose name (:func:`purpose_seed`): the
subset (``<stage>/subset``, independent of the size so subsets are nested), the data order and
augmentation (``<stage>/data``), the initialisation (``init``) and a fine-tune head
(``finetune/head``).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import math
import os
import signal
import threading
import time
from typing import Any, Iterator

import jax
import numpy as np
from flax import nnx
from ml_collections import ConfigDict

import jaxscale
from jaxscale import config as config_lib
from jaxscale.errors import JaxscaleError
from jaxscale.fileio import atomic_write_text
from jaxscale.study import records as records_lib
from jaxscale.progress import Progress
from jaxscale.train import checkpoint as ckpt_lib
from jaxscale.train import sharding as sharding_lib
from jaxscale.train import steps as steps_lib

logger = logging.getLogger("jaxscale")

STAGES = ("pretrain", "finetune")
RECORD_FILE = "record.json"  # in a stage directory once the stage finished

# Seconds spent in the last run_stage of this process: setup (data, models, restore, compile is
# in the first train step), train steps, final eval, final checkpoint, total.
LAST_TIMINGS: dict[str, float] = {}


class Preempted(JaxscaleError):
  """SIGTERM arrived; a checkpoint was saved and the stage stopped (run it again to resume)."""


# ----------------------------------------------------------------------------- seeds

def purpose_seed(seed: int, purpose: str) -> int:
  """A 31-bit integer seed for one purpose (``"pretrain/subset"``, ``"init"``, ...)."""
  digest = hashlib.sha256(f"{int(seed)}/{purpose}".encode()).digest()
  return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def purpose_key(seed: int, purpose: str) -> jax.Array:
  """A JAX key: ``fold_in(key(seed), hash(purpose))``."""
  return jax.random.fold_in(jax.random.key(int(seed)), purpose_seed(0, purpose))


# ----------------------------------------------------------------------------- records

def finished_record(workdir: str, stage: str) -> dict | None:
  """The record of a finished stage in `workdir`, or None when it has not finished."""
  path = os.path.join(workdir, stage, RECORD_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)["record"]


def stage_losses(workdir: str, stage: str) -> list[float]:
  """The per-step training losses of a finished stage (its loss curve)."""
  with open(os.path.join(workdir, stage, RECORD_FILE), encoding="utf-8") as f:
    return json.load(f)["losses"]


# ----------------------------------------------------------------------------- building blocks

def _data():
  from jaxscale.data import builders, pipeline, sources, subsets
  return builders, pipeline, sources, subsets


def prepare_subset(config: ConfigDict, stage: str) -> dict[str, Any]:
  """Opens the stage's dataset and draws its nested subset; returns source, indices, hash, classes."""
  builders, _, sources, subsets = _data()
  s = config[stage]
  name, data_dir = s.dataset, config.data.data_dir
  if name.startswith("jaxscale_"):
    builders.ensure_built(name, data_dir)
  source = sources.open_source(name, s.train_split, data_dir)
  labels = sources.load_labels(name, s.train_split, data_dir)
  if s.size > len(labels):
    raise JaxscaleError(f"config.{stage}.size={s.size} is larger than the {len(labels)} images of "
                        f"{name}:{s.train_split}; lower it")
  indices = subsets.nested_subset(labels, int(s.size), purpose_seed(config.seed, f"{stage}/subset"))
  return {"source": source, "indices": indices, "hash": subsets.manifest_hash(indices),
          "num_classes": int(sources.num_classes(name, data_dir))}


def _place(tree: Any, shardings: Any) -> Any:
  """Puts host-identical values onto (possibly multi-process) shardings."""
  def put(x, s):
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, s, lambda idx: host[idx])
  return jax.tree_util.tree_map(put, tree, shardings)


def _split_params(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State]:
  graphdef, params = nnx.split(model, nnx.Param)
  return graphdef, params


def load_finished_params(directory: str, what: str, mesh, dtype) -> tuple[nnx.GraphDef, nnx.State, dict]:
  """The final parameters of a finished stage directory, sharded on `mesh`, with its metadata."""
  from jaxscale import models
  ckpt, meta = ckpt_lib.open_finished(directory, what)
  with ckpt:
    try:
      abstract = nnx.eval_shape(lambda: models.create(meta["model"], meta["num_classes"], meta["image_size"],
                                                      rngs=nnx.Rngs(0), dtype=dtype))
    except JaxscaleError:
      raise JaxscaleError(f"{what} {directory} holds model {meta['model']!r}, which this version does not know")
    graphdef, like = nnx.split(abstract, nnx.Param)
    params = ckpt.restore_params(like, sharding_lib.param_shardings(like, mesh))
  return graphdef, params, meta


def load_teacher(config: ConfigDict, stage: str, num_classes: int, mesh, dtype) -> dict:
  """Loads the distillation teacher for `stage` and checks it fits the stage's dataset."""
  d = config.distill
  directory = d.teacher_checkpoint
  if not os.path.isdir(directory) and "://" not in directory:
    raise JaxscaleError(f"teacher checkpoint {directory} does not exist; "
                        "set config.distill.teacher_checkpoint to a finished pretrain stage directory")
  graphdef, params, meta = load_finished_params(directory, "teacher checkpoint", mesh, dtype)
  want = d.teacher_model or config.model.name
  if meta["model"] != want:
    raise JaxscaleError(f"incompatible teacher: {directory} holds model {meta['model']!r} but "
                        f"config.distill.teacher_model asks for {want!r}; fix one of them")
  if meta["num_classes"] != num_classes or meta["image_size"] != config.data.image_size:
    raise JaxscaleError(
        f"incompatible teacher: {directory} predicts {meta['num_classes']} classes at "
        f"{meta['image_size']}px but the {stage} data has {num_classes} classes at "
        f"{config.data.image_size}px; use a teacher trained on the same label set or change config.distill.stage")
  return {"graphdef": graphdef, "params": params, "model": meta["model"], "dir": directory}


def build_student(config: ConfigDict, stage: str, workdir: str, num_classes: int, mesh, dtype
                  ) -> tuple[nnx.Module, dict | None]:
  """The student: fresh for pretrain; for finetune the pretrained backbone with a fresh head.

  Returns the model (unsharded, host) and, for finetune, the pretrain checkpoint's metadata.
  """
  from jaxscale import models
  image_size = config.data.image_size
  if stage == "pretrain":
    model = models.create(config.model.name, num_classes, image_size,
                          rngs=nnx.Rngs(purpose_key(config.seed, "init")), dtype=dtype)
    return model, None
  directory = config.finetune.init_checkpoint or os.path.join(workdir, "pretrain")
  ckpt, meta = ckpt_lib.open_finished(directory, "pretrain checkpoint")
  ckpt.close()
  if meta.get("stage") != "pretrain":
    raise JaxscaleError(f"{directory} is a {meta.get('stage')} checkpoint; config.finetune.init_checkpoint "
                        "must name a pretrain stage directory")
  if meta["model"] != config.model.name:
    raise JaxscaleError(f"pretrain checkpoint {directory} holds model {meta['model']!r}, not "
                        f"config.model.name={config.model.name!r}; point config.finetune.init_checkpoint "
                        "at a pretrain of this model")
  single = jax.sharding.Mesh(np.asarray(jax.local_devices()[:1]).reshape(1, 1), sharding_lib.AXES)
  graphdef, params, _ = load_finished_params(directory, "pretrain checkpoint", single, dtype)
  backbone = nnx.merge(graphdef, jax.device_get(params))
  model = models.with_new_head(backbone, config.model.name, num_classes, image_size,
                               rngs=nnx.Rngs(purpose_key(config.seed, "finetune/head")), dtype=dtype)
  return model, meta


def evaluate(eval_step, params, config: ConfigDict, stage: str, mesh) -> dict[str, float]:
  """Top-1 error and mean cross-entropy on the stage's whole eval split."""
  _, pipeline, sources, _ = _data()
  s = config[stage]
  source = sources.open_source(s.dataset, s.eval_split, config.data.data_dir)
  errors = loss = count = 0.0
  for batch in pipeline.eval_batches(source, global_batch_size=int(s.optim.eval_batch_size),
                                     image_size=config.data.image_size,
                                     process_index=jax.process_index(), process_count=jax.process_count()):
    batch = {k: batch[k] for k in ("image", "label", "mask")}
    sums = jax.device_get(eval_step(params, sharding_lib.shard_batch(batch, mesh)))
    errors += float(sums["errors"])
    loss += float(sums["loss"])
    count += float(sums["count"])
  if count == 0:
    raise JaxscaleError(f"the eval split {s.dataset}:{s.eval_split} is empty; set config.{stage}.eval_split")
  return {"eval_error": errors / count, "eval_loss": loss / count, "eval_count": int(count)}


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


def _param_count(params: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


# ----------------------------------------------------------------------------- the stage

def run_stage(config: ConfigDict, stage: str, workdir: str, *, records_path: str | None = None,
              cell_id: str = "", show_progress: bool = True, progress_delay_s: float = 0.0) -> dict:
  """Trains one stage of one cell, evaluates it and appends its record; returns the record.

  Checkpoints live in ``<workdir>/<stage>/`` and a run resumes from them automatically. A stage
  that already finished is not retrained: its record is returned (and appended to
  `records_path` only if it is missing there).

  Args:
    config: a validated config (:func:`jaxscale.config.base_config` schema).
    stage: ``"pretrain"`` or ``"finetune"``.
    workdir: the cell's directory.
    records_path: JSON-lines file to append to; default ``<workdir>/records.jsonl``.
    cell_id: stored in the record.
    show_progress: draw a progress display (process 0 only).
    progress_delay_s: show nothing for stages that end sooner than this (seconds).

  Raises:
    JaxscaleError: a user-fixable problem (one line); :class:`Preempted` after SIGTERM.
  """
  t_start = time.time()
  if stage not in STAGES:
    raise JaxscaleError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
  config = config_lib.validate(config)
  records_path = records_path or os.path.join(workdir, "records.jsonl")
  stage_dir = os.path.join(workdir, stage)
  is_main = jax.process_index() == 0

  done = finished_record(workdir, stage)
  if done is not None:
    if is_main and done not in records_lib.read(records_path):
      records_lib.append(records_path, done)
    logger.info("%s stage in %s already finished; not retraining", stage, workdir)
    return done

  s = config[stage]
  optim = s.optim
  dtype = {"float32": np.float32, "bfloat16": jax.numpy.bfloat16}[config.model.dtype]
  mesh = sharding_lib.make_mesh(config.mesh)
  sharding_lib.check_batch_size(int(optim.batch_size), mesh, f"config.{stage}.optim.batch_size")
  sharding_lib.check_batch_size(int(optim.eval_batch_size), mesh, f"config.{stage}.optim.eval_batch_size")
  ckpt_lib.check_shared_directory(stage_dir)

  data = prepare_subset(config, stage)
  total_steps = steps_lib.num_train_steps(optim, len(data["indices"]))

  distil_here = bool(config.distill.teacher_checkpoint) and config.distill.stage in (stage, "both")
  teacher = load_teacher(config, stage, data["num_classes"], mesh, dtype) if distil_here else None
  model, pretrain_meta = build_student(config, stage, workdir, data["num_classes"], mesh, dtype)
  graphdef, host_params = _split_params(model)
  del model

  settings = steps_lib.optimizer_settings(optim)
  rng = purpose_key(config.seed, f"{stage}/rng")
  abstract = jax.eval_shape(lambda p: steps_lib.create_state(p, settings, rng), host_params)
  state_sh = steps_lib.state_shardings(abstract, settings, mesh)

  from jaxscale import models
  if pretrain_meta is None:
    dp, df = int(config.pretrain.size), 0
    distilled, teacher_name = teacher is not None, teacher["model"] if teacher else ""
  else:
    dp, df = int(pretrain_meta["dp"]), int(config.finetune.size)
    distilled = teacher is not None or bool(pretrain_meta.get("distilled"))
    teacher_name = teacher["model"] if teacher else pretrain_meta.get("teacher", "")
  meta = {"stage": stage, "model": config.model.name, "num_classes": data["num_classes"],
          "image_size": int(config.data.image_size), "dataset": s.dataset, "dp": dp, "df": df,
          "distilled": distilled, "teacher": teacher_name, "subset_hash": data["hash"],
          "total_steps": total_steps, "finished": False, "losses": [], "wall_s": 0.0}

  _, pipeline, _, _ = _data()
  iterator = pipeline.train_iterator(
      data["source"], data["indices"], global_batch_size=int(optim.batch_size),
      image_size=int(config.data.image_size), seed=purpose_seed(config.seed, f"{stage}/data"),
      crop_padding=int(s.crop_padding), flip=bool(s.flip), process_index=jax.process_index(),
      process_count=jax.process_count(), num_workers=int(config.data.num_workers),
      prefetch=int(config.data.prefetch))

  ckpts = ckpt_lib.StageCheckpoints(stage_dir, keep=int(config.checkpoint.keep),
                                    every_steps=int(config.checkpoint.every_steps))
  try:
    if ckpts.latest_step() is not None:
      state, saved = ckpts.restore(abstract, state_sh, iterator)
      for field in ("model", "subset_hash", "total_steps", "num_classes"):
        if saved.get(field) != meta[field]:
          raise JaxscaleError(f"{stage_dir} holds a checkpoint of another run ({field} "
                              f"{saved.get(field)!r} != {meta[field]!r}); use a fresh --workdir")
      if saved.get("finished"):  # stopped after the final save, before the record landed
        return _publish(stage_dir, records_path, saved["record"], saved["losses"], is_main)
      meta["losses"], wall_before = list(saved["losses"]), float(saved["wall_s"])
      logger.info("resuming %s from step %d", stage, int(jax.device_get(state.step)))
    else:
      wall_before = 0.0
      params = _place(host_params, state_sh.params)
      state = jax.jit(lambda p: steps_lib.create_state(p, settings, rng), out_shardings=state_sh)(params)
    del host_params

    train_step = steps_lib.make_train_step(
        graphdef, settings, state_sharding=state_sh, mesh=mesh,
        label_smoothing=float(optim.label_smoothing),
        teacher_graphdef=teacher["graphdef"] if teacher else None,
        teacher_sharding=sharding_lib.param_shardings(teacher["params"], mesh) if teacher else None,
        alpha=float(config.distill.alpha), temperature=float(config.distill.temperature))
    eval_step = steps_lib.make_eval_step(graphdef, params_sharding=state_sh.params, mesh=mesh)
    teacher_params = teacher["params"] if teacher else None

    start = int(jax.device_get(state.step))
    batch_size = int(optim.batch_size)
    train_s = 0.0
    desc = f"{stage} {config.model.name}" + (f" {cell_id}" if cell_id else "")
    bar = Progress(total_steps, desc=desc, unit="step", initial=start,
                   enabled=show_progress and is_main, delay_s=progress_delay_s)
    t_setup = time.time() - t_start
    with _sigterm_flag() as sigterm, bar:
      for step in range(start, total_steps):
        if sigterm.is_set():
          meta["wall_s"] = wall_before + time.time() - t_start
          if ckpts.latest_step() != step:
            ckpts.save(state, iterator, meta, force=True)
          raise Preempted(f"{stage} stopped by SIGTERM at step {step}; checkpoint saved in "
                          f"{stage_dir}; run again to resume")
        batch = next(iterator)
        batch = sharding_lib.shard_batch({"image": batch["image"], "label": batch["label"]}, mesh)
        lr = np.float32(steps_lib.learning_rate(optim, step, total_steps))
        t0 = time.perf_counter()
        state, metrics = train_step(state, batch, teacher_params, lr)
        metrics = jax.device_get(metrics)
        train_s += time.perf_counter() - t0
        loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
          last = ckpts.latest_step()
          raise JaxscaleError(
              f"{stage} loss became {'nan' if loss != loss else loss} (grad norm {grad_norm}) at step "
              f"{step + 1}; stopped; the last good checkpoint is "
              f"{'step ' + str(last) if last is not None else 'none'}; lower config.{stage}.optim.lr")
        meta["losses"].append(loss)
        bar.update(1, loss=loss, **{"img/s": round(batch_size / max(time.perf_counter() - t0, 1e-9))})
        done_steps = step + 1
        if optim.eval_every and done_steps % int(optim.eval_every) == 0 and done_steps < total_steps:
          result = evaluate(eval_step, state.params, config, stage, mesh)
          logger.info("%s step %d: eval error %.4f, loss %.4f", stage, done_steps,
                      result["eval_error"], result["eval_loss"])
        if done_steps < total_steps and ckpts.should_save(done_steps):
          meta["wall_s"] = wall_before + time.time() - t_start
          ckpts.save(state, iterator, meta)

    t_eval = time.time()
    result = evaluate(eval_step, state.params, config, stage, mesh)
    t_eval = time.time() - t_eval
    flops_per_image = 3.0 * models.flops_per_image(config.model.name, data["num_classes"],
                                                   int(config.data.image_size))
    if teacher:
      flops_per_image += models.flops_per_image(teacher["model"], data["num_classes"],
                                                int(config.data.image_size))
    meta["wall_s"] = wall_before + time.time() - t_start
    record = {
        "stage": stage, "model": config.model.name, "params": _param_count(state.params),
        "dp": dp, "df": df, "distilled": distilled, "teacher": teacher_name,
        "seed": int(config.seed), "subset_hash": data["hash"], "steps": total_steps,
        "flops": float(flops_per_image * total_steps * batch_size),
        "eval_error": result["eval_error"], "eval_loss": result["eval_loss"],
        "wall_s": round(meta["wall_s"], 3), "config_hash": config_lib.result_hash(config),
        "version": jaxscale.__version__, "cell_id": cell_id,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    meta.update(finished=True, record=record)
    t_save = time.time()
    ckpts.save(state, iterator, meta, force=True)
    t_save = time.time() - t_save
  finally:
    ckpts.close()
  LAST_TIMINGS.update(setup_s=t_setup, train_steps_s=train_s, eval_s=t_eval, final_save_s=t_save,
                      total_s=time.time() - t_start)
  return _publish(stage_dir, records_path, record, meta["losses"], is_main)


def _publish(stage_dir: str, records_path: str, record: dict, losses: list[float], is_main: bool) -> dict:
  """Marks the stage finished (``record.json``) and appends its record unless already there."""
  if is_main:
    atomic_write_text(os.path.join(stage_dir, RECORD_FILE),
                      json.dumps({"record": record, "losses": losses}, sort_keys=True))
    if record not in records_lib.read(records_path):
      records_lib.append(records_path, record)
  return record
