#!/usr/bin/env bash
# The VS Code extension's tests: compile, unit tests (pure logic, no VS Code) and the
# integration test (the extension's client code against the real `python -m lsp` over
# stdio), then check that `vsce package` builds the .vsix.
# Env: SKIP_VSIX=1 skips packaging; CODEGLM_TEST_BACKEND overrides the test model.
set -euo pipefail
cd "$(dirname "$0")/../vscode-extension"
[ -d node_modules ] || npm ci --no-audit --no-fund
npm run compile
npm test
if [ -z "${SKIP_VSIX:-}" ]; then
  mkdir -p artifacts
  npx @vscode/vsce package --out artifacts/codeglm-vscode.vsix
fi
