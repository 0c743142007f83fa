#!/usr/bin/env bash
# Builds the Python example filter into python/filter.wasm.
#
# Needs: python3 (3.10+) with the venv module (Debian: python3-venv) and
# access to PyPI. Everything else is installed into python/.venv (gitignored):
#   componentize-py==0.25.1
# Generated bindings (for editors and the import check below) go to
# python/bindings/ (gitignored); componentize-py regenerates them itself when
# it builds the component.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
wit="$(cd "$here/../../../wit" && pwd)"
cd "$here"

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
if [ "$(.venv/bin/componentize-py --version 2>/dev/null || true)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
    .venv/bin/pip install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

rm -rf bindings
.venv/bin/componentize-py -d "$wit" -w filter-plugin bindings bindings
# Catch syntax and import errors with a plain CPython before the slow build.
PYTHONPATH="$here/bindings" .venv/bin/python -c 'import app'

rm -f filter.wasm filter.wasm.tmp
.venv/bin/componentize-py -d "$wit" -w filter-plugin componentize app -o filter.wasm.tmp
mv filter.wasm.tmp filter.wasm
echo "built $here/filter.wasm"
