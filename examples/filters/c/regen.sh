#!/usr/bin/env bash
# Regenerates the committed C bindings in c/gen/ from wit/plugin.wit.
#
# The bindings are committed so that building the C example needs no Rust
# tool beyond the toolchain itself. Run this after changing the
# `filter-plugin` world or any interface it uses (types, host, message,
# sql, blob, filter), and commit gen/ together with the WIT change.
#
# Needs wit-bindgen-cli 0.63.0 (the same version as the `wit-bindgen` crate
# the Rust plugins use). Only the C generator is needed, which builds faster
# (~6.5 CPU-minutes; 6 to 14 minutes on 2 cores):
#   cargo install wit-bindgen-cli --version 0.63.0 --locked \
#       --no-default-features --features c
# Or point WIT_BINDGEN at a wit-bindgen binary.
#
#   ./regen.sh          rewrite gen/
#   ./regen.sh --check  fail if gen/ is not what the WIT generates
#
# The bindings were generated with:
#   wit-bindgen c ../../../wit --world filter-plugin --autodrop-borrows yes --out-dir gen
# `--autodrop-borrows yes` makes the bindings drop the borrowed `message`
# handle after `classify` returns (the component model requires an export
# to drop the borrows it was lent before it returns).
set -euo pipefail

WIT_BINDGEN_VERSION=0.63.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
wit_bindgen="${WIT_BINDGEN:-wit-bindgen}"

if ! command -v "$wit_bindgen" >/dev/null; then
    echo "regen.sh: $wit_bindgen not found; install it with" >&2
    echo "  cargo install wit-bindgen-cli --version $WIT_BINDGEN_VERSION --locked --no-default-features --features c" >&2
    exit 1
fi
version="$("$wit_bindgen" --version)"
if [ "$version" != "wit-bindgen-cli $WIT_BINDGEN_VERSION" ]; then
    echo "regen.sh: need wit-bindgen-cli $WIT_BINDGEN_VERSION, found '$version'" >&2
    exit 1
fi

check=()
if [ "${1:-}" = "--check" ]; then
    check=(--check)
fi
"$wit_bindgen" c ../../../wit --world filter-plugin --autodrop-borrows yes --out-dir gen "${check[@]}"
if [ ${#check[@]} -eq 0 ]; then
    ./wit-digest.sh > gen/filter-plugin.wit.sha256
    echo "regenerated $here/gen"
else
    echo "gen/ is up to date"
fi
