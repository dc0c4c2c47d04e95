#!/usr/bin/env bash
# The main job: installs liburing-dev when missing, builds the benchmarks in release mode
# and prints the results table (JSON goes to bench-results.json beside it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
swift build -c release --package-path Benchmarks --product cogen-bench
exec swift run -c release --skip-build --package-path Benchmarks cogen-bench "$@"
