#!/usr/bin/env bash
# The early warning: install the newest releases that pyproject.toml's ranges allow (not the
# lock) into a separate venv and run the tests that touch those dependencies most (model,
# engine, backends, language server). A failure here is the next break users would meet.
#
#   bash scripts/test-latest.sh             # newest releases the ranges allow, in .venv-latest
#   bash scripts/test-latest.sh --oldest    # transformers at the range's lower bound, in .venv-oldest
#
# Extra arguments go to pytest. Needs what scripts/setup.sh installs on the machine (compiler,
# toolchains) but not .venv itself.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mode=latest
if [ "${1:-}" = "--oldest" ]; then mode=oldest; shift; fi
venv=".venv-$mode"
[ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
"$venv/bin/pip" install -q torch==2.13.0
if [ "$mode" = latest ]; then
  "$venv/bin/pip" install -q --upgrade --upgrade-strategy eager -e ".[dev]"
else
  lower=$("$venv/bin/python" - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
[spec] = [d for d in deps if re.match(r"transformers\b", d)]
print(re.search(r">=\s*([0-9][^,\s]*)", spec).group(1))
PY
)
  "$venv/bin/pip" install -q -e ".[dev]" "transformers==$lower"
fi
"$venv/bin/pip" install -q --no-deps codegeex==1.0
"$venv/bin/python" -c "from importlib.metadata import version as v; print('test-latest ($mode):', ', '.join(f'{p} {v(p)}' for p in ('torch', 'transformers', 'tokenizers', 'huggingface-hub', 'pygls', 'lsprotocol', 'tree-sitter')))"
"$venv/bin/python" -m pytest -q -p no:cacheprovider \
  tests/test_model.py tests/test_model_parity.py tests/test_model_fusion.py tests/test_engine.py \
  tests/test_quantize.py tests/test_default_model.py tests/test_tokenizer.py \
  tests/test_backends_hf.py tests/test_backends_native.py tests/test_backends_spec.py \
  tests/test_lsp_server.py tests/test_lsp_units.py "$@"
