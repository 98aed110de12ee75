"""The group train state, the optimizer, and the compiled train and eval programs.

A group is R runs of one model shape trained together. Every array of the train state carries a
leading runs axis ``[R, ...]``; one train step is a function of one run (:func:`_run_step`),
``jax.lax.scan``-ned over the K steps of one dispatch and looped over the runs (on a CPU, so a run's
floats do not depend on its group) or ``jax.vmap``-ed over them (:func:`make_train_chunk`). Per-run scalars ride along: the KD weight ``alpha`` (a plain run is
``alpha = 0``), whether the run's teacher is uniform (``uniform``: the smoothed control, whose KD
term is label smoothing), the augmentation key and, per step, the learning rate (read from a table computed
on the host, :func:`learning_rate`, so every run gets exactly the same rates in or out of a group)
and whether the step is one of the run's own (runs of one group may train different step counts: a
run's steps past its own last one change nothing). A run whose loss or gradient stops being finite
stops updating (its ``diverged_at`` is set) while the others go on.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxscale.data import augment
from jaxscale.train import losses
from jaxscale.train import sharding as sharding_lib


class TrainState(flax.struct.PyTreeNode):
  """Everything a step updates, each with a leading runs axis R.

  Attributes:
    step: int32 [R], updates done.
    params: the student's parameters as a nested dict of float32 [R, ...].
    opt_state: optax state of ``params`` (leaves [R, ...]).
    diverged_at: int32 [R], the 1-based step whose loss or gradient was not finite (0 = healthy).
  """
  step: jax.Array
  params: Any
  opt_state: Any
  diverged_at: jax.Array


# ----------------------------------------------------------------------------- schedule and budget

def num_train_steps(optim: Any, subset_size: int) -> int:
  """The training length rule.

  ``steps = max(min_steps, ceil(epochs * subset_size / batch_size))``, then capped at
  ``max_steps`` when that is positive. With ``min_steps = max_steps = N`` every run trains N
  steps whatever its subset size (a fixed example budget); otherwise length is set in epochs.
  """
  steps = max(int(optim.min_steps), math.ceil(float(optim.epochs) * subset_size / int(optim.batch_size)))
  if int(optim.max_steps) > 0:
    steps = min(steps, int(optim.max_steps))
  return steps


def peak_lr(optim: Any, model: str) -> float:
  """The peak learning rate of `model` in a stage: ``optim.lr_by_model[model]``, else ``optim.lr``.

  Learning rates that suit one width do not suit another (a wider model wants a smaller one), so a
  ladder can set its own per model; every run of a model, in a study or alone, trains with it.
  """
  return float(optim.lr_by_model.get(model, optim.lr))


def learning_rate(optim: Any, step: int, total_steps: int, peak: float | None = None) -> float:
  """The learning rate of update `step` (0-based) of `total_steps`: warmup, then cosine to 0.

  Linear warmup ``lr * (step + 1) / warmup`` over ``warmup = round(warmup_frac * total_steps)``
  steps (so the first update is not wasted), then ``lr * (1 + cos(pi * t)) / 2`` with ``t`` going
  from 0 to ``(n - 1) / n`` over the remaining ``n`` steps, with ``lr = peak`` (default
  ``optim.lr``). Plain Python, computed on the host.
  """
  peak = float(optim.lr if peak is None else peak)
  warmup = int(round(float(optim.warmup_frac) * total_steps))
  if step < warmup:
    return peak * (step + 1) / warmup
  remaining = max(total_steps - warmup, 1)
  return peak * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / remaining))


def learning_rate_table(optim: Any, total_steps: int, peak: float | None = None) -> np.ndarray:
  """float32 [total_steps]: :func:`learning_rate` of every update (the per-run table the device reads)."""
  return np.asarray([learning_rate(optim, t, total_steps, peak) for t in range(total_steps)], np.float32)


def run_flops(student_flops_per_image: float, teacher_flops_per_image: float, images: int) -> float:
  """Training FLOPs of one run: ``images * (3 * F_student + F_teacher)``.

  ``F`` is the forward FLOPs per image; the backward pass counts twice the forward and the
  teacher (0 without distillation) runs forward only.
  """
  return float(images) * (3.0 * student_flops_per_image + teacher_flops_per_image)


# ----------------------------------------------------------------------------- optimizer and state

def _decay_mask(params: Any) -> Any:
  """Weight decay on matrices and kernels only (ndim >= 2 per run), not on biases or norm scales."""
  return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


class OptimizerSettings(NamedTuple):
  """The hashable fields of ``config.<stage>.optim`` that shape the update rule, and the layout of
  its state (`flat`, see :func:`make_optimizer`). A plain tuple in this order is accepted too."""
  optimizer: str
  momentum: float
  weight_decay: float
  grad_clip: float
  flat: bool = True


def optimizer_settings(optim: Any, flat: bool = True) -> OptimizerSettings:
  """:class:`OptimizerSettings` of ``config.<stage>.optim`` with the state layout `flat`."""
  return OptimizerSettings(str(optim.optimizer), float(optim.momentum), float(optim.weight_decay),
                           float(optim.grad_clip), bool(flat))


def optimizer_layout(settings: OptimizerSettings) -> str:
  """How the state of :func:`make_optimizer` is laid out: "flat" (one vector per run) or "tree"."""
  return "flat" if OptimizerSettings(*settings).flat else "tree"


def make_optimizer(settings: OptimizerSettings) -> optax.GradientTransformation:
  """AdamW or SGD with momentum and global-norm clipping, *without* the learning rate.

  The step multiplies the updates by ``-lr`` (``lr`` read from the run's table), which is exactly
  ``optax.adamw`` / ``optax.sgd`` with that schedule, and one compiled program serves every
  training length. The transformation acts on one run's parameters (it is vmapped over runs).

  With ``flat`` the clipping and the moments work on all of a run's parameters raveled into one
  vector (``optax.flatten``; the moments are then float32 [N] per run): the same update, computed
  by a few large fused operations instead of several per parameter, which cuts about a quarter of
  the compile time of a small model's train program and speeds its step. Weight decay stays on the
  parameter tree (its mask is per parameter). The norm's float sum runs in another order, so the
  last bits differ from the tree layout. Without ``flat`` (the trainer's choice when parameters are
  split over devices, ``fsdp`` > 1) the moments keep the parameters' shapes and are split like them.

  Args:
    settings: :class:`OptimizerSettings` (from :func:`optimizer_settings`).
  """
  optimizer, momentum, weight_decay, grad_clip, flat = OptimizerSettings(*settings)
  pack = optax.flatten if flat else (lambda t: t)
  clip = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
  decay = [optax.add_decayed_weights(weight_decay, mask=_decay_mask)] if weight_decay > 0 else []
  if optimizer == "adamw":
    parts = [pack(optax.chain(*clip, optax.scale_by_adam(b1=momentum))), *decay]
  elif optimizer == "sgd":
    parts = [*([pack(clip[0])] if clip else []), *decay,
             *([pack(optax.trace(decay=momentum))] if momentum > 0 else [])]
  else:  # validated by the config
    raise ValueError(f"unknown optimizer {optimizer!r}")
  return optax.chain(*parts) if parts else optax.identity()  # plain SGD: the gradient itself


def create_state(params: Any, settings: OptimizerSettings) -> TrainState:
  """A fresh group state at step 0 from parameters with a leading runs axis."""
  runs = jax.tree_util.tree_leaves(params)[0].shape[0]
  opt_state = jax.vmap(make_optimizer(settings).init)(params)
  return TrainState(step=jnp.zeros((runs,), jnp.int32), params=params, opt_state=opt_state,
                    diverged_at=jnp.zeros((runs,), jnp.int32))


def state_shardings(state: TrainState, settings: OptimizerSettings, param_sharding: Any, mesh) -> TrainState:
  """Shardings of a group state: params as given (runs axis first); the optimizer's moments alike
  in the tree layout, split along runs only in the flat one."""
  per_run = sharding_lib.runs_sharding(mesh)
  if optimizer_layout(settings) == "flat":
    opt_sh = jax.tree_util.tree_map(lambda _: per_run, state.opt_state)
  else:
    opt_sh = optax.tree_utils.tree_map_params(
        make_optimizer(settings), lambda _, s: s, state.opt_state, param_sharding,
        transform_non_params=lambda _: per_run,
        is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
  return TrainState(step=per_run, params=param_sharding, opt_state=opt_sh, diverged_at=per_run)


# ----------------------------------------------------------------------------- the train program

@dataclasses.dataclass(frozen=True)
class StepSpec:
  """Everything a compiled train program depends on besides array shapes (hashable).

  Attributes:
    graphdef: the student's static structure (parameters are a nested dict).
    settings: optimizer settings (:func:`make_optimizer`).
    batch_size: examples per run per step.
    crop_padding, flip, resized_crop: training augmentation.
    label_smoothing: of the cross-entropy term.
    teacher_graphdef: the teacher's structure, or None when no run of the group distils.
    temperature: KD temperature T.
    on_device: images are gathered on the device from a uint8 copy (else they arrive per dispatch).
  """
  graphdef: Any
  settings: OptimizerSettings
  batch_size: int
  crop_padding: int = 0
  flip: bool = False
  resized_crop: bool = False
  label_smoothing: float = 0.0
  teacher_graphdef: Any = None
  temperature: float = 1.0
  on_device: bool = True


def _run_step(spec: StepSpec, teacher_params: Any, carry: tuple, run_in: tuple):
  """One update of one run. ``carry = (step, params, opt_state, diverged_at)``, ``run_in = (images,
  labels, lr, valid, consts)`` with the run's own ``consts`` (see :func:`make_train_chunk`); returns (carry, loss)."""
  step, params, opt_state, diverged_at = carry
  images, labels, lr, valid, consts = run_in
  alpha, key, uniform = consts["alpha"], consts["key"], consts["uniform"]
  positions = step * spec.batch_size + jnp.arange(spec.batch_size, dtype=jnp.int32)
  x = augment.train_augment(images, key, positions, crop_padding=spec.crop_padding, flip_ok=spec.flip,
                            resized_crop=spec.resized_crop)
  tx = make_optimizer(spec.settings)
  if spec.teacher_graphdef is not None:
    teacher_logits = jax.lax.stop_gradient(nnx.merge(spec.teacher_graphdef, teacher_params)(x))
    # A uniform teacher (softmax of constant logits) for a smoothed run: its loss never reads the teacher.
    teacher_logits = jnp.where(uniform, jnp.zeros_like(teacher_logits), teacher_logits)

  def loss_fn(p):
    logits = nnx.merge(spec.graphdef, p)(x)
    if spec.teacher_graphdef is not None:
      return losses.kd_loss(logits, teacher_logits, labels, alpha, spec.temperature, spec.label_smoothing)
    return losses.cross_entropy(logits, labels, spec.label_smoothing)

  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, new_opt = tx.update(grads, opt_state, params)
  new_params = optax.apply_updates(params, jax.tree_util.tree_map(lambda u: -lr * u, updates))
  healthy = diverged_at == 0
  finite = jnp.isfinite(loss) & jnp.isfinite(optax.global_norm(grads))
  apply = valid & healthy & finite
  keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(apply, a, b), new, old)
  diverged_at = jnp.where(valid & healthy & ~finite, step + 1, diverged_at)
  carry = (step + valid.astype(jnp.int32), keep(new_params, params), keep(new_opt, opt_state), diverged_at)
  return carry, loss


