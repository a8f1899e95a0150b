#!/usr/bin/env bash
# The main job on a fresh machine: set up, validate the catalogue, build the website, and
# reproduce Wanda's headline comparison on tiny-llama (the model is fetched once, then cached).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
kb=.venv/bin/kb
"$kb" validate
"$kb" build
"$kb" reproduce wanda --model tiny-llama "$@"
