"""Runs one group in a fresh process (for the kill, preemption and device-count tests).

``python group_script.py CONFIG.json SPEC.json OUT.json [KILL_DISPATCH SIGNAL]``: SPEC holds the
stage, the group directory and the runs (or ``groups``: a list of [group directory, runs], trained in
turn); the results go to OUT.json. With KILL_DISPATCH the process
sends itself SIGNAL (``KILL`` or ``TERM``) right after dispatch KILL_DISPATCH (0-based) is queued.
Exit status: 0 done, 143 preempted (SIGTERM), -9 killed.
"""

import json
import os
import signal
import sys

from ml_collections import ConfigDict

from jaxscale.train import loop, steps as steps_lib

config_path, spec_path, out = sys.argv[1:4]
kill_at = int(sys.argv[4]) if len(sys.argv) > 4 else -1
sig = getattr(signal, "SIG" + sys.argv[5]) if len(sys.argv) > 5 else None
config = ConfigDict(json.load(open(config_path)))
spec = json.load(open(spec_path))
make_train_chunk = steps_lib.make_train_chunk


def killing_make_train_chunk(*args, **kwargs):
  chunk = make_train_chunk(*args, **kwargs)
  calls = [0]

  def wrapped(*a):
    result = chunk(*a)
    if calls[0] == kill_at:
      os.kill(os.getpid(), sig)
    calls[0] += 1
    return result
  return wrapped


steps_lib.make_train_chunk = killing_make_train_chunk
try:
  if "groups" in spec:   # several groups, one after the other: [[group_dir, runs], ...] -> their results
    results = [loop.train_group(config, spec["stage"], [loop.Run(**r) for r in runs], group_dir, show_progress=False)
               for group_dir, runs in spec["groups"]]
  else:
    results = loop.train_group(config, spec["stage"], [loop.Run(**r) for r in spec["runs"]], spec["group_dir"],
                               show_progress=False)
except loop.Preempted as e:
  print(e)
  sys.exit(143)
with open(out, "w") as f:
  json.dump(results, f)
