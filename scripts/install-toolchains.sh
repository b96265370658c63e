#!/usr/bin/env bash
# Install the six HumanEval-X toolchains from Debian 12 packages and build the per-language
# caches the harness uses (see /work/shared/docs/toolchains.md and docs/humaneval-x.md):
#   - apt: g++ + boost + libssl + lld (links Rust programs in a third of ld.bfd's CPU), OpenJDK 17, Node.js, Go 1.19 + testify, rustc/cargo 1.63 +
#     the rand/regex/md5 crates as Debian source packages;
#   - $CACHE/rust: rand, regex and md5 built once with Debian's rustc (/usr/bin/rustc), so each
#     program is one `rustc --test` call, no cargo at run time;
#   - $CACHE/node: js-md5 (JavaScript/162 requires it), for NODE_PATH;
#   - $CACHE/gocache: Go's build cache, warmed with testify so the first program is not slow.
# Nothing is downloaded at evaluation time. Idempotent: a second run only checks and exits.
# CACHE is $CODEGLM_CACHE, else /var/cache/codeglm as root (sandbox users must read it),
# else ~/.cache/codeglm: the same rule as evals/toolchains.py:cache_dir().
set -euo pipefail

if [ -n "${CODEGLM_CACHE:-}" ]; then
  CACHE=$CODEGLM_CACHE
elif [ "$(id -u)" = 0 ]; then
  CACHE=/var/cache/codeglm
else
  CACHE=$HOME/.cache/codeglm
fi

APT_PACKAGES=(
  g++ libboost-dev libssl-dev lld
  openjdk-17-jdk-headless
  golang-go golang-github-stretchr-testify-dev
  rustc cargo librust-rand-dev librust-regex-dev librust-md5-dev 'librust-regex+default-dev'
  util-linux
)
# Node.js may come from elsewhere (NodeSource); install Debian's only when there is none.
command -v node >/dev/null 2>&1 || APT_PACKAGES+=(nodejs)
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(npm)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "install-toolchains: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$CACHE"
chmod 755 "$CACHE"

# Rust crates, built with Debian's rustc: the harness links programs with the same compiler.
RUST_DIR=$CACHE/rust
RUSTC_VERSION=$(/usr/bin/rustc --version)
if [ ! -f "$RUST_DIR/built" ] || [ "$(cat "$RUST_DIR/built")" != "$RUSTC_VERSION" ]; then
  echo "install-toolchains: building rand, regex, md5 in $RUST_DIR"
  rm -rf "$RUST_DIR"
  mkdir -p "$RUST_DIR/src" "$RUST_DIR/.cargo"
  cat >"$RUST_DIR/Cargo.toml" <<'EOF'
[package]
name = "codeglm-humaneval-deps"
version = "0.1.0"
edition = "2021"

[dependencies]
rand = "0.8"
regex = "1"
md5 = "0.7"
EOF
  echo "" >"$RUST_DIR/src/lib.rs"
  cat >"$RUST_DIR/.cargo/config.toml" <<'EOF'
[source.crates-io]
replace-with = "debian"

[source.debian]
directory = "/usr/share/cargo/registry"

[net]
offline = true
EOF
  (cd "$RUST_DIR" && RUSTC=/usr/bin/rustc CARGO_HOME="$RUST_DIR/.cargo" /usr/bin/cargo build --offline -q)
  echo "$RUSTC_VERSION" >"$RUST_DIR/built"
fi

# js-md5 for JavaScript/162.
NODE_DIR=$CACHE/node
if [ ! -f "$NODE_DIR/node_modules/js-md5/package.json" ]; then
  echo "install-toolchains: npm install js-md5 into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  npm install --prefix "$NODE_DIR" --no-audit --no-fund --silent js-md5 >/dev/null
fi

# Warm Go's build cache (std + testify); ~10 s once, later builds reuse it.
GOCACHE_DIR=$CACHE/gocache
if [ ! -f "$GOCACHE_DIR/.warm" ]; then
  echo "install-toolchains: warming the Go build cache in $GOCACHE_DIR"
  mkdir -p "$GOCACHE_DIR"
  WARM=$(mktemp -d)
  cat >"$WARM/main_test.go" <<'EOF'
package main

import (
	"crypto/md5"
	"fmt"
	"math"
	"math/rand"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
	"bytes"

	"github.com/stretchr/testify/assert"
)

func TestWarm(t *testing.T) {
	_ = md5.Sum(nil); _ = fmt.Sprint(math.Pi, rand.Int(), strconv.Itoa(1), strings.ToUpper("a"))
	_ = regexp.MustCompile("a"); sort.Ints(nil); _ = time.Now(); _ = bytes.NewBuffer(nil)
	assert.Equal(t, 1, 1)
}
EOF
  (cd "$WARM" && GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off GOFLAGS= GOCACHE="$GOCACHE_DIR" \
    go test -c -o warm main_test.go && ./warm >/dev/null)
  rm -rf "$WARM"
  touch "$GOCACHE_DIR/.warm"
fi
# Go's importcfg (std + testify export data), the CDS archive of javac's classes and the
# warm javac server's class (evals/javac_daemon.py): the harness builds them on first use
# too; doing it here keeps the first evaluation fast.
PROJECT=$(cd "$(dirname "$0")/.." && pwd)
if [ -x "$PROJECT/.venv/bin/python" ]; then
  (cd "$PROJECT" && CODEGLM_CACHE="$CACHE" .venv/bin/python -c \
    "from evals.toolchains import go_importcfg, javac_class_archive, cache_dir; go_importcfg(); javac_class_archive()
from evals.javac_daemon import server_classes; server_classes(cache_dir())")
fi
echo "install-toolchains: ok ($CACHE)"
