#!/usr/bin/env bash
# Create .venv and install runner into it. `bash setup.sh` for running, `bash setup.sh --dev` adds the test tools.
# On a machine without an NVIDIA GPU it installs torch's CPU build first (on this project's machines the pinned
# CPU wheel is served locally); with a GPU, pip resolves the regular (CUDA) build from the project's torch range.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    .venv/bin/python -m pip install --quiet "torch>=2.5,<3"
  else
    .venv/bin/python -m pip install --quiet "torch==2.13.0" ${TORCH_CPU_INDEX:+--index-url "$TORCH_CPU_INDEX"}
  fi
fi
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"
.venv/bin/python -m pip install --quiet -e ".${extra}"
echo "runner is installed in $(pwd)/.venv"
