#!/usr/bin/env bash
# Rebuild the default model shipped in codeglm/default_model/ (see docs/default-model.md).
#
#   bash scripts/train-default-model.sh            # gather data, train, install into the package
#   OUT=/tmp/m bash scripts/train-default-model.sh --resume   # continue an interrupted run
#
# Every source is permissively licensed and comes from Debian packages or the npm
# registry (versions pinned below). HumanEval-X is never part of the data.
# Extra arguments go to `codeglm train`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
DATA="${CODEGLM_TRAIN_DATA:-$HOME/.cache/codeglm/train-data}"
OUT="${OUT:-$HOME/.cache/codeglm/default-model-run}"
MINUTES="${MINUTES:-95}"
# The shipped tokenizer is reused so a retrained model stays compatible; TOKENIZER= trains a new one.
TOKENIZER="${TOKENIZER-$ROOT/codeglm/default_model}"

# --- data ------------------------------------------------------------------
# Debian: Go standard library (BSD-3-Clause), Boost 1.74 headers (BSL-1.0), Rust crates
# (MIT/Apache-2.0). The Python 3.11 standard library (PSF-2.0) is already on the machine.
DEBIAN_PACKAGES=(golang-1.19-src libboost1.74-dev librust-regex-dev librust-serde-dev librust-libc-dev
                 librust-rand-dev librust-syn-dev librust-log-dev)
missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
    apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# npm (tarballs only, no install scripts run): Java from cordova-android (Apache-2.0),
# @capacitor/android (MIT) and react-native (MIT); JavaScript from lodash, express,
# axios (MIT); C from the SQLite amalgamation in better-sqlite3 (SQLite: public domain,
# package: MIT); C++ also from react-native.
NPM_PACKAGES=(cordova-android@15.1.0 @capacitor/android@8.5.2 react-native@1000.0.0 lodash@4.18.1
              express@5.3.0 axios@1.21.1 better-sqlite3@12.11.1)
mkdir -p "$DATA/npm"
for spec in "${NPM_PACKAGES[@]}"; do
    name="${spec%@*}"; name="${name#@}"; name="${name//\//-}"; version="${spec##*@}"
    dir="$DATA/npm/$name-$version"
    if [[ ! -d "$dir" ]]; then
        (cd "$DATA/npm" && npm pack --silent "$spec" >/dev/null)
        mkdir -p "$dir" && tar xzf "$DATA/npm/$name-$version.tgz" -C "$dir"
    fi
done

SOURCES=(/usr/lib/python3.11 /usr/share/go-1.19/src /usr/include/boost /usr/share/cargo/registry "$DATA"/npm/*/)

# --- train -----------------------------------------------------------------
# The small config (~1.6M parameters) with a 512-token context: sized for 2 idle CPU
# cores and about 80 minutes (~6k tokens/s; 5,000 steps of 4,096 tokens = 20M tokens,
# about 1.2 epochs of the data). On cores shared with other work use --threads 1: there,
# two threads were measured 2x slower. The time budget stops the run and keeps the last state.
"$PY" -m codeglm.cli train "${SOURCES[@]}" -o "$OUT" ${TOKENIZER:+--tokenizer "$TOKENIZER"} \
    --config small --context-length 512 --batch-size 8 --grad-accum 1 --max-steps 5000 \
    --warmup-steps 100 --lr 3e-3 --eval-every 500 --save-every 100 --eval-blocks 8 \
    --max-bytes-per-language 6000000 --threads 2 --time-budget-minutes "$MINUTES" --save-dtype fp16 "$@"

# --- install into the package ---------------------------------------------
TARGET="$ROOT/codeglm/default_model"
mkdir -p "$TARGET"
cp "$OUT"/{config.json,generation_config.json,model.safetensors,tokenizer.json,tokenizer_config.json,training_summary.json} "$TARGET/"
du -sh "$TARGET"
