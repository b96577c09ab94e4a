#!/usr/bin/env bash
# GPU training benchmark of issue 7 in one go: baseline vs tui-lora on a Qwen2.5-0.5B-shaped model.
# Run from the repository root on the GPU machine, with .whl/ carried along (datasets, dill,
# multiprocess and tomli_w wheels: the packages that machine lacks). Installs nothing from the
# network; ends within about 6 minutes on an H100 or H200. Arguments go to bench/gpu_training.py.
set -eu
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/datasets-*.whl .whl/dill-*.whl .whl/multiprocess-*.whl .whl/tomli_w-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec python3 bench/gpu_training.py "$@"
