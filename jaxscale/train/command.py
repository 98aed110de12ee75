"""`jaxscale train`: run one stage of one cell and append its record."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "train one stage (pretrain | finetune) of one run and append its record to WORKDIR/records.jsonl"

EXIT_PREEMPTED = 143  # 128 + SIGTERM: a checkpoint was saved; run the same command again to resume


def add_arguments(parser: argparse.ArgumentParser) -> None:
  from jaxscale.cli import add_config_argument
  add_config_argument(parser)
  parser.add_argument("--stage", required=True, choices=("pretrain", "finetune"),
                      help="which stage to train")
  parser.add_argument("--workdir", required=True,
                      help="run directory: checkpoints in WORKDIR/STAGE, records in WORKDIR/records.jsonl")
  parser.add_argument("--no-progress", action="store_true", help="no progress display")


def run(args: argparse.Namespace) -> int:
  from jaxscale.cli import load_config
  config = load_config(args)
  from jaxscale.train import loop, sharding
  sharding.initialize_distributed()
  done = loop.finished_record(args.workdir, args.stage)
  if done is not None:
    print(f"{args.stage} in {args.workdir} is already finished; not retraining (use a new --workdir to train again)",
          file=sys.stderr)
    print(json.dumps(done, sort_keys=True))
    return 0
  try:
    record = loop.run_stage(config, args.stage, args.workdir, show_progress=not args.no_progress)
  except loop.Preempted as e:
    print(f"jaxscale: {e}", file=sys.stderr)
    return EXIT_PREEMPTED
  import jax
  if jax.process_index() == 0:
    print(json.dumps(record, sort_keys=True))
  return 0