# Compiled programs are reused across the groups of one process (a study runs many small groups): the
# key holds everything a program depends on besides the argument shapes.
_CACHE: dict[tuple, Callable] = {}


def _cache_key(*parts: Any) -> tuple:
  out = []
  for part in parts:
    if isinstance(part, jax.sharding.Mesh):
      out.append((part.axis_names, tuple(d.id for d in part.devices.flat), part.devices.shape))
    elif isinstance(part, (StepSpec, nnx.GraphDef, str, int, float)) or part is None:
      out.append(part)
    else:  # a pytree of shardings
      leaves, treedef = jax.tree_util.tree_flatten(part)
      out.append((treedef, tuple(leaves)))
  return tuple(out)


def chunk_input_shardings(spec: StepSpec, mesh) -> dict[str, Any]:
  """Shardings of a train chunk's inputs: ``consts``, ``data``, ``lr`` and ``valid`` (see below; ``lr`` and
  ``valid`` are [K, R], split along the runs)."""
  runs = sharding_lib.runs_sharding(mesh)
  batch = NamedSharding(mesh, P(None, "runs", sharding_lib.BATCH_AXES))
  repl = sharding_lib.replicated(mesh)
  data = {"images": repl, "labels": repl, "index": batch} if spec.on_device else {"images": batch, "labels": batch}
  return {"consts": {"alpha": runs, "key": runs, "uniform": runs}, "data": data,
          "lr": NamedSharding(mesh, P(None, "runs")), "valid": NamedSharding(mesh, P(None, "runs"))}


