#!/usr/bin/env bash
# Runs Poplar's whole test suite: unit tests of the host and the plugins,
# and the end-to-end tests that drive the real `poplar` binary with real
# clients (Python poplib, curl, fetchmail, mpop, openssl s_client), a real
# Postfix, and filters written in Rust, Python, JavaScript and C.
#
# Installs what is missing first (as root, from Debian's packages, PyPI and
# npm): the wasm32-wasip2 target, the client programs, Postfix, and the
# example filters' toolchains; then builds the example filters.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true

packages=(curl fetchmail mpop openssl python3 postfix)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing: ${missing[*]}"
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing packages: ${missing[*]} (run this script as root, or apt-get install them)" >&2
    exit 1
  fi
fi

if [ "$(id -u)" = 0 ]; then
  examples/filters/install-deps.sh
fi
examples/filters/build-all.sh

cargo test --workspace --locked "$@"
