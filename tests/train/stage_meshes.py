"""Script for the slow mesh test: one tiny pretrain stage per mesh, loss curves to JSON.

``python stage_meshes.py CONFIG.json OUT.json WORKROOT 1x1 8x1 2x4`` (run with 8 host devices).
"""

import json
import os
import sys

import jax
from ml_collections import ConfigDict

from jaxscale.train import loop

config_path, out, root = sys.argv[1:4]
result = {}
for mesh in sys.argv[4:]:
  data, fsdp = map(int, mesh.split("x"))
  config = ConfigDict(json.load(open(config_path)))
  config.mesh.update(data=data, fsdp=fsdp)
  devices = jax.devices()[:data * fsdp]
  real = jax.devices
  jax.devices = lambda *a: devices  # the mesh takes the first data * fsdp devices
  try:
    record = loop.run_stage(config, "pretrain", os.path.join(root, mesh), show_progress=False)
  finally:
    jax.devices = real
  result[mesh] = {"losses": loop.stage_losses(os.path.join(root, mesh), "pretrain"),
                  "eval_loss": record["eval_loss"]}
with open(out, "w") as f:
  json.dump(result, f)
