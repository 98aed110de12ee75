"""Script for the multi-process test: the stand-in trained on a 4-device mesh, 1 or 2 processes.

``python multiproc.py OUT.json NPROC PROC_ID PORT CKPT_DIR`` (NPROC=1: one process, 4 devices;
NPROC=2: two processes over localhost with gloo CPU collectives, 2 devices each). Each process
feeds its own half of every global batch; process 0 writes the loss curve and final kernel. The
state is also saved to and restored from CKPT_DIR (orbax, with the shared-directory check).
"""

import json
import os
import sys
import types

import jax

out, nproc, pid, port, ckpt_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
if nproc > 1:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=nproc, process_id=pid)

import grain  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import standin  # noqa: E402
from jaxscale.train import checkpoint as ckpt_lib, sharding, steps as steps_lib  # noqa: E402

mesh = sharding.make_mesh(types.SimpleNamespace(data=2, fsdp=2))
graphdef, params = nnx.split(standin.StandIn(5, nnx.Rngs(0)), nnx.Param)
rng = jax.random.key(1)
abstract = jax.eval_shape(lambda p: steps_lib.create_state(p, standin.SETTINGS, rng), params)
sh = steps_lib.state_shardings(abstract, standin.SETTINGS, mesh)
host = jax.tree_util.tree_map(np.asarray, params)
placed = jax.tree_util.tree_map(
    lambda x, s: jax.make_array_from_callback(x.shape, s, lambda i, x=x: x[i]), host, sh.params)
state = jax.jit(lambda p: steps_lib.create_state(p, standin.SETTINGS, rng), out_shardings=sh)(placed)
step = steps_lib.make_train_step(graphdef, standin.SETTINGS, state_sharding=sh, mesh=mesh)
per = 16 // jax.process_count()
lo = jax.process_index() * per
losses = []
batches = standin.make_batches(6, 16)
it = iter(grain.MapDataset.range(100).to_iter_dataset())
ckpts = ckpt_lib.StageCheckpoints(ckpt_dir, every_steps=3)
ckpt_lib.check_shared_directory(ckpt_dir)
for i, b in enumerate(batches):
  local = {k: v[lo:lo + per] for k, v in b.items()}
  state, m = step(state, sharding.shard_batch(local, mesh), None, np.float32(3e-3))
  next(it)
  losses.append(float(m["loss"]))
  if i == 2:
    ckpts.save(state, it, {"at": 3})
restored, meta = ckpts.restore(abstract, sh, iter(grain.MapDataset.range(100).to_iter_dataset()))
ckpts.close()
kernel = sharding.to_host(state.params["kernel"].get_value())
if jax.process_index() == 0:
  with open(out, "w") as f:
    json.dump({"losses": losses, "kernel": kernel.tolist(), "restored_step": int(sharding.to_host(restored.step)),
               "meta": meta, "processes": jax.process_count(), "devices": jax.device_count()}, f)
