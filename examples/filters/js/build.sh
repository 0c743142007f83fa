#!/usr/bin/env bash
# Builds the JavaScript example filter into js/filter.wasm.
#
# Needs: node (18+) and npm with access to the npm registry. The toolchain is
# pinned in package.json / package-lock.json and installed into
# js/node_modules (gitignored) by `npm ci`:
#   @bytecodealliance/componentize-js 0.23.0 (StarlingMonkey/SpiderMonkey)
#   @bytecodealliance/preview2-shim 0.25.0: componentize-js imports it at run
#     time but lists it only as a devDependency, so `npm ci` would leave it
#     out ("Cannot find package '@bytecodealliance/preview2-shim'").
# The build runs without --aot (AOT downloads a tool at build time) and with
# `--disable http fetch-event`, so the component does not import wasi:http.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

# `npm ci` wipes and reinstalls node_modules (~40 s); skip it when the
# installed tree is newer than the lockfile and satisfies package.json.
if [ ! node_modules/.package-lock.json -nt package-lock.json ] \
    || ! npm ls --silent >/dev/null 2>&1; then
    npm ci --no-audit --no-fund
fi

rm -f filter.wasm
# componentize-js reports a syntax error without its position; node does.
node --check filter.js
npm run --silent build
echo "built $here/filter.wasm"
