"""Configs: the schema every config extends, loading with overrides, and validation.

A config file is Python with ``get_config(arg=None) -> ml_collections.ConfigDict`` that starts
from :func:`base_config` and changes fields. It is loaded through
``ml_collections.config_flags`` so any field can be overridden on the command line
(``--config.pretrain.optim.lr=3e-4``). :func:`validate` runs before any work starts: a field the
schema does not know, a value of the wrong type or out of range fails with one line naming it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from typing import Any, Sequence

import ml_collections
from ml_collections import ConfigDict

from jaxscale.errors import JaxscaleError

OPTIMIZERS = ("adamw", "sgd")
KD_STAGES = ("pretrain", "finetune", "both")
DTYPES = ("float32", "bfloat16")
DATA_PLACEMENT = ("auto", "always", "never")
# Study arms: plain; distilled (KD loss against the teacher); smoothed (the same KD loss, weight and
# temperature against a teacher whose outputs are uniform, i.e. label smoothing: the control that
# separates what soft targets do by themselves from what the teacher knows).
ARMS = ("plain", "distilled", "smoothed")
# How a study's Dp images are chosen (jaxscale.data.subsets): at random, or by prototype difficulty
# scores, keeping the hardest (farthest from their prototype) or the easiest.
SELECTIONS = ("random", "prototypes_hard", "prototypes_easy")
# What a study's joint law is fitted on (config.study.law_points): each fine-tune's final error, or
# every point along its budget at or after config.study.burn_in, with examples seen T as an input.
LAW_POINTS = ("final", "curves")


def optim_config(**overrides) -> ConfigDict:
  """Optimizer and schedule of one training stage.

  Training length: ``steps = max(min_steps, ceil(epochs * subset_size / batch_size))``, capped by
  ``max_steps`` when that is positive. Tiny subsets therefore still get ``min_steps`` updates.
  """
  c = ConfigDict(dict(
      optimizer="adamw",      # adamw | sgd (with momentum)
      lr=1e-3,                # peak learning rate after warmup
      lr_by_model=ConfigDict(),  # {model name: peak lr} for models whose lr differs from `lr`
      weight_decay=1e-4,      # decoupled weight decay (adamw) / L2 added to grads (sgd)
      momentum=0.9,           # sgd momentum; adamw b1
      warmup_frac=0.1,        # fraction of steps with linear warmup, then cosine decay to 0
      grad_clip=1.0,          # global-norm clipping; 0 disables
      label_smoothing=0.0,
      batch_size=128,         # global batch (all processes)
      eval_batch_size=256,
      epochs=10.0,            # passes over the subset
      min_steps=100,
      max_steps=0,            # 0 = no cap
      eval_every=0,           # unused (evaluations along a run are `eval_at`); kept so configs keep their hash
  ))
  c.update(overrides)
  return c


# Evaluations along each run's budget (:mod:`jaxscale.train.evals`); they change no record.
EVAL_ALONG = dict(
    eval_at=(0.1, 0.3, 0.7, 1.0),  # fractions of the budget, sorted, in (0, 1]; points before 1.0 are measured
                              # at the nearest dispatch boundary on `eval_subset` images, 1.0 is the final one;
                              # 0.7: the report's budget check (the error's drop over the last 30%)
    eval_subset=256,          # images of eval_split (a fixed, seeded subset) the points before the end use
)
# Fields that say what is observed along a run, not what it computes (left out of the hashes).
OBSERVATION_FIELDS = tuple((stage, f) for stage in ("pretrain", "finetune") for f in EVAL_ALONG)


def base_config() -> ConfigDict:
  """The complete schema with defaults; every config starts from this."""
  c = ConfigDict()
  c.seed = 0
  c.model = ConfigDict(dict(
      name="vit_tiny_s",      # a registered model (see `jaxscale.models.names()`)
      dtype="float32",        # compute dtype; parameters stay float32
  ))
  c.data = ConfigDict(dict(
      data_dir="",            # tfds data dir; "" = tfds default (~/tensorflow_datasets or $TFDS_DATA_DIR)
      image_size=16,          # model input resolution (pixels)
      num_workers=0,          # grain worker processes (0 = in-process)
      prefetch=2,             # batches prefetched per worker
  ))
  # Mesh axes: `runs` spreads a group's runs over devices (no communication between runs); `data`
  # and `fsdp` split each run's batch and large weights. -1 = all remaining devices (one axis only).
  # runs = 0 (auto): each group takes the largest number of devices that divides the device count
  # and does not exceed its run count (a group of one run is data parallel over `data` = -1).
  c.mesh = ConfigDict(dict(runs=0, data=-1, fsdp=1))
  # The training engine: a group of runs of one model shape is one program (their step counts may differ).
  c.engine = ConfigDict(dict(
      group_size=64,          # most runs trained together (vmapped); larger groups are split
      steps_per_dispatch=50,  # K: train steps per compiled call (lax.scan); 1 = one step per call
      data_on_device="auto",  # auto | always | never: keep the group's images on device as uint8
      device_data_mb=1024.0,  # budget (MB) for images kept on device; "auto" stays under it
      sync_every_step=False,  # wait for each call's metrics before the next (the unbatched baseline)
      # Devices the CPU is split into when it is the backend (0 = one per usable core). XLA runs one
      # small op on about one core, so a 2-core machine trains a group 1.5-2.3x faster as two
      # devices, each training half of the runs. Records are bit-identical for the same device count.
      cpu_devices=0,
      resources='{"CPU": 1}',  # Ray engine: resources of one group's task, JSON (e.g. '{"GPU": 1}')
  ))
  c.pretrain = ConfigDict(dict(
      dataset="jaxscale_glyphs",
      train_split="train",
      eval_split="test",
      size=1000,              # Dp: number of pretraining images (class-balanced, nested)
      flip=False,             # horizontal flips (off for glyphs: letters are not symmetric)
      crop_padding=2,         # random-crop padding in pixels
      random_resized_crop=False,  # Inception-style crop of 8-100% of the area, aspect 3/4-4/3 (on device)
      optim=optim_config(),
      **EVAL_ALONG,
  ))
  c.finetune = ConfigDict(dict(
      dataset="jaxscale_digits",
      train_split="train",
      eval_split="test",
      size=500,               # Df: number of downstream images
      flip=False,
      crop_padding=1,
      random_resized_crop=False,
      init_checkpoint="",     # pretrain checkpoint dir; "" = <workdir>/pretrain
      optim=optim_config(lr=5e-4, epochs=20.0, min_steps=100, warmup_frac=0.05),
      **EVAL_ALONG,
  ))
  c.distill = ConfigDict(dict(
      teacher_checkpoint="",  # "" = no distillation (plain arm)
      teacher_model="",       # model name of the teacher; "" = same as student
      stage="pretrain",       # pretrain | finetune | both
      alpha=0.5,              # weight of the KD term
      temperature=2.0,
  ))
  c.checkpoint = ConfigDict(dict(every_steps=500, keep=2))
  c.study = ConfigDict(dict(
      models=("vit_tiny_s",),   # model rungs M
      dp=(1000,),               # pretraining sizes Dp
      df=(500,),                # downstream sizes Df
      arms=("plain", "distilled"),
      seeds=(0,),
      teacher_model="",         # "" = smallest rung of `models`
      teacher_dp=0,             # 0 = largest of `dp`
      teacher_seed=0,           # the teacher's seed: fixed, so another `seeds` set keeps the same teacher
      law="transfer_additive",  # joint law fitted per arm; "auto": fit transfer_additive and
                                # transfer_multiplicative, report the one with the lower mean backtest
                                # log-RMSE (both arms, every held-out input)
      bootstrap=200,            # bootstrap resamples for CIs
      # What the law is fitted on (LAW_POINTS): "final", each fine-tune's final error; "curves", every
      # point along each fine-tune's budget at or after `burn_in` (a fraction of its steps), with examples
      # seen T as a 4th input (transfer_additive_seen, docs/laws.md). "final" is the default: on the
      # default study's own records the curve law backtested worse in 5 of 6 backtests (e.g. plain arm,
      # largest Dp held out: log-RMSE 0.099 final against 0.121 curves; benchmarks/laws_on_curves.py as of
      # commit 4deab20, which fitted both laws without the study's law selection and cell bootstrap).
      law_points="final",
      burn_in=0.1,              # law_points="curves": points before this fraction of a run's steps are dropped
      # δ, in error units (top-1 error as a fraction): a paired difference whose interval lies
      # inside [−margin, +margin] is "no practical difference". Choose the smallest difference you
      # would act on; configs/default.py states the default's reason.
      margin=0.03,
      adaptive=False,           # `jaxscale study --adaptive`: add seed pairs round after round
      max_rounds=5,             # adaptive: a point may be judged at len(seeds)·2^k pairs, k < max_rounds;
                                # the false discovery rate is split over these looks (study/adaptive.py)
      max_runs=0,               # adaptive: at most this many runs added after round 1 (0: no budget
                                # but max_rounds); `--max-runs N` overrides it
      selection=("random",),    # how the Dp images are chosen, an axis of the grid (SELECTIONS)
      # Difficulty scores for the prototype selections: k-means on a backbone's pre-head features.
      scores=ConfigDict(dict(
          backbone="",          # a finished run directory; "" = the study's teacher
          k=0,                  # clusters; 0 = the number of classes of the pretraining dataset
          seed=0,               # the k-means seed
      )),
  ))
  return c


# ----------------------------------------------------------------------------- validation

# Groups whose keys are the user's to choose (model names); their values are checked by `validate`.
OPEN_GROUPS = ("lr_by_model",)


def _schema_mismatch(schema: Any, value: Any, path: str) -> str | None:
  """Returns a one-line problem with `value` against `schema`, or None."""
  if path.rsplit(".", 1)[-1] in OPEN_GROUPS:
    if isinstance(value, (ConfigDict, dict)):
      return None
    return f"config field '{path}' must map model names to values, got {type(value).__name__}"
  if isinstance(schema, ConfigDict):
    if not isinstance(value, (ConfigDict, dict)):
      return f"config field '{path}' must be a group of fields, got {type(value).__name__}"
    for key in value.keys():
      if key not in schema:
        known = ", ".join(sorted(schema.keys()))
        where = f"'{path}.{key}'" if path else f"'{key}'"
        return f"unknown config field {where}; known fields here: {known}"
    for key in value.keys():
      problem = _schema_mismatch(schema[key], value[key], f"{path}.{key}" if path else key)
      if problem:
        return problem
    return None
  if isinstance(schema, bool):
    ok = isinstance(value, bool)
  elif isinstance(schema, int):
    ok = isinstance(value, int) and not isinstance(value, bool)
  elif isinstance(schema, float):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  elif isinstance(schema, str):
    ok = isinstance(value, str)
  elif isinstance(schema, (tuple, list)):
    ok = isinstance(value, (tuple, list))
  else:
    ok = True
  if not ok:
    return (f"config field '{path}' must be {type(schema).__name__}, "
            f"got {value!r} ({type(value).__name__})")
  return None


def _non_finite(node: Any, path: str) -> str | None:
  """A one-line problem for the first number of the config that is inf or NaN (a learning rate,
  temperature, epochs, weight or margin that is not finite cannot train or be judged), or None."""
  if isinstance(node, (ConfigDict, dict)):
    for key in node.keys():
      problem = _non_finite(node[key], f"{path}.{key}")
      if problem:
        return problem
  elif isinstance(node, (tuple, list)):
    for value in node:
      if isinstance(value, float) and not math.isfinite(value):
        return f"{path} holds {value!r}; give finite numbers"
  elif isinstance(node, float) and not math.isfinite(node):
    return f"{path} must be a finite number, got {node!r}"
  return None


def _check(cond: bool, message: str) -> None:
  if not cond:
    raise JaxscaleError(message)


def check_burn_in(burn_in: float, what: str = "--burn-in") -> None:
  """The burn-in rule, wherever it is set (`what`): a fraction of a run's budget in [0, 1); the points
  before it are dropped from a fit on learning curves (at 1 only a run's final point would be left)."""
  _check(0 <= burn_in < 1, f"{what} must be a fraction of the budget in [0, 1) (e.g. 0.1: drop the first "
                           f"10% of each run's points), got {burn_in:g}")


def _validate_stage(c: ConfigDict, stage: str) -> None:
  """The checks of one training stage's fields (``config.pretrain`` or ``config.finetune``)."""
  s = c[stage]
  _check(s.size >= 1, f"config.{stage}.size must be >= 1, got {s.size}")
  _check(s.crop_padding >= 0, f"config.{stage}.crop_padding must be >= 0")
  o = s.optim
  _check(o.optimizer in OPTIMIZERS, f"config.{stage}.optim.optimizer must be one of {OPTIMIZERS}, got {o.optimizer!r}")
  _check(o.lr > 0, f"config.{stage}.optim.lr must be > 0, got {o.lr}")
  for model, lr in o.lr_by_model.items():
    _check(isinstance(lr, (int, float)) and lr > 0,
           f"config.{stage}.optim.lr_by_model.{model} must be a number > 0, got {lr!r}")
  _check(0 <= o.warmup_frac < 1, f"config.{stage}.optim.warmup_frac must be in [0, 1), got {o.warmup_frac}")
  _check(o.batch_size >= 1, f"config.{stage}.optim.batch_size must be >= 1, got {o.batch_size}")
  _check(o.eval_batch_size >= 1, f"config.{stage}.optim.eval_batch_size must be >= 1")
  _check(o.epochs > 0, f"config.{stage}.optim.epochs must be > 0, got {o.epochs}")
  _check(o.min_steps >= 1, f"config.{stage}.optim.min_steps must be >= 1, got {o.min_steps}")
  _check(o.max_steps >= 0, f"config.{stage}.optim.max_steps must be >= 0 (0 = no cap)")
  _check(o.max_steps == 0 or o.max_steps >= o.min_steps,
         f"config.{stage}.optim.max_steps ({o.max_steps}) is below min_steps ({o.min_steps}), so min_steps "
         f"would never be reached; raise max_steps, lower min_steps, or set max_steps=0 (no cap)")
  _check(0 <= o.label_smoothing < 1, f"config.{stage}.optim.label_smoothing must be in [0, 1)")
  at = list(s.eval_at)
  _check(len(at) > 0 and all(0 < f <= 1 for f in at) and at == sorted(set(at)),
         f"config.{stage}.eval_at must hold increasing fractions of the budget in (0, 1], e.g. (0.1, 0.3, 1.0); "
         f"got {tuple(at)}")
  _check(s.eval_subset >= 1, f"config.{stage}.eval_subset must be >= 1 images, got {s.eval_subset}")


def validate(config: ConfigDict) -> ConfigDict:
  """Checks `config` against the schema and value ranges; raises JaxscaleError on the first problem."""
  problem = _schema_mismatch(base_config(), config, "") or _non_finite(config, "config")
  if problem:
    raise JaxscaleError(problem)
  c = config
  _check(c.model.dtype in DTYPES, f"config.model.dtype must be one of {DTYPES}, got {c.model.dtype!r}")
  _check(c.data.image_size >= 8, f"config.data.image_size must be >= 8, got {c.data.image_size}")
  for axis in ("runs", "data", "fsdp"):
    allowed = (-1, 0) if axis == "runs" else (-1,)
    _check(c.mesh[axis] in allowed or c.mesh[axis] >= 1,
           f"config.mesh.{axis} must be {' or '.join(map(str, allowed))} or >= 1, got {c.mesh[axis]}")
  _check([c.mesh.runs, c.mesh.data, c.mesh.fsdp].count(-1) <= 1,
         "only one of config.mesh.runs, config.mesh.data and config.mesh.fsdp may be -1")
  e = c.engine
  _check(e.group_size >= 1, f"config.engine.group_size must be a positive integer, got {e.group_size}")
  _check(e.steps_per_dispatch >= 1,
         f"config.engine.steps_per_dispatch must be a positive integer, got {e.steps_per_dispatch}")
  _check(e.data_on_device in DATA_PLACEMENT,
         f"config.engine.data_on_device must be one of {DATA_PLACEMENT}, got {e.data_on_device!r}")
  _check(e.device_data_mb > 0, f"config.engine.device_data_mb must be > 0, got {e.device_data_mb}")
  _check(e.cpu_devices >= 0, f"config.engine.cpu_devices must be 0 (one per core) or a positive integer, "
         f"got {e.cpu_devices}")
  try:
    resources = json.loads(e.resources)
  except json.JSONDecodeError:
    resources = None
  _check(isinstance(resources, dict) and all(isinstance(v, (int, float)) and v >= 0 for v in resources.values()),
         f"config.engine.resources must be a JSON object of amounts such as '{{\"GPU\": 1}}', got {e.resources!r}")
  for stage in ("pretrain", "finetune"):
    _validate_stage(c, stage)
  d = c.distill
  _check(d.stage in KD_STAGES, f"config.distill.stage must be one of {KD_STAGES}, got {d.stage!r}")
  _check(0.0 <= d.alpha <= 1.0, f"config.distill.alpha must be in [0, 1], got {d.alpha}")
  _check(d.temperature > 0, f"config.distill.temperature must be > 0, got {d.temperature}")
  _check(c.checkpoint.keep >= 1, "config.checkpoint.keep must be >= 1")
  _check(c.checkpoint.every_steps >= 1, "config.checkpoint.every_steps must be >= 1")
  _validate_study(c.study)
  _validate_selection(c.study)
  _validate_law_points(c)
  return config


def _validate_study(s: ConfigDict) -> None:
  """The study grid's axes and the analysis settings (``config.study``)."""
  for name in ("models", "dp", "df", "arms", "seeds"):  # the grid's axes
    values = list(s[name])
    _check(len(values) > 0, f"config.study.{name} is empty; give at least one value")
    _check(len(set(values)) == len(values), f"config.study.{name} repeats a value ({values}); list each once")
  for arm in s.arms:
    _check(arm in ARMS, f"config.study.arms may hold {', '.join(map(repr, ARMS))}, got {arm!r}")
  _check("smoothed" not in s.arms or "distilled" in s.arms,
         "config.study.arms has 'smoothed' (the control of the distilled arm, trained beside it with the "
         "teacher's config) but not 'distilled'; add 'distilled' or drop 'smoothed'")
  for name in ("dp", "df"):
    for v in s[name]:
      _check(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
             f"config.study.{name} must hold positive integers, got {v!r}")
  for v in s.seeds:
    _check(isinstance(v, int) and not isinstance(v, bool) and v >= 0,
           f"config.study.seeds must hold non-negative integers, got {v!r}")
  for v in s.models:
    _check(isinstance(v, str) and v != "", f"config.study.models must hold model names, got {v!r}")
  _check(s.bootstrap >= 0, "config.study.bootstrap must be >= 0")
  _check(isinstance(s.margin, (int, float)) and not isinstance(s.margin, bool) and s.margin > 0,
         f"config.study.margin must be a positive number (the smallest difference in error that "
         f"matters, e.g. 0.03), got {s.margin!r}")
  _check(isinstance(s.max_rounds, int) and s.max_rounds >= 1,
         f"config.study.max_rounds must be an integer >= 1, got {s.max_rounds!r}")
  _check(isinstance(s.max_runs, int) and not isinstance(s.max_runs, bool) and s.max_runs >= 0,
         f"config.study.max_runs must be an integer >= 0 (0: no run budget), got {s.max_runs!r}")


def _validate_law_points(c: ConfigDict) -> None:
  """What the study's law is fitted on: one of LAW_POINTS; with "curves", a burn-in in [0, 1) and
  fine-tune evaluations along the budget at or after it (`finetune.eval_at` fractions below 1.0; the
  final point alone leaves examples seen T fixed per Df, so its exponent could not be fitted). The
  law's form (one with a T input) is checked with the other law checks (`study.runner.check_law`)."""
  s = c.study
  _check(s.law_points in LAW_POINTS, f"config.study.law_points must be one of {', '.join(map(repr, LAW_POINTS))} "
         f"(fit the law on each fine-tune's final error, or on the points along its budget), got {s.law_points!r}")
  check_burn_in(s.burn_in, "config.study.burn_in")
  if s.law_points == "curves":
    along = [f for f in c.finetune.eval_at if s.burn_in <= f < 1]
    _check(bool(along), f"config.study.law_points='curves' fits the law on the fine-tunes' points along their "
           f"budget, but config.finetune.eval_at {tuple(c.finetune.eval_at)} has none at or after "
           f"config.study.burn_in={s.burn_in:g} before the end; add such fractions (e.g. (0.1, 0.3, 0.7, 1.0)), "
           f"lower burn_in, or set law_points='final'")


def _validate_selection(s: ConfigDict) -> None:
  """The selection axis and its difficulty scores' settings."""
  values = list(s.selection)
  _check(len(values) > 0, "config.study.selection is empty; give at least one value, e.g. 'random'")
  _check(len(set(values)) == len(values), f"config.study.selection repeats a value ({values}); list each once")
  for v in values:
    _check(v in SELECTIONS, f"config.study.selection may hold {', '.join(map(repr, SELECTIONS))}, got {v!r}")
  k = s.scores.k
  _check(k == 0 or k >= 2, f"config.study.scores.k must be 0 (the number of classes) or >= 2 clusters, got {k}")
  _check(s.scores.seed >= 0, f"config.study.scores.seed must be >= 0, got {s.scores.seed}")


def from_dict(values: dict) -> ConfigDict:
  """A validated config from stored values (e.g. a study.json); fields added since keep their defaults."""
  def overlay(base: ConfigDict, new: dict) -> None:
    for key, value in new.items():
      if isinstance(value, dict) and key in base and isinstance(base[key], ConfigDict):
        overlay(base[key], value)
      else:
        base[key] = tuple(value) if isinstance(value, list) else value
  config = base_config()
  problem = _schema_mismatch(config, ConfigDict(values), "")
  if problem:
    raise JaxscaleError(problem)
  overlay(config, values)
  return validate(config)


def config_hash(config: ConfigDict, exclude: Sequence[str] = ()) -> str:
  """A short stable hash of the config's values (top-level groups in `exclude` left out)."""
  d = config.to_dict()
  for key in exclude:
    d.pop(key, None)
  blob = json.dumps(d, sort_keys=True, default=str).encode()
  return hashlib.sha256(blob).hexdigest()[:16]


# Fields that say where things are, not what a run computes (left out of `result_hash`).
PATH_FIELDS = (("data", "data_dir"), ("finetune", "init_checkpoint"), ("distill", "teacher_checkpoint"))


def result_hash(config: ConfigDict) -> str:
  """Hash of the fields that determine one run's result: the study grid and local paths left out."""
  c = ConfigDict(config.to_dict())
  for group, field in PATH_FIELDS:
    c[group][field] = ""
  for group, field in OBSERVATION_FIELDS:
    del c[group][field]
  return config_hash(c, exclude=("study", "engine", "mesh"))


# ----------------------------------------------------------------------------- loading

def load(config_arg: str, overrides: Sequence[str] = ()) -> ConfigDict:
  """Loads ``path[:arg]`` with ``--config.a.b=value`` overrides and validates it.

  Args:
    config_arg: a config file path, optionally ``path:arg`` passed to ``get_config(arg)``.
    overrides: command-line items such as ``--config.pretrain.optim.lr=3e-4``.
  """
  from absl import flags
  from ml_collections import config_flags

  path, has_arg, arg = config_arg.partition(":")
  if not os.path.isfile(path):
    raise JaxscaleError(f"config file {path!r} does not exist; pass --config PATH to a file with get_config()")
  check_config_file(path, arg if has_arg else None)

  def parse(items):
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", default=None, flag_values=fv, lock_config=True)
    argv = ["jaxscale", f"--config={config_arg}", *items]
    saved, sys.argv = sys.argv, argv  # config_flags also reads sys.argv for parent fields
    try:
      fv(argv)
      return fv.config
    finally:
      sys.argv = saved

  try:
    plain = parse([])
  except flags.Error as e:  # get_config() itself failed: a mistake in the config file
    cause = e.__cause__ or e
    text = str(cause).strip()
    if "Traceback (most recent call last)" in text:  # config_flags quotes the traceback: keep its gist
      raise JaxscaleError(f"config file {path}{_failing_line(text, path)}: {text.splitlines()[-1]}") from None
    raise JaxscaleError(f"config file {path}: {type(cause).__name__}: {cause}") from None
  try:
    config = parse(overrides) if overrides else plain
  except (flags.Error, KeyError, AttributeError, ValueError, TypeError) as e:
    raise JaxscaleError(_override_error(plain, overrides, e)) from None
  if not isinstance(config, ConfigDict):
    raise JaxscaleError(f"{path}: get_config() must return an ml_collections.ConfigDict")
  config.unlock()
  validate(config)
  check_shadowed_overrides(config, overrides)
  return config


def _failing_line(traceback_text: str, path: str) -> str:
  """' line N (`source`)' of the config file's last frame in a quoted traceback, or ''."""
  lines = traceback_text.splitlines()
  name = os.path.basename(path)
  for i in range(len(lines) - 1, -1, -1):
    m = re.match(r'\s*File "(.+)", line (\d+)', lines[i])
    if m and os.path.basename(m.group(1)) == name:
      source = lines[i + 1].strip() if i + 1 < len(lines) else ""
      return f" line {m.group(2)}" + (f" (`{source}`)" if source and not source.startswith("raise") else "")
  return ""


def check_config_file(path: str, arg: str | None) -> None:
  """One-line errors for a file that cannot be read as a config, found before it runs: a syntax
  error, no ``get_config``, or a variant ``path:ARG`` that a ``def get_config`` never reads (it
  would give the config without the variant, silently)."""
  import ast
  try:
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), filename=path)
  except SyntaxError as e:
    raise JaxscaleError(f"config file {path} line {e.lineno}: {e.msg}; fix it") from None
  except UnicodeDecodeError:
    raise JaxscaleError(f"config file {path} is not UTF-8 text; save it as UTF-8") from None
  bound = {}
  for node in tree.body:
    if isinstance(node, ast.FunctionDef):
      bound[node.name] = node
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      bound.update({(a.asname or a.name): a for a in node.names})
    elif isinstance(node, ast.Assign):
      bound.update({t.id: node for t in node.targets if isinstance(t, ast.Name)})
  fn = bound.get("get_config")
  if fn is None:
    raise JaxscaleError(f"config file {path} defines no get_config; add `def get_config(arg=None):` "
                        "returning a ConfigDict (start from jaxscale.config.base_config())")
  if arg is None or not isinstance(fn, ast.FunctionDef):
    return
  params = [a.arg for a in fn.args.posonlyargs + fn.args.args]
  reads = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
  if not params or params[0] not in reads:
    raise JaxscaleError(f"config file {path} has no variants (its get_config ignores its argument), so "
                        f"':{arg}' would change nothing; drop ':{arg}' or use a config that has it")


