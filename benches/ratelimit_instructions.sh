#!/usr/bin/env bash
# Rate limiter cost in CPU instructions per call, counted by valgrind's callgrind: repeatable on
# a noisy machine where throughput varies ±15% between identical runs. For each mode (limiter
# off, local) the server runs under callgrind twice, serving N1 and N2 `AuthService.Me` calls;
# the difference of the two totals divided by N2 − N1 is the cost of one call, start-up excluded.
#
#   benches/ratelimit_instructions.sh [N1] [N2]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N1="${1:-500}"
N2="${2:-2500}"
command -v valgrind >/dev/null || { echo "valgrind missing" >&2; exit 1; }
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

instructions() { # mode calls -> total instructions of the server process
  local mode="$1" calls="$2" port ops pid
  port="$(free_port)"; ops="$(free_port)"
  SOKO_GRPC_ADDR="127.0.0.1:$port" SOKO_OPS_ADDR="127.0.0.1:$ops" SOKO_RATE_LIMIT_ENABLED="$([ "$mode" = off ] && echo false || echo true)" \
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" "$BIN" serve >"$WORK/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do curl -fs "http://127.0.0.1:$ops/health/ready" >/dev/null 2>&1 && break; sleep 0.1; done
  local token
  token="$(grpcurl -plaintext -d '{"email":"bench@soko.test","password":"bench-password-1"}' "127.0.0.1:$port" soko.auth.v1.AuthService/Login \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"]["accessToken"])')"
  h2load -n "$calls" -c 4 -m 4 -t 1 -H 'content-type: application/grpc' -H 'te: trailers' \
    -H "authorization: Bearer $token" -d "$WORK/empty.bin" "http://127.0.0.1:$port/soko.auth.v1.AuthService/Me" > "$WORK/h2load.txt"
  grep -q " 0 failed, 0 errored" "$WORK/h2load.txt" || { cat "$WORK/h2load.txt" >&2; exit 1; }
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  awk '/^summary:/ {print $2}' "$WORK/cg.out"
}

declare -A per_call
for mode in off local; do
  a="$(instructions "$mode" "$N1")"
  b="$(instructions "$mode" "$N2")"
  per_call[$mode]=$(( (b - a) / (N2 - N1) ))
  printf '%-6s %14s instructions/call\n' "$mode" "${per_call[$mode]}"
done
python3 -c "print(f'local/off instructions per call = {${per_call[local]}/${per_call[off]}:.3f}  (throughput ratio ~ {${per_call[off]}/${per_call[local]}:.3f})')"
