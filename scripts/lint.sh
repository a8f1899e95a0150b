#!/usr/bin/env bash
# The static checks, in order, stopping at the first that fails:
#   ruff check        lint rules (pyproject.toml [tool.ruff.lint])
#   ruff format       formatting, checked only (run `.venv/bin/ruff format .` to apply)
#   mypy              types: strict on kb/, kb_cli/ and all of reference_impls/ (registry, claims, harness,
#                     primitives, paper modules); see [tool.mypy] for the one module with codes turned off
#   zizmor            GitHub workflows and Dependabot config, offline
# Installs nothing: the tools come with the dev extra (`bash scripts/setup.sh`).
# Used by CI (.ci/run, the lint job of .github/workflows/ci.yml) and by .pre-commit-config.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
for tool in ruff mypy zizmor; do
  if [ ! -x "$bin/$tool" ]; then
    echo "lint: $bin/$tool is missing; run: bash scripts/setup.sh" >&2
    exit 2
  fi
done

step() {
  echo "lint: $*" >&2
  "$@"
}

step "$bin/ruff" check --no-fix .
step "$bin/ruff" format --check .
step "$bin/mypy"
# The whole .github folder: the workflows and dependabot.yml (its cooldown is audited too).
step "$bin/zizmor" --offline --no-progress .github
echo "lint: all checks passed" >&2
