#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each, from the committed seed corpora, and prints
# one line per target: executions, time, crashes. New corpus entries go to a scratch copy, so the
# committed seeds stay small. Needs cargo-fuzz (`cargo install cargo-fuzz`); libFuzzer's flags are
# nightly-only, so this uses RUSTC_BOOTSTRAP=1 with the stable toolchain.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for t in config host merge control; do
    mkdir -p "$work/$t"
    cp corpus/$t/* "$work/$t/"
    log="$work/$t.log"
    if cargo fuzz run -O "$t" "$work/$t" -- -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048 >"$log" 2>&1; then
        result=ok
    else
        result=CRASH
        status=1
        grep -m5 -E "panicked|ERROR|SUMMARY" "$log" || true
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    echo "fuzz $t: $result, ${execs:-?} executions in ${secs}s, corpus $(ls "$work/$t" | wc -l) inputs"
done
exit $status
