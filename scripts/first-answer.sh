#!/usr/bin/env bash
# How long the README's first command takes to its first answer.
#
#   scripts/first-answer.sh [CARGO RUN ARGS...]     e.g. no arguments, or --release
#
# Runs `cargo run ARGS -- dev` in this checkout (a fresh clone for the figure the README quotes)
# and sends an empty ListConsumerDataShares every half second until the gateway answers with a
# grpc-status (any status: the gateway is up and deciding), then prints the seconds and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
printf '\x00\x00\x00\x00\x00' >"$work/empty.grpc"
start=$(date +%s.%N)
cargo run "$@" -- dev --audit-dir "$work/audit" >"$work/dev.log" 2>&1 &
pid=$!
while :; do
  headers=$(curl -s -m 2 --http2-prior-knowledge -o /dev/null -D - \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    --data-binary @"$work/empty.grpc" \
    http://127.0.0.1:50051/datasharing.v1.DataSharing/ListConsumerDataShares 2>/dev/null || true)
  if grep -qi '^grpc-status:' <<<"$headers"; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "first-answer: dev exited before answering:" >&2
    tail -n 20 "$work/dev.log" >&2
    exit 1
  fi
  sleep 0.5
done
end=$(date +%s.%N)
grep -i '^grpc-status:' <<<"$headers"
echo "first answer after $(echo "$end - $start" | bc) s"
