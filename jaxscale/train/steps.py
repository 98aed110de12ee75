"""The train state, the optimizer and the jitted train and eval steps.

A model is kept split into its static ``graphdef`` and its parameter ``nnx.State`` so a step is
a pure function of arrays: ``train_step(state, batch, teacher_params) -> (state, metrics)``. The
teacher (when distilling) runs inside the same jitted function with frozen parameters and no
optimizer state. Steps carry explicit input/output shardings and donate the train state.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxscale.train import losses
from jaxscale.train import sharding as sharding_lib


class TrainState(flax.struct.PyTreeNode):
  """Everything a step updates. ``step`` int32 [], ``rng`` uint32 key data [2]."""
  step: jax.Array
  params: Any       # nnx.State of the student's nnx.Param variables (float32)
  opt_state: Any    # optax state
  rng: jax.Array


def num_train_steps(optim: Any, subset_size: int) -> int:
  """The training length rule.

  ``steps = max(min_steps, ceil(epochs * subset_size / batch_size))``, then capped at
  ``max_steps`` when that is positive. Training length is therefore set in epochs over the
  subset, and tiny subsets still get ``min_steps`` updates (more epochs). This shapes the fitted
  exponents: below ``min_steps * batch_size / epochs`` images, compute per run is constant.
  """
  steps = max(int(optim.min_steps), math.ceil(float(optim.epochs) * subset_size / int(optim.batch_size)))
  if int(optim.max_steps) > 0:
    steps = min(steps, int(optim.max_steps))
  return steps


def learning_rate(optim: Any, step: int, total_steps: int) -> float:
  """The learning rate of update `step` (0-based) of `total_steps`: warmup, then cosine to 0.

  Linear warmup ``lr * (step + 1) / warmup`` over ``warmup = round(warmup_frac * total_steps)``
  steps (so the first update is not wasted), then ``lr * (1 + cos(pi * t)) / 2`` with ``t`` going
  from 0 to ``(n - 1) / n`` over the remaining ``n`` steps. Plain Python, computed on the host.
  """
  peak = float(optim.lr)
  warmup = int(round(float(optim.warmup_frac) * total_steps))
  if step < warmup:
    return peak * (step + 1) / warmup
  remaining = max(total_steps - warmup, 1)
  return peak * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / remaining))


def _decay_mask(params: Any) -> Any:
  """Weight decay on matrices and kernels only (ndim >= 2), not on biases or norm scales."""
  return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def optimizer_settings(optim: Any) -> tuple:
  """The hashable fields of ``config.<stage>.optim`` that shape the update rule."""
  return (str(optim.optimizer), float(optim.momentum), float(optim.weight_decay), float(optim.grad_clip))


def make_optimizer(settings: tuple) -> optax.GradientTransformation:
  """AdamW or SGD with momentum and global-norm clipping, *without* the learning rate.

  The train step multiplies the updates by ``-lr`` (``lr`` an argument, from
  :func:`learning_rate_schedule`), which is exactly ``optax.adamw`` / ``optax.sgd``, but one
  compiled step then serves every training length.

  Args:
    settings: ``(optimizer, momentum, weight_decay, grad_clip)`` from :func:`optimizer_settings`.
  """
  optimizer, momentum, weight_decay, grad_clip = settings
  parts = []
  if grad_clip > 0:
    parts.append(optax.clip_by_global_norm(grad_clip))
  if optimizer == "adamw":
    parts.append(optax.scale_by_adam(b1=momentum))
    if weight_decay > 0:
      parts.append(optax.add_decayed_weights(weight_decay, mask=_decay_mask))
  elif optimizer == "sgd":
    if weight_decay > 0:
      parts.append(optax.add_decayed_weights(weight_decay, mask=_decay_mask))
    if momentum > 0:
      parts.append(optax.trace(decay=momentum))
  else:  # validated by the config
    raise ValueError(f"unknown optimizer {optimizer!r}")
  return optax.chain(*parts)


def create_state(params: Any, settings: tuple, rng: jax.Array) -> TrainState:
  """A fresh train state at step 0 (``rng`` a typed key or raw uint32 key data)."""
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.key_data(rng)
  opt_state = make_optimizer(settings).init(params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state, rng=rng)


def state_shardings(state: TrainState, settings: tuple, mesh) -> TrainState:
  """Shardings of a train state: params by their logical annotations, optimizer moments alike."""
  repl = sharding_lib.replicated(mesh)
  param_sh = sharding_lib.param_shardings(state.params, mesh)
  opt_sh = optax.tree_utils.tree_map_params(
      make_optimizer(settings), lambda _, s: s, state.opt_state, param_sh,
      transform_non_params=lambda _: repl,
      is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
  return TrainState(step=repl, params=param_sh, opt_state=opt_sh, rng=repl)


# Jitted steps are reused across stages of one process (a study runs many small stages): the key
# holds everything the compiled computation depends on besides the argument shapes.
_CACHE: dict[tuple, Callable] = {}


def _mesh_key(mesh) -> tuple:
  return (tuple(mesh.axis_names), tuple(d.id for d in mesh.devices.flat), mesh.devices.shape)


def make_train_step(graphdef: nnx.GraphDef, settings: tuple, *, state_sharding: TrainState, mesh,
                    label_smoothing: float = 0.0, teacher_graphdef: nnx.GraphDef | None = None,
                    teacher_sharding: Any = None, alpha: float = 0.0,
                    temperature: float = 1.0) -> Callable:
  """Returns ``train_step(state, batch, teacher_params, lr) -> (state, metrics)``, jitted.

  Args:
    graphdef: the student's static structure; ``state.params`` its ``nnx.Param`` state.
    settings: optimizer settings (see :func:`make_optimizer`).
    state_sharding: shardings of the train state (:func:`state_shardings`).
    mesh: the device mesh.
    teacher_graphdef: the teacher's structure, or None to train with plain cross-entropy.

  The jitted step takes ``batch`` with ``image`` float32 [B, H, W, 3] and ``label`` int32 [B]
  sharded over the batch axes, ``teacher_params`` (None without a teacher; never updated) and
  ``lr`` a float32 scalar. ``metrics`` holds replicated float32 scalars ``loss`` (the objective
  before the update) and ``grad_norm``. The input state is donated.
  """
  distil = teacher_graphdef is not None
  key = ("train", graphdef, settings, float(label_smoothing), teacher_graphdef,
         float(alpha) if distil else None, float(temperature) if distil else None, _mesh_key(mesh))
  if key in _CACHE:
    return _CACHE[key]
  tx = make_optimizer(settings)

  def train_step(state: TrainState, batch: dict, teacher_params: Any, lr: jax.Array):
    images, labels = batch["image"], batch["label"]
    if distil:
      teacher = nnx.merge(teacher_graphdef, teacher_params)
      teacher_logits = jax.lax.stop_gradient(teacher(images))

    def loss_fn(params):
      logits = nnx.merge(graphdef, params)(images)
      if distil:
        return losses.kd_loss(logits, teacher_logits, labels, alpha, temperature, label_smoothing)
      return losses.cross_entropy(logits, labels, label_smoothing)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    updates = jax.tree_util.tree_map(lambda u: -lr * u, updates)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads)}

  repl = sharding_lib.replicated(mesh)
  batch_sh = sharding_lib.batch_sharding(mesh)
  fn = jax.jit(
      train_step,
      in_shardings=(state_sharding, {"image": batch_sh, "label": batch_sh},
                    teacher_sharding if distil else None, repl),
      out_shardings=(state_sharding, {"loss": repl, "grad_norm": repl}),
      donate_argnums=(0,))
  _CACHE[key] = fn
  return fn


def make_eval_step(graphdef: nnx.GraphDef, *, params_sharding: Any, mesh) -> Callable:
  """Returns ``eval_step(params, batch) -> sums``, jitted.

  ``batch`` holds ``image``, ``label`` and ``mask`` bool [B] (False on padding). ``sums`` are
  replicated float32 scalars over the unmasked examples: ``errors`` (top-1 mistakes), ``loss``
  (summed cross-entropy, nats) and ``count``.
  """
  key = ("eval", graphdef, _mesh_key(mesh))
  if key in _CACHE:
    return _CACHE[key]

  def eval_step(params: Any, batch: dict):
    logits = nnx.merge(graphdef, params)(batch["image"]).astype(jnp.float32)
    mask = batch["mask"].astype(jnp.float32)
    wrong = (jnp.argmax(logits, axis=-1) != batch["label"]).astype(jnp.float32)
    ce = losses.cross_entropy_per_example(logits, batch["label"])
    return {"errors": jnp.sum(wrong * mask), "loss": jnp.sum(ce * mask), "count": jnp.sum(mask)}

  repl = sharding_lib.replicated(mesh)
  batch_sh = sharding_lib.batch_sharding(mesh)
  fn = jax.jit(
      eval_step,
      in_shardings=(params_sharding, {"image": batch_sh, "label": batch_sh, "mask": batch_sh}),
      out_shardings={"errors": repl, "loss": repl, "count": repl})
  _CACHE[key] = fn
  return fn
