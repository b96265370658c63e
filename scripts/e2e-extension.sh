#!/usr/bin/env bash
# End-to-end test of the VS Code extension in a real VS Code (code-server + headless
# Chromium, offline): builds the .vsix, installs it, checks ghost text, Tab, translation
# and crash restart against the real codeglm server. Screenshots and logs go to ARTIFACTS
# (default vscode-extension/artifacts/e2e).
# Env: VSCODE_E2E_DIR (cache of code-server/chromium, default ~/.cache/codeglm/vscode-e2e),
#      SKIP_SETUP=1 (skip the idempotent setup), VSCODE_E2E_TIMEOUT (s, default 900),
#      DOCS_SCREENSHOT=docs/images/ghost-text.png refreshes the README picture (default: not written).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export VSCODE_E2E_DIR=${VSCODE_E2E_DIR:-$HOME/.cache/codeglm/vscode-e2e}
TOOLS=${VSCODE_E2E_TOOLS:-$ROOT/../shared/tools/vscode-e2e}
ARTIFACTS=$(realpath -m "${1:-$ROOT/vscode-extension/artifacts/e2e}")
DOCS_SCREENSHOT=${DOCS_SCREENSHOT:+$(realpath -m "$DOCS_SCREENSHOT")}
[ -n "${SKIP_SETUP:-}" ] || "$TOOLS/setup.sh" "$VSCODE_E2E_DIR"
cd vscode-extension
[ -d node_modules ] || npm ci --no-audit --no-fund
mkdir -p artifacts
npx @vscode/vsce package --out artifacts/codeglm-vscode.vsix
# a fresh artifacts dir per run (old screenshots would mislead); only ever an e2e dir of ours
if [ -d "$ARTIFACTS" ] && [ -n "$(ls -A "$ARTIFACTS")" ] && [ ! -d "$ARTIFACTS/logs" ] && [ ! -f "$ARTIFACTS/browser-console.log" ]; then
  echo "e2e-extension: $ARTIFACTS exists and does not look like an e2e artifacts dir; give another one" >&2
  exit 2
fi
rm -rf "$ARTIFACTS"
mkdir -p "$ARTIFACTS"
rc=0
VSCODE_E2E_TOOLS=$TOOLS timeout --kill-after=30 "${VSCODE_E2E_TIMEOUT:-900}" \
  node e2e/e2e.mjs artifacts/codeglm-vscode.vsix "$ARTIFACTS" $DOCS_SCREENSHOT || rc=$?
echo "e2e-extension: exit $rc; screenshots and logs in $ARTIFACTS"
exit $rc
