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
  .venv/bin/python -m pip install --quiet --upgrade pip
  if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    # The CPU wheel: local find-links where the machine has it, else the PyTorch CPU index.
    .venv/bin/python -m pip install --quiet "torch==2.13.0" \
      || .venv/bin/python -m pip install --quiet "torch==2.13.0" --index-url "${KB_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
  fi
  .venv/bin/python -m pip install --quiet -e '.[impls,site,dev]'
  echo "$want" > "$stamp"
fi
