#!/usr/bin/env bash
# The slow-reader load of issue 11 against one echo server, N times (default 3).
#   scripts/slow-readers.sh [--runs N] SERVER [SERVER-OPTIONS...]
# e.g. scripts/slow-readers.sh cogen-echo --backend io_uring
#      scripts/slow-readers.sh --runs 5 cogen-echo --backend epoll
# Each run starts the server (a release build in Benchmarks/.build/release) on a free port,
# runs slow-readers against it (200 × 1 MiB and 8 × 32 MiB clients with a 16 KiB SO_RCVBUF
# reading 4 KiB per 100 ms for 8 s, then draining; a 64 B ping every 10 ms), prints one
# JSON line, and stops the server. Build first: swift build -c release --package-path Benchmarks
set -uo pipefail
cd "$(dirname "$0")/.."
runs=3
if [ "${1:-}" = "--runs" ]; then runs=$2; shift 2; fi
[ $# -ge 1 ] || { echo "usage: scripts/slow-readers.sh [--runs N] SERVER [OPTIONS...]" >&2; exit 64; }
bin=Benchmarks/.build/release
status=0
for run in $(seq "$runs"); do
  log=$(mktemp)
  "$bin/$1" --port 0 "${@:2}" > "$log" 2>&1 &  # port 0: a free port, printed
  server=$!
  for _ in $(seq 200); do grep -q listening "$log" && break; sleep 0.05; done
  port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$log")
  [ -n "$port" ] || { cat "$log" >&2; kill "$server" 2>/dev/null; rm -f "$log"; status=1; continue; }
  sleep 0.5  # the server settled: its RSS before the load
  "$bin/slow-readers" --port "$port" --server-pid "$server" --json || status=1
  kill -TERM "$server"; wait "$server" 2>/dev/null
  rm -f "$log"
done
exit $status