def _run_chunk(spec: StepSpec, teacher_params: Any, data: dict, carry: tuple, run_xs: tuple):
  """The K steps of one dispatch of one run (a ``lax.scan``); returns (carry, losses [K]).

  ``run_xs = (consts, lr [K], valid [K], per_step)``: the run's own constants, learning rates and
  step mask (False past its own last step), and its gather indices [K, B] (on device) or its
  (images, labels) [K, B, ...]. A dispatch with none of the run's own steps is skipped (``lax.cond``)."""
  consts, lr, valid, per_step = run_xs

  def body(c, xs):
    if spec.on_device:
      index, lr_k, valid_k = xs
      images, labels = data["images"][index], data["labels"][index]   # [B, ...]
    else:
      (images, labels), lr_k, valid_k = xs
    return _run_step(spec, teacher_params, c, (images, labels, lr_k, valid_k, consts))

  def train():
    return jax.lax.scan(body, carry, (per_step, lr, valid))

  # A run past its own last step (a group trains as long as its longest run) skips the dispatch: its
  # state is kept, as the mask would keep it, and its losses (never read: `loop._append_losses` takes
  # a run's own steps only) are 0. Run one after the other, a skipped run costs nothing.
  losses = jax.eval_shape(train)[1]
  return jax.lax.cond(jnp.any(valid), train, lambda: (carry, jnp.zeros(losses.shape, losses.dtype)))


