"""`jaxscale train`: train one stage of one run (a group of one) and append its record."""

from __future__ import annotations

import argparse
import json
import os
import sys

HELP = "train one stage (pretrain | finetune) of one run and append its record to WORKDIR/records.jsonl"

EXIT_PREEMPTED = 143  # 128 + SIGTERM: a checkpoint was saved; run the same command again to resume


def add_arguments(parser: argparse.ArgumentParser) -> None:
  from jaxscale.cli import add_config_argument
  add_config_argument(parser)
  parser.add_argument("--stage", required=True, choices=("pretrain", "finetune"),
                      help="which stage to train")
  parser.add_argument("--workdir", required=True,
                      help="run directory: the stage in WORKDIR/STAGE, records in WORKDIR/records.jsonl")
  parser.add_argument("--no-progress", action="store_true", help="no progress display")


def single_run(config, stage: str, workdir: str):
  """The one run of `jaxscale train`: (Run, record fields) from the config."""
  from jaxscale.train import checkpoint, loop
  distil = bool(config.distill.teacher_checkpoint) and loop.distils_in(config, stage)
  alpha = float(config.distill.alpha) if distil else 0.0
  teacher = loop.teacher_model(config) if distil else ""
  stage_dir = os.path.join(workdir, stage)
  if stage == "pretrain":
    run = loop.Run("run", int(config.seed), int(config.pretrain.size), alpha=alpha, out_dir=stage_dir,
                   meta=(("dp", int(config.pretrain.size)), ("distilled", distil), ("teacher", teacher)))
    return run, {"dp": int(config.pretrain.size), "df": 0, "distilled": distil, "teacher": teacher,
                 "alpha": alpha}
  init = config.finetune.init_checkpoint or os.path.join(workdir, "pretrain")
  pre = checkpoint.open_finished(init, "pretrain checkpoint")
  run = loop.Run("run", int(config.seed), int(config.finetune.size), alpha=alpha, init=init)
  return run, {"dp": int(pre.get("dp", 0)), "df": int(config.finetune.size),
               "distilled": distil or bool(pre.get("distilled")), "teacher": teacher or pre.get("teacher", ""),
               "alpha": alpha}


def run(args: argparse.Namespace) -> int:
  from jaxscale.cli import load_config
  config = load_config(args)
  import jax

  from jaxscale import fileio
  from jaxscale.study import records
  from jaxscale.train import loop, sharding
  sharding.initialize_distributed()
  sharding.enable_compilation_cache()
  if jax.process_index() == 0:
    fileio.lock_workdir(args.workdir, "jaxscale train")  # one writer per workdir
  path = records.workdir_paths(args.workdir)["records"]
  done = [r for r in records.read(path) if r.get("stage") == args.stage and r.get("cell_id") == "run"]
  if done:
    print(f"{args.stage} in {args.workdir} is already finished; not retraining (use a new --workdir to train again)",
          file=sys.stderr)
    print(json.dumps(done[0], sort_keys=True))
    return 0
  one, fields = single_run(config, args.stage, args.workdir)
  try:
    (result,) = loop.train_group(config, args.stage, [one], os.path.join(args.workdir, args.stage, "group"),
                                 show_progress=not args.no_progress, desc=f"{args.stage} {config.model.name}")
  except loop.Preempted as e:
    print(f"jaxscale: {e}", file=sys.stderr)
    return EXIT_PREEMPTED
  flops = loop.stage_flops(config, args.stage, config.model.name,
                          fields["teacher"] if fields["alpha"] > 0 else "", result["steps"])
  record = records.build(config, args.stage, result, cell_id="run", seed=int(config.seed), flops=flops, **fields)
  if jax.process_index() == 0:
    records.append(path, record)
    print(json.dumps(record, sort_keys=True))
  return 0
