"""Script for the multi-process test: a stand-in group on a runs=1 x data=2 x fsdp=2 mesh, 1 or 2 processes.

``python multiproc.py OUT.json NPROC PROC_ID PORT CKPT_DIR`` (NPROC=1: one process, 4 devices;
NPROC=2: two processes over localhost with gloo CPU collectives, 2 devices each). Every process holds
the same host arrays and places them on the global mesh (as the engine does); process 0 writes the loss
curve and final kernel. The group state is also saved to and restored from CKPT_DIR (orbax, with the
shared-directory check).
"""

import json
import os
import sys

import jax

out, nproc, pid, port, ckpt_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
if nproc > 1:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=nproc, process_id=pid)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import standin  # noqa: E402
from jaxscale.train import checkpoint as ckpt_lib, sharding, steps as steps_lib  # noqa: E402


def to_host(tree):
  """A (possibly process-sharded) pytree as NumPy on every process."""
  from jax.experimental import multihost_utils
  fetch = lambda x: (np.asarray(multihost_utils.process_allgather(x, tiled=True))
                     if isinstance(x, jax.Array) and not x.is_fully_addressable else np.asarray(x))
  return jax.tree_util.tree_map(fetch, tree)


mesh, graphdef, state, state_sh, chunk, consts, _ = standin.group((1, 2, 2), runs=2)
spec = steps_lib.StepSpec(graphdef=graphdef, settings=standin.SETTINGS, batch_size=16, on_device=False)
sh = steps_lib.chunk_input_shardings(spec, mesh)
consts = jax.tree_util.tree_map(sharding.put, consts, sh["consts"])
abstract = jax.eval_shape(lambda s: s, state)
images, labels = standin.make_images(6, 16, 2)
ckpt_lib.check_shared_directory(ckpt_dir)
losses = []
with ckpt_lib.GroupCheckpoints(ckpt_dir) as ckpts:
  for i in range(6):
    data = {"images": sharding.put(images[i:i + 1], sh["data"]["images"]),
            "labels": sharding.put(labels[i:i + 1], sh["data"]["labels"])}
    state, loss = chunk(state, consts, None, data, sharding.put(np.full((1, 2), 3e-3, np.float32), sh["lr"]),
                        sharding.put(np.ones((1, 2), bool), sh["valid"]))
    losses.append(to_host(loss)[0].tolist())
    if i == 2:
      ckpts.save(3, state, {"at": 3})
  restored, meta = ckpts.restore(abstract, state_sh)
kernel = to_host(state.params["kernel"])
if jax.process_index() == 0:
  with open(out, "w") as f:
    json.dump({"losses": losses, "kernel": kernel.tolist(), "restored_step": to_host(restored.step).tolist(),
               "meta": meta, "processes": jax.process_count(), "devices": jax.device_count()}, f)
