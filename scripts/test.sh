#!/usr/bin/env bash
# The test command: installs liburing-dev when missing, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
exec swift test "$@"
