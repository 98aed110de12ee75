"""Runs one stage in a fresh process (for kill/preemption tests).

``python stage_script.py CONFIG.json STAGE WORKDIR LOG.jsonl [KILL_STEP SIGNAL]``: loads the config
from JSON, logs every train step's labels to LOG.jsonl (so tests can compare the examples seen),
and sends itself SIGNAL (``KILL`` or ``TERM``) when update KILL_STEP is about to run.
Exit status: 0 done, 143 preempted (SIGTERM), -9 killed.
"""

import json
import os
import signal
import sys

from ml_collections import ConfigDict

from jaxscale.train import loop, sharding, steps as steps_lib

config_path, stage, workdir, log_path = sys.argv[1:5]
kill_step = int(sys.argv[5]) if len(sys.argv) > 5 else -1
sig = getattr(signal, "SIG" + sys.argv[6]) if len(sys.argv) > 6 else None
config = ConfigDict(json.load(open(config_path)))
pending = {}

shard_batch, learning_rate = sharding.shard_batch, steps_lib.learning_rate


def logging_shard_batch(batch, mesh):
  if "mask" not in batch:
    pending["labels"] = [int(x) for x in batch["label"]]
  return shard_batch(batch, mesh)


def logging_learning_rate(optim, step, total):
  with open(log_path, "a") as f:
    f.write(json.dumps({"step": step, "labels": pending["labels"]}) + "\n")
  if step == kill_step:
    os.kill(os.getpid(), sig)
  return learning_rate(optim, step, total)


sharding.shard_batch = logging_shard_batch
steps_lib.learning_rate = logging_learning_rate
try:
  loop.run_stage(config, stage, workdir, show_progress=False)
except loop.Preempted as e:
  print(e)
  sys.exit(143)
