#!/usr/bin/env bash
# One command for a lent accelerator (one GPU or TPU host), under 8 minutes:
#
#     bash bench/accelerator.sh            # from the repository root, clip_jax installed
#                                          # (pip install -e ".[gpu]" or ".[tpu]")
#
# Prints, for ViT-B/32, B/16 and L/14 in bf16 at the largest local batch that fits,
# examples/s and MFU against the chip's peak; attention=cudnn vs xla; the 32k-batch
# embedding-cache accumulation step (B/32, one device); the input pipeline's rate on
# this host; and appends them as rows to bench/RESULTS.md (bench/accelerator.py says how).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
# Hand XLA most of the accelerator's memory up front; the step sizes itself from it.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
timeout 470 python bench/accelerator.py --budget 420 --record bench/RESULTS.md "$@"
