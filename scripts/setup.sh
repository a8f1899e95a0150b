#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the project and all its extras.
# torch is installed first, pinned, so pip takes the CPU build (never the multi-GB CUDA one).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.kb-setup-stamp
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    # Ask for the CPU build by its local version label: this machine's wheel directory has it;
    # elsewhere it comes from PyTorch's CPU index. PyPI's own Linux wheels are CUDA builds (GBs).
    .venv/bin/python -m pip install --quiet "torch==2.13.0+cpu" 2>/dev/null \
      || .venv/bin/python -m pip install --quiet "torch==2.13.0+cpu" \
           --extra-index-url "${KB_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
  fi
  .venv/bin/python -m pip install --quiet -e '.[impls,site,dev,eval,cluster]'
  echo "$want" > "$stamp"
fi
