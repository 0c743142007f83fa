#!/usr/bin/env bash
# Builds the fuzz targets and runs each one for FUZZ_SECONDS (default 30)
# on stable Rust, starting from a temporary copy of its seed corpus, and
# fails if any target crashes. Installs cargo-fuzz if it is missing.
#
#   fuzz/run.sh                          every target, 30 s each
#   FUZZ_SECONDS=300 fuzz/run.sh pop3_session
#
# Stable Rust works because `--sanitizer none` makes cargo-fuzz pass only
# stable flags (-Cpasses=sancov-module, -Cllvm-args=…, --cfg fuzzing,
# -Cdebug-assertions); AddressSanitizer would need nightly's -Zsanitizer,
# and the targets are safe Rust, so it adds little. Panics and failed
# assertions abort the run as crashes. Extra libFuzzer flags can be given
# in FUZZ_ARGS (e.g. FUZZ_ARGS="-jobs=2 -workers=2").
set -euo pipefail
cd "$(dirname "$0")"

seconds=${FUZZ_SECONDS:-30}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(pop3_command pop3_line pop3_session lmtp_session)
fi

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    start=$(date +%s)
    cargo install cargo-fuzz --locked
    echo "fuzz: cargo-fuzz installed in $(($(date +%s) - start)) s"
fi

flags=(--sanitizer none)
start=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "fuzz: built in $(($(date +%s) - start)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
    # Fuzz a copy: the corpus the run grows is not kept, only the seeds are
    # committed.
    mkdir -p "$work/$t"
    cp corpus/"$t"/* "$work/$t"/
    log="$work/$t.log"
    status=0
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    cargo fuzz run "${flags[@]}" "$t" "$work/$t" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        ${FUZZ_ARGS:-} >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
    cov=$(echo "$done_line" | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' || true)
    if [ -z "$execs" ] && [ -n "$done_line" ]; then
        execs=$(echo "$done_line" | sed -E 's/^#([0-9]+).*/\1/')
    fi
    if [ "$status" -eq 0 ]; then
        echo "fuzz: $t: ${execs:-?} executions in ${seconds} s (${rate:-?}/s), ${cov:-no coverage line}"
    else
        failed+=("$t")
        echo "fuzz: $t: FAILED (exit $status) after ${execs:-?} executions" >&2
        grep -E -A4 "panicked at|ERROR: libFuzzer|SUMMARY" "$log" >&2 || tail -n 40 "$log" >&2
        artifact=$(grep -oE "artifacts/$t/[a-z]+-[0-9a-f]+" "$log" | tail -n 1 || true)
        if [ -n "$artifact" ]; then
            echo "fuzz: reproducer fuzz/$artifact (base64 below); replay with" >&2
            echo "  POPLAR_FUZZ_TRACE=1 cargo fuzz run --sanitizer none $t $artifact" >&2
            base64 -w 76 "$artifact" >&2 || true
        fi
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: ${#failed[@]} of ${#targets[@]} targets crashed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${seconds} s each without a crash"