def _looped_chunk(spec: StepSpec, state: TrainState, consts: dict, teacher_params: Any, data: dict, lr, valid):
  """A device's runs one after the other (``lax.map``; inside ``shard_map`` the arrays are its own runs)."""
  per_step = data["index"] if spec.on_device else (data["images"], data["labels"])
  per_step = jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), per_step)   # [R, K, ...]
  carry = (state.step, state.params, state.opt_state, state.diverged_at)
  (step, params, opt_state, diverged_at), loss = jax.lax.map(
      lambda a: _run_chunk(spec, teacher_params, data, *a), (carry, (consts, lr.T, valid.T, per_step)))
  return TrainState(step=step, params=params, opt_state=opt_state, diverged_at=diverged_at), loss.T


def _vmapped_chunk(spec: StepSpec, mesh, state: TrainState, consts: dict, teacher_params: Any, data: dict,
                   lr, valid):
  """The runs vmapped, the K steps scanned (an accelerator, or a run split over devices)."""
  vstep = jax.vmap(functools.partial(_run_step, spec), in_axes=(None, 0, (0, 0, 0, 0, 0)))

  def body(carry, xs):
    if spec.on_device:
      index, lr_k, valid_k = xs
      images, labels = data["images"][index], data["labels"][index]   # [R, B, ...]
    else:
      images, labels, lr_k, valid_k = xs
    images = jax.lax.with_sharding_constraint(images, NamedSharding(mesh, P("runs", sharding_lib.BATCH_AXES)))
    return vstep(teacher_params, carry, (images, labels, lr_k, valid_k, consts))

  xs = ((data["index"], lr, valid) if spec.on_device else (data["images"], data["labels"], lr, valid))
  carry = (state.step, state.params, state.opt_state, state.diverged_at)
  (step, params, opt_state, diverged_at), loss = jax.lax.scan(body, carry, xs)
  return TrainState(step=step, params=params, opt_state=opt_state, diverged_at=diverged_at), loss


