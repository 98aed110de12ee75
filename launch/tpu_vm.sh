#!/usr/bin/env bash
# Starts a study on every worker of a Cloud TPU VM (single- or multi-host).
# Usage: launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [--config.x=y ...]
#   e.g. launch/tpu_vm.sh my-v5e-8 us-west4-a configs/paper.py:imagenet1k /mnt/shared/paper-1k \
#          --config.data.data_dir=gs://my-bucket/tfds
# WORKDIR must be visible to every worker (e.g. a gcsfuse or Filestore mount); see README.md.
# Installs jaxscale with its `tpu` extra (jax, jaxlib and libtpu pinned together) on every worker.
set -euo pipefail
tpu=${1:?usage: tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [overrides]}
zone=${2:?}; config=${3:?}; workdir=${4:?}
shift 4
repo=$(cd "$(dirname "$0")/.." && pwd)
gcloud compute tpus tpu-vm scp --recurse --zone "$zone" --worker=all "$repo" "$tpu":~/jaxscale
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "
  set -e; cd ~/jaxscale
  python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]'
  .venv/bin/jaxscale study --config '$config' --workdir '$workdir' --config.model.dtype=bfloat16 $*"
