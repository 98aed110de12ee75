#!/usr/bin/env bash
# Runs a study on all GPUs of this machine with bfloat16 compute.
# Usage: launch/local_gpu.sh CONFIG WORKDIR [--config.x=y ...]
#   e.g. launch/local_gpu.sh configs/paper.py:imagenet100,cifar100 runs/paper-cifar100
# Installs jaxscale with its `cuda12` extra into .venv: jax, jaxlib and the CUDA plugin are pinned
# together there, so nothing is upgraded or downgraded under anything else.
# ENGINE=ray (default): one group of runs per GPU, as Ray tasks (many runs at once; adds the `ray`
# extra). ENGINE=spmd: one run at a time sharded over all GPUs (a model too large for one GPU).
set -euo pipefail
engine=${ENGINE:-ray}
config=${1:?usage: local_gpu.sh CONFIG WORKDIR [overrides]}
workdir=${2:?usage: local_gpu.sh CONFIG WORKDIR [overrides]}
shift 2
cd "$(dirname "$0")/.."
python3 -m venv .venv
extras=cuda12; if [ "$engine" = ray ]; then extras=cuda12,ray; fi
.venv/bin/pip install -q -e ".[$extras]"
.venv/bin/python -c 'import jax; assert jax.default_backend() == "gpu", jax.devices(); print(jax.devices())'
.venv/bin/jaxscale plan --config "$config" --no-search --config.model.dtype=bfloat16 "$@"  # refuses a grid that does not fit
if [ "$engine" = ray ]; then  # Ray starts on this machine and gives each group task one GPU
  exec .venv/bin/jaxscale study --engine ray --config "$config" --workdir "$workdir" \
    --config.model.dtype=bfloat16 --config.engine.resources='{"GPU": 1}' "$@"
fi
exec .venv/bin/jaxscale study --config "$config" --workdir "$workdir" \
  --config.model.dtype=bfloat16 "$@"
