#!/usr/bin/env bash
# Set up everything on a fresh Debian machine: a virtualenv in .venv with codeglm and
# its dev tools, the six HumanEval-X toolchains, and the VS Code extension's node modules.
# Idempotent. Knobs: SKIP_APT=1 (system packages already there), SKIP_EXTENSION=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Every Python package at the exact version CI tested (constraints.txt, the lock: see
# scripts/lock.sh), so a registry release cannot change what a fresh machine gets.
LOCK=(-c constraints.txt)
# torch first, pinned: this machine keeps a CPU wheel of 2.13.0 on disk, while a bare
# "torch" requirement could pull a multi-GB CUDA build.
.venv/bin/pip install -q "${LOCK[@]}" torch==2.13.0
.venv/bin/pip install -q "${LOCK[@]}" -e ".[dev]"
# The llamacpp extra: llama.cpp's server (llama-cpp-python) and gguf, for the tests of the
# openai backend against it. pip builds llama.cpp from source with cmake and the C++ compiler
# (20 min measured: 1221 s with the download, 2 cores shared at load average ~10) and caches
# the wheel, so only the first setup on a machine pays (13 s from the cache). The cache does
# not key on CMAKE_ARGS: to rebuild with other options, add --no-cache-dir. Only the CPU library is built: no tools, tests, examples or
# multimodal library; AVX2/FMA/F16C without -march=native (an AVX-512 build of this version
# crashed here on q8_0 weights).
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF" \
CMAKE_BUILD_PARALLEL_LEVEL=2 .venv/bin/pip install -q "${LOCK[@]}" -e ".[llamacpp]"
# The ray extra: `codeglm eval execute --executor ray` (evals/ray_executor.py).
.venv/bin/pip install -q "${LOCK[@]}" -e ".[ray]"
# The reference implementation, for parity tests only (its own deps are not needed).
.venv/bin/pip install -q "${LOCK[@]}" --no-deps codegeex==1.0

if [ -z "${SKIP_APT:-}" ] && [ -x scripts/install-toolchains.sh ]; then
  bash scripts/install-toolchains.sh
fi
if [ -z "${SKIP_EXTENSION:-}" ] && [ -f vscode-extension/package.json ]; then
  (cd vscode-extension && npm ci --no-audit --no-fund)
fi
# The AVX2 decode kernels, built once now rather than at the first model load
# (needs the C++ compiler the toolchains bring; without it oneDNN and fbgemm serve).
.venv/bin/python -c "from codeglm.inference.cpu_kernels import int8_gemv; print('setup: AVX2 decode kernels', 'built' if int8_gemv() else 'not built (oneDNN and fbgemm serve)')"
echo "setup: done (.venv ready)"
