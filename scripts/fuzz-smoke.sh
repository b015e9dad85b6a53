#!/usr/bin/env bash
# Runs every cargo-fuzz target of the project for a short time (default 15 s
# each). Used by CI; run it locally after touching a parser.
#   scripts/fuzz-smoke.sh [seconds-per-target]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-15}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz (once)…"
    cargo install cargo-fuzz --locked
fi
# cargo-fuzz passes -Z flags to rustc; the stable toolchain accepts them with
# RUSTC_BOOTSTRAP=1.
export RUSTC_BOOTSTRAP=1
unset CARGO_TARGET_DIR
for dir in fabric/fuzz firmware/fuzz; do
    [ -f "$dir/Cargo.toml" ] || continue
    for target in $(cd "$dir" && cargo fuzz list); do
        echo "fuzzing $dir:$target for ${secs}s"
        (cd "$dir" && cargo fuzz run "$target" -- -max_total_time="$secs" -print_final_stats=0 >/tmp/fuzz-"$target".log 2>&1) || {
            echo "fuzz target $target failed; last lines:"; tail -40 /tmp/fuzz-"$target".log; exit 1; }
        echo "  ok ($(grep -o 'Done [0-9]* runs' /tmp/fuzz-"$target".log || echo 'runs not reported'))"
    done
done