def _trained_models(c: ConfigDict) -> set[str]:
  """The models a config trains: its model, the study's rungs and the study's teacher."""
  return {c.model.name, *c.study.models, c.study.teacher_model or c.study.models[0]}


def check_shadowed_overrides(config: ConfigDict, overrides: Sequence[str]) -> None:
  """Refuses ``--config.STAGE.optim.lr=V`` where ``STAGE.optim.lr_by_model`` sets the rate of a
  model the config trains (the per-model rate wins, :func:`jaxscale.train.steps.peak_lr`), unless
  that entry is overridden too: a rate the user typed never goes silently unused."""
  named = {item.lstrip("-").split("=", 1)[0] for item in overrides}
  for stage in ("pretrain", "finetune"):
    if f"config.{stage}.optim.lr" not in named:
      continue
    per_model = config[stage].optim.lr_by_model
    for model in sorted(_trained_models(config)):
      field = f"config.{stage}.optim.lr_by_model.{model}"
      if model in per_model and field not in named:
        raise JaxscaleError(
            f"--config.{stage}.optim.lr does not reach {model}: {field} = {per_model[model]:g} sets its "
            f"learning rate and wins; override that field too (--{field}=...)")


def _override_error(config: ConfigDict, overrides: Sequence[str], error: Exception) -> str:
  """One line naming the override that failed: a field that does not exist, or a bad value."""
  for item in overrides:
    name = item.lstrip("-").split("=", 1)[0]
    node = config
    for part in name.split(".")[1:]:
      if not isinstance(node, ConfigDict) or part not in node:
        return f"cannot override '{name}': the config has no field '{name[len('config.'):]}'"
      node = node[part]
  detail = " ".join(str(error).split()).replace("flag --", "--")
  return f"bad config override: {detail}"


def split_config_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Splits argv into (``--config.x=...`` overrides, everything else)."""
  overrides, rest = [], []
  for item in argv:
    (overrides if item.startswith("--config.") else rest).append(item)
  return overrides, rest


__all__ = ["base_config", "optim_config", "validate", "load", "config_hash", "split_config_args",
           "ml_collections"]
