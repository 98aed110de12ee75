#!/usr/bin/env bash
# Starts a study on every worker of a Cloud TPU VM (single- or multi-host).
# Usage: launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [--config.x=y ...]
#   e.g. launch/tpu_vm.sh my-v5e-8 us-west4-a configs/paper.py:imagenet1k /mnt/shared/paper-1k \
#          --config.data.data_dir=gs://my-bucket/tfds
# WORKDIR must be visible to every worker (e.g. a gcsfuse or Filestore mount); see README.md.
# Installs jaxscale with its `tpu` extra (jax, jaxlib and libtpu pinned together) on every worker.
# ENGINE=spmd (default): every worker joins one SPMD program that trains one run at a time.
# ENGINE=ray: Ray on every worker (head on worker 0), the driver on worker 0; each group of runs is a
# task with RESOURCES (default '{"TPU": 4}': the chips of one v4/v5p host; Ray detects TPU chips).
set -euo pipefail
engine=${ENGINE:-spmd}
resources=${RESOURCES:-'{"TPU": 4}'}
tpu=${1:?usage: tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [overrides]}
zone=${2:?}; config=${3:?}; workdir=${4:?}
shift 4
repo=$(cd "$(dirname "$0")/.." && pwd)
gcloud compute tpus tpu-vm scp --recurse --zone "$zone" --worker=all "$repo" "$tpu":~/jaxscale
if [ "$engine" = ray ]; then
  head_ip=$(gcloud compute tpus tpu-vm describe "$tpu" --zone "$zone" --format='value(networkEndpoints[0].ipAddress)')
  gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "
    set -e; cd ~/jaxscale
    python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu,ray]'
    if hostname -I | grep -qw '$head_ip'; then .venv/bin/ray start --head --port=6379
    else sleep 15; .venv/bin/ray start --address='$head_ip:6379'; fi"
  exec gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=0 --command "
    cd ~/jaxscale && .venv/bin/jaxscale study --engine ray --address auto --config '$config' --workdir '$workdir' \
      --config.model.dtype=bfloat16 --config.engine.resources='$resources' $*"
fi
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "
  set -e; cd ~/jaxscale
  python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]'
  .venv/bin/jaxscale study --config '$config' --workdir '$workdir' --config.model.dtype=bfloat16 $*"
