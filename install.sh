#!/usr/bin/env bash
# Sets up .venv with everything the harness needs.
# On a machine without an NVIDIA GPU the CPU build of torch goes in first, so that
# no dependency pulls the multi-GB CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! command -v nvidia-smi >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q torch==2.13.0
fi
.venv/bin/python -m pip install -q -e ".[dev]"
echo "installed: $(.venv/bin/python -c 'import torch, diffusers; print("torch", torch.__version__, "diffusers", diffusers.__version__)')"
