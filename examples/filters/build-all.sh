#!/usr/bin/env bash
# Builds the three example filters (Python, JavaScript, C) and checks that
# each output is a WebAssembly component (magic 00 61 73 6d 0d 00 01 00; a
# core module would have version 01 00 00 00). Prints the time and size of
# each. Run ./install-deps.sh (as root) first on a fresh machine.
#
#   ./build-all.sh            build all three
#   ./build-all.sh c js       build only these
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
langs=("$@")
if [ ${#langs[@]} -eq 0 ]; then
    langs=(python js c)
fi

summary=()
for lang in "${langs[@]}"; do
    if [ ! -x "$here/$lang/build.sh" ]; then
        echo "build-all.sh: no example '$lang' (have: python js c)" >&2
        exit 1
    fi
    echo "== building $lang"
    start=$(date +%s)
    "$here/$lang/build.sh"
    secs=$(( $(date +%s) - start ))
    out="$here/$lang/filter.wasm"
    magic="$(od -An -tx1 -N8 "$out" | tr -d ' \n')"
    if [ "$magic" != "0061736d0d000100" ]; then
        echo "build-all.sh: $out is not a component (starts with $magic)" >&2
        exit 1
    fi
    summary+=("$(printf '%-7s %10d bytes %5d s  %s' "$lang" "$(stat -c %s "$out")" "$secs" "$out")")
done

echo "== all built"
printf '%s\n' "${summary[@]}"
