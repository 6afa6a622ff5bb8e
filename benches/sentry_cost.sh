#!/usr/bin/env bash
# What Sentry costs per call (issue 22), in instructions counted by callgrind: the release server
# answering GetProduct with SENTRY_DSN unset and set (pointed at a local sink that answers 200),
# for a succeeding call (a product-cache hit) and a failing one (INTERNAL: the products table was
# renamed behind the server's back, so every uncached read fails and is sent to Sentry). Each
# variant runs twice, serving N1 and then N2 calls (one h2load stream, after warming calls); the
# difference of the totals over N2 − N1 is one call, start-up and shutdown excluded. The count is
# the whole process's: the transport thread's sending is included. Traces are sampled at the
# production default, 0.1.
#
#   benches/sentry_cost.sh [N1] [N2]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N1="${1:-500}"
N2="${2:-2500}"
for tool in valgrind h2load python3; do command -v "$tool" >/dev/null || { echo "$tool missing" >&2; exit 1; }; done
cargo build --release --quiet
cargo bench --bench catalog_reads --no-run >/dev/null 2>&1
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
SOKO="$TARGET/release/soko"
BENCH="$(ls -t "$TARGET"/release/deps/catalog_reads-* | grep -v '\.d$' | head -1)"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

# The Sentry sink: answers every envelope with 200 and counts them.
python3 - "$WORK/sink.port" "$WORK/sink.count" <<'PY' &
import http.server, sys
count = 0
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global count
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
        count += 1
        open(sys.argv[2], "w").write(str(count))
    def log_message(self, *a): pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
open(sys.argv[1], "w").write(str(server.server_address[1]))
server.serve_forever()
PY
for _ in $(seq 1 100); do [[ -s "$WORK/sink.port" ]] && break; sleep 0.1; done
DSN="http://benchkey@127.0.0.1:$(cat "$WORK/sink.port")/1"

start_soko() { # data_dir out_log dsn [wrapper...]
  local data="$1" log="$2" dsn="$3"
  shift 3
  env -i PATH="$PATH" SOKO_DATA_DIR="$data" SOKO_GRPC_ADDR=127.0.0.1:0 SOKO_OPS_ADDR=127.0.0.1:0 \
    SOKO_LOG_FORMAT=json RUST_LOG=info SOKO_EMBEDDING_DIM=8 SOKO_RATE_LIMIT_GLOBAL=100000000/min \
    ${dsn:+SENTRY_DSN="$dsn"} "$@" "$SOKO" serve --demo >"$log" 2>/dev/null &
  SERVER=$!
  for _ in $(seq 1 1200); do
    ADDR="$(grep -o '"grpc":"[^"]*"' "$log" 2>/dev/null | head -1 | cut -d'"' -f4 || true)"
    [[ -n "$ADDR" ]] && return 0
    sleep 0.1
  done
  echo "soko did not start: $(cat "$log")" >&2
  exit 1
}

# A GetProduct for an id that exists nowhere: with the table gone, it fails INTERNAL.
python3 -c '
import sys
msg = b"\x0a\x24" + b"0192f5e0-0000-7000-8000-000000000000"
sys.stdout.buffer.write(b"\0" + len(msg).to_bytes(4, "big") + msg)' >"$WORK/missing.bin"

calls() { # addr n body
  h2load -n "$2" -c 1 -m 1 -H 'content-type: application/grpc' -H 'te: trailers' -d "$3" \
    "http://$1/soko.catalog.v1.CatalogService/GetProduct" | grep -E '^requests:' >&2
}

total() { # outcome dsn n
  local out="$WORK/cg.out" data="$WORK/data-$1-${2:+dsn}-$3"
  rm -f "$out"
  mkdir -p "$data"
  start_soko "$data" "$WORK/run.log" "$2" valgrind --tool=callgrind --callgrind-out-file="$out"
  # The demo data of this run has its own ids: fetch one (it warms the product cache).
  SOKO_BENCH_FETCH="$ADDR" SOKO_BENCH_DIR="$WORK" "$BENCH" >/dev/null
  local body="$WORK/get.bin"
  if [[ "$1" == failing ]]; then
    python3 -c "
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=30)
c.execute('ALTER TABLE products RENAME TO products_gone')
c.commit()" "$data/soko.db"
    body="$WORK/missing.bin"
  fi
  calls "$ADDR" 20 "$body"
  calls "$ADDR" "$3" "$body"
  kill -TERM "$SERVER"
  wait "$SERVER" || true
  awk '/^summary:/ {print $2}' "$out"
}

for outcome in succeeding failing; do
  for dsn in "" "$DSN"; do
    a="$(total "$outcome" "$dsn" "$N1")"
    b="$(total "$outcome" "$dsn" "$N2")"
    printf "%-11s %-12s %9d instructions/call\n" "$outcome" "$([[ -n $dsn ]] && echo "sentry on" || echo "sentry off")" $(( (b - a) / (N2 - N1) ))
  done
done
echo "events received by the sink: $(cat "$WORK/sink.count" 2>/dev/null || echo 0)"
