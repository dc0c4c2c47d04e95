#!/usr/bin/env bash
# The main job: installs liburing-dev when missing, builds the benchmarks in release mode,
# then prints two tables:
#   1. the scheduler micro-benchmarks (cogen-bench; JSON in bench-results.json), and
#   2. the echo servers (echo-matrix: the library on io_uring and on epoll, C liburing,
#      C epoll, SwiftNIO, all driven by echo-load; JSON in echo-results.json).
# Options: --quick (a smoke run of both), --full (the full echo matrix, ~5 minutes),
#          --scheduler-only, --echo-only.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh

quick=0; full=0; scheduler=1; echo=1
for argument in "$@"; do
  case "$argument" in
    --quick) quick=1 ;;
    --full) full=1 ;;
    --scheduler-only) echo=0 ;;
    --echo-only) scheduler=0 ;;
    *) echo "usage: scripts/bench.sh [--quick] [--full] [--scheduler-only] [--echo-only]" >&2; exit 64 ;;
  esac
done

swift build -c release --package-path Benchmarks
bin="$(swift build -c release --package-path Benchmarks --show-bin-path)"

if [ "$scheduler" = 1 ]; then
  if [ "$quick" = 1 ]; then "$bin/cogen-bench" --quick; else "$bin/cogen-bench"; fi
fi
if [ "$echo" = 1 ]; then
  if [ "$full" = 1 ]; then
    "$bin/echo-matrix" --full
  elif [ "$quick" = 1 ]; then
    "$bin/echo-matrix" --duration 1 --warmup 0.5
  else
    "$bin/echo-matrix"
  fi
fi
