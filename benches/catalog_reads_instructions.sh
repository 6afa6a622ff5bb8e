#!/usr/bin/env bash
# Instructions per GetProduct (a product-cache hit) counted by callgrind, for the release server
# with its per-call log line (JSON at info, as in production), without it (RUST_LOG=warn), and for
# the bare tonic server of benches/catalog_reads.rs answering the same bytes. Each server runs
# under callgrind twice, serving N1 and then N2 calls (one h2load stream, after one warming call);
# the difference of the totals over N2 − N1 is one call, start-up and shutdown excluded.
#
#   benches/catalog_reads_instructions.sh [N1] [N2]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N1="${1:-1000}"
N2="${2:-6000}"
for tool in valgrind h2load; do command -v "$tool" >/dev/null || { echo "$tool missing" >&2; exit 1; }; done
cargo build --release --quiet
cargo bench --bench catalog_reads --no-run >/dev/null 2>&1
SOKO="$ROOT/${CARGO_TARGET_DIR:-target}/release/soko"
BENCH="$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/catalog_reads-* | grep -v '\.d$' | head -1)"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

# The canned answers and framed requests, from a Soko run normally.
start_soko() { # log_filter data_dir out_log [wrapper...]
  local filter="$1" data="$2" log="$3"
  shift 3
  env -i PATH="$PATH" SOKO_DATA_DIR="$data" SOKO_GRPC_ADDR=127.0.0.1:0 SOKO_OPS_ADDR=127.0.0.1:0 \
    SOKO_LOG_FORMAT=json RUST_LOG="$filter" SOKO_EMBEDDING_DIM=8 \
    SOKO_RATE_LIMIT_GLOBAL=100000000/min "$@" "$SOKO" serve --demo >"$log" 2>/dev/null &
  SERVER=$!
  for _ in $(seq 1 1200); do
    ADDR="$(grep -o '"grpc":"[^"]*"' "$log" 2>/dev/null | head -1 | cut -d'"' -f4 || true)"
    [[ -n "$ADDR" ]] && return 0
    sleep 0.1
  done
  echo "soko did not start: $(cat "$log")" >&2
  exit 1
}
mkdir -p "$WORK/canned-data"
start_soko info "$WORK/canned-data" "$WORK/canned.log"
SOKO_BENCH_FETCH="$ADDR" SOKO_BENCH_DIR="$WORK" "$BENCH" >/dev/null
kill -TERM "$SERVER"
wait "$SERVER" || true

calls() { # addr n
  h2load -n "$2" -c 1 -m 1 -H 'content-type: application/grpc' -H 'te: trailers' -d "$WORK/get.bin" \
    "http://$1/soko.catalog.v1.CatalogService/GetProduct" | grep -E '^requests:' >&2
}

total() { # variant n
  local out="$WORK/cg.out" data="$WORK/data-$1-$2"
  rm -f "$out"
  mkdir -p "$data"
  case "$1" in
    soko-logged) start_soko info "$data" "$WORK/run.log" valgrind --tool=callgrind --callgrind-out-file="$out" ;;
    soko-quiet) start_soko warn,soko::startup=info "$data" "$WORK/run.log" valgrind --tool=callgrind --callgrind-out-file="$out" ;;
    bare)
      SOKO_BENCH_BARE="$WORK" valgrind --tool=callgrind --callgrind-out-file="$out" "$BENCH" >"$WORK/run.log" 2>/dev/null &
      SERVER=$!
      for _ in $(seq 1 600); do ADDR="$(head -1 "$WORK/run.log" 2>/dev/null || true)"; [[ -n "$ADDR" ]] && break; sleep 0.1; done
      ;;
  esac
  # The demo data of this run has its own ids: ask for one of them, once, to warm the cache.
  if [[ "$1" != bare ]]; then SOKO_BENCH_FETCH="$ADDR" SOKO_BENCH_DIR="$WORK" "$BENCH" >/dev/null; fi
  calls "$ADDR" "$2"
  kill -TERM "$SERVER"
  wait "$SERVER" || true
  awk '/^summary:/ {print $2}' "$out"
}

for variant in soko-logged soko-quiet bare; do
  a="$(total "$variant" "$N1")"
  b="$(total "$variant" "$N2")"
  printf '%-12s %8d instructions/call\n' "$variant" $(( (b - a) / (N2 - N1) ))
done
