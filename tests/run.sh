#!/usr/bin/env bash
# Runs Poplar's whole test suite: unit tests of the host and the plugins,
# and the end-to-end tests that drive the real `poplar` binary with real
# clients (Python poplib, curl, fetchmail, mpop, openssl s_client, mutt and
# neomutt under a pseudo-terminal), a real
# Postfix, a real Dovecot (the migration tests), and filters written in
# Rust, Python, JavaScript and C.
#
# Installs what is missing first (as root, from Debian's packages, PyPI and
# npm): the wasm32-wasip2 target, the client programs, Postfix, Dovecot,
# promtool, man, zsh and fish, and the example filters' toolchains; then
# builds the example filters.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true

packages=(curl fetchmail mpop mutt neomutt openssl python3 postfix dovecot-core dovecot-pop3d)
# Installed without their recommends: prometheus is here for promtool (the
# alert rules' checks), not for node-exporter and the disk and IPMI tools;
# man-db, zsh and fish check the generated manual pages and completions.
lean=(prometheus man-db zsh fish)
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
missing=()
missing_lean=()
for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
for p in "${lean[@]}"; do installed "$p" || missing_lean+=("$p"); done
if [ $((${#missing[@]} + ${#missing_lean[@]})) -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing: ${missing[*]} ${missing_lean[*]}"
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    # The tests start their own Postfix and Dovecot on free loopback ports:
    # keep the packages' maintainer scripts from starting the system-wide
    # services (Dovecot's would listen on ports 110 and 143 of every
    # address), unless a policy is already in place.
    policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      policy=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' >"$policy"
      chmod +x "$policy"
      trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    if [ ${#missing[@]} -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if [ ${#missing_lean[@]} -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing_lean[@]}" >/dev/null
    fi
    if [ -n "$policy" ]; then rm -f "$policy"; trap - EXIT; fi
  else
    echo "missing packages: ${missing[*]} ${missing_lean[*]} (run this script as root, or apt-get install them)" >&2
    exit 1
  fi
fi

if [ "$(id -u)" = 0 ]; then
  examples/filters/install-deps.sh
fi
examples/filters/build-all.sh

cargo test --workspace --release --locked "$@"
