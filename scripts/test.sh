#!/usr/bin/env bash
# Run every test: lint, the Python suite (slow tests included), the extension's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check codeglm lsp evals tests bench
.venv/bin/python -m pytest -q "$@"
if [ -z "${SKIP_EXTENSION:-}" ] && [ -f vscode-extension/package.json ]; then
  bash scripts/test-extension.sh
  [ -n "${SKIP_E2E:-}" ] || bash scripts/e2e-extension.sh
fi
