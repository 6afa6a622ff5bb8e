#!/usr/bin/env bash
# Session check cost in CPU instructions per call, counted by callgrind: for each mode the bench
# binary runs twice, with N1 and N2 calls; the difference of the totals over N2 − N1 is one call,
# start-up (migrations, registration, the first database read) excluded.
#
#   benches/session_check_instructions.sh [N1] [N2]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N1="${1:-1000}"
N2="${2:-11000}"
command -v valgrind >/dev/null || { echo "valgrind missing" >&2; exit 1; }
cargo bench --bench session_check --no-run >/dev/null 2>&1
BIN="$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/session_check-* | grep -v '\.d$' | head -1)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

total() { # mode calls
  valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" "$BIN" "$1" "$2" >"$WORK/run.log" 2>&1 \
    || { cat "$WORK/run.log" >&2; exit 1; }
  awk '/^summary:/ {print $2}' "$WORK/cg.out"
}
for mode in authenticate lookup; do
  a="$(total "$mode" "$N1")"
  b="$(total "$mode" "$N2")"
  printf '%-13s %8d instructions/call\n' "$mode" $(( (b - a) / (N2 - N1) ))
done