def make_train_chunk(spec: StepSpec, mesh, state_sharding: TrainState, teacher_sharding: Any,
                     one_by_one: bool | None = None) -> Callable:
  """``chunk(state, consts, teacher_params, data, lr, valid) -> (state, losses)``, jitted.

  Args of the returned function:
    state: :class:`TrainState` of R runs (donated).
    consts: per-run constants, each [R, ...]: ``{"alpha": float32 [R], "key": uint32 [R, 2], "uniform":
      bool [R]}``, the KD weight, augmentation key and uniform-teacher flag (a step reads its run's own).
    teacher_params: the teacher's parameters (None without a teacher; shared by the runs, frozen).
    data: on device ``{"images": uint8 [N, S, S, C], "labels": int32 [N], "index": int32 [K, R, B]}``;
      else ``{"images": uint8 [K, R, B, S, S, C], "labels": int32 [K, R, B]}``.
    lr: float32 [K, R], each run's learning rate of each step.
    valid: bool [K, R], False on a run's steps after its own last one (a group's runs may train
      different step counts; the padding steps of the last dispatch are masked too): such a step
      keeps the run's parameters, optimizer state and step count as they are.

  Returns the new state and ``losses`` float32 [K, R] (each step's objective before its update).

  Where :func:`runs_one_by_one` says so, each device loops over its own runs (``lax.map``), each
  run scanning its K steps: every array a run's step computes has the shape it has alone, so its
  floats do not depend on the group (a vmapped matmul's do: the batch of runs changes how XLA
  blocks it, and training amplifies the last bits). Elsewhere the runs are vmapped. `one_by_one`
  forces either way (benchmarks; the looped way needs whole runs per device).
  """
  sh = chunk_input_shardings(spec, mesh)
  one_by_one = runs_one_by_one(mesh) if one_by_one is None else one_by_one
  if one_by_one:
    specs = lambda tree: jax.tree_util.tree_map(lambda s: s.spec, tree)
    in_specs = (specs(state_sharding), specs(sh["consts"]), specs(teacher_sharding), specs(sh["data"]),
                sh["lr"].spec, sh["valid"].spec)
    impl = jax.shard_map(functools.partial(_looped_chunk, spec), mesh=mesh, in_specs=in_specs,
                         out_specs=(specs(state_sharding), sh["lr"].spec), check_vma=False)
  else:
    impl = functools.partial(_vmapped_chunk, spec, mesh)

  def chunk(state: TrainState, consts: dict, teacher_params: Any, data: dict, lr, valid):
    return impl(state, consts, teacher_params, data, lr, valid)
  key = _cache_key("train", spec, mesh, state_sharding, teacher_sharding, one_by_one)
  if key not in _CACHE:
    _CACHE[key] = jax.jit(chunk, in_shardings=(state_sharding, sh["consts"], teacher_sharding, sh["data"],
                                               sh["lr"], sh["valid"]),
                          out_shardings=(state_sharding, sh["lr"]), donate_argnums=(0,))
  return _CACHE[key]


