#!/usr/bin/env bash
# Runs Poplar's whole test suite: unit tests of the host and the plugins,
# and the end-to-end tests that drive the real `poplar` binary over TCP with
# real clients (Python poplib, curl, fetchmail, mpop, openssl s_client).
#
# Installs what is missing first: the wasm32-wasip2 target, and the client
# programs from Debian's packages (needs root, as on CI).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true

missing=()
for tool in curl fetchmail mpop openssl python3; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing test clients: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl fetchmail mpop openssl python3 >/dev/null
  else
    echo "missing test clients: ${missing[*]} (install them, e.g. apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

cargo test --workspace --locked "$@"
