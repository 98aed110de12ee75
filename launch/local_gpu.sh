#!/usr/bin/env bash
# Runs a study on all GPUs of this machine with bfloat16 compute.
# Usage: launch/local_gpu.sh CONFIG WORKDIR [--config.x=y ...]
# Needs a CUDA jaxlib in .venv: .venv/bin/pip install -U "jax[cuda12]"
set -euo pipefail
config=${1:?usage: local_gpu.sh CONFIG WORKDIR [overrides]}
workdir=${2:?usage: local_gpu.sh CONFIG WORKDIR [overrides]}
shift 2
cd "$(dirname "$0")/.."
make install
exec .venv/bin/jaxscale study --config "$config" --workdir "$workdir" \
  --config.model.dtype=bfloat16 "$@"