def make_init(settings: OptimizerSettings, state_sharding: TrainState) -> Callable:
  """``init(params) -> TrainState``: a fresh state at step 0 on `state_sharding` (params given on it).

  Every update rule here starts its state at zero (Adam's count and moments, the momentum trace;
  clipping and weight decay keep none), so the state is built from zeros on the host instead of by a
  compiled program per group shape (tests check it equals :func:`create_state`).
  """
  def init(params: Any) -> TrainState:
    abstract = jax.eval_shape(functools.partial(create_state, settings=settings), params)

    def zeros(a, sh):
      return sharding_lib.put(np.zeros(a.shape, a.dtype), sh)

    return TrainState(step=zeros(abstract.step, state_sharding.step), params=params,
                      opt_state=jax.tree_util.tree_map(zeros, abstract.opt_state, state_sharding.opt_state),
                      diverged_at=zeros(abstract.diverged_at, state_sharding.diverged_at))
  return init


def runs_one_by_one(mesh) -> bool:
  """Whether the train and eval programs loop over their runs (``lax.map``, on each device over its
  own runs) instead of vmapping them.

  Looping gives each run's computation the shapes it has alone, so a run's floats do not depend on
  its group's size, companions or padding (vmapped, the batch of runs changes how XLA blocks a
  matmul, and the last bits differ). On CPU it is also faster: the eval's vmapped forward of R runs
  over one shared chunk of C images ran vit_tiny_m, R = 48, C = 250 at 8.6k run-images/s against
  34.6k looping (peak memory 1.6 GB vmapped at C = 250, 5.5 GB at C = 1,000), and the train step of
  16 runs on 2 devices 1.2-1.4x faster looping (``benchmarks/bench_train.py --compare-ways``). On an
  accelerator the vmap is what fills the device; a run split over devices (``data`` or ``fsdp`` > 1)
  keeps it too.
  """
  return jax.default_backend() == "cpu" and sharding_lib.data_parallel_size(mesh) == 1


def make_eval_chunk(graphdef: Any, mesh, params_sharding: Any) -> Callable:
  """``eval_chunk(params, chunk) -> sums``, jitted, mapped over the runs of `params`.

  ``chunk`` holds ``image`` uint8 [C, S, S, ch], ``label`` int32 [C] and ``mask`` bool [C] (False on
  padding). ``sums`` are float32 [R] over the unmasked examples: ``errors`` (top-1 mistakes) and
  ``loss`` (summed cross-entropy, nats), and ``count`` (a scalar). The runs are vmapped, or looped
  over one by one where :func:`runs_one_by_one` says so (each device looping over its share of the
  runs; the same sums, up to float rounding).
  """
  repl = sharding_lib.replicated(mesh)
  per_run = sharding_lib.runs_sharding(mesh)

  def sums(params: Any, chunk: dict):
    x = augment.normalize(chunk["image"])
    mask = chunk["mask"].astype(jnp.float32)

    def one(p):
      logits = nnx.merge(graphdef, p)(x).astype(jnp.float32)
      wrong = (jnp.argmax(logits, axis=-1) != chunk["label"]).astype(jnp.float32)
      ce = losses.cross_entropy_per_example(logits, chunk["label"])
      return jnp.sum(wrong * mask), jnp.sum(ce * mask)

    return jax.lax.map(one, params) if one_by_one else jax.vmap(one)(params)

  def eval_chunk(params: Any, chunk: dict):
    if one_by_one and mesh.shape["runs"] > 1:   # each device loops over the runs it holds
      errors, loss = jax.shard_map(sums, mesh=mesh, in_specs=(P("runs"), P()), out_specs=P("runs"),
                                   check_vma=False)(params, chunk)
    else:
      errors, loss = sums(params, chunk)
    return {"errors": errors, "loss": loss, "count": jnp.sum(chunk["mask"].astype(jnp.float32))}

  one_by_one = runs_one_by_one(mesh)
  key = _cache_key("eval", graphdef, mesh, params_sharding, one_by_one)
  if key not in _CACHE:
    _CACHE[key] = jax.jit(eval_chunk, in_shardings=(params_sharding, {"image": repl, "label": repl, "mask": repl}),
                          out_shardings={"errors": per_run, "loss": per_run, "count": repl})
  return _CACHE[key]
