#!/usr/bin/env bash
# Prints a digest of the parts of wit/plugin.wit that the C bindings in gen/
# are generated from: the package line, the interfaces the filter-plugin
# world uses (types, host, message, sql, blob, filter) and the world itself. regen.sh
# stores it in gen/filter-plugin.wit.sha256; build.sh compares it to warn
# when the bindings may be stale.
set -euo pipefail
wit="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../wit" && pwd)/plugin.wit"
awk '
    /^package / { print; next }
    /^(interface (types|host|message|sql|blob|filter)|world filter-plugin) \{/ { keep = 1 }
    keep { print }
    keep && /^\}/ { keep = 0 }
' "$wit" | sha256sum | cut -d" " -f1
