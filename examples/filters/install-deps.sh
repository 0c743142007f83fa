#!/usr/bin/env bash
# Installs, as root on a fresh Debian 12 (bookworm) machine, everything the
# three example builds need globally. Python and npm packages are NOT
# installed here: each build.sh installs its own pinned tools inside its
# example directory (python/.venv, js/node_modules).
#
#   Python:     python3, python3-venv
#   JavaScript: nodejs, npm (skipped if `node` and `npm` are already there,
#               e.g. from NodeSource)
#   C:          clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32
#               plus Rust (already required by the workspace) for
#               wasm-component-ld, which rustup ships in the sysroot.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: run as root (it uses apt-get)" >&2
    exit 1
fi

pkgs=(clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32)
if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    pkgs+=(python3 python3-venv)
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    pkgs+=(nodejs npm)
fi

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

ld="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/wasm-component-ld"
if [ ! -x "$ld" ]; then
    echo "install-deps.sh: $ld not found; install Rust with rustup (the workspace needs it anyway)" >&2
    exit 1
fi
echo "install-deps.sh: all build dependencies present"
