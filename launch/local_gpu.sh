#!/usr/bin/env bash
# Runs a study on all GPUs of this machine with bfloat16 compute.
# Usage: launch/local_gpu.sh CONFIG WORKDIR [--config.x=y ...]
#   e.g. launch/local_gpu.sh configs/paper.py:imagenet100,cifar100 runs/paper-cifar100
# Installs jaxscale with its `cuda12` extra into .venv: jax, jaxlib and the CUDA plugin are pinned
# together there, so nothing is upgraded or downgraded under anything else.
set -euo pipefail
config=${1:?usage: local_gpu.sh CONFIG WORKDIR [overrides]}
workdir=${2:?usage: local_gpu.sh CONFIG WORKDIR [overrides]}
shift 2
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -e '.[cuda12]'
.venv/bin/python -c 'import jax; assert jax.default_backend() == "gpu", jax.devices(); print(jax.devices())'
.venv/bin/jaxscale plan --config "$config" --no-search --config.model.dtype=bfloat16 "$@"  # refuses a grid that does not fit
exec .venv/bin/jaxscale study --config "$config" --workdir "$workdir" \
  --config.model.dtype=bfloat16 "$@"
