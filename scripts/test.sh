#!/usr/bin/env bash
# The test command: installs liburing-dev when missing, checks that every trap in Sources/
# names its invariant, runs the cross-thread suites under ThreadSanitizer (zero reports),
# then runs the whole suite (fault-injection soak with fixed seeds included), the stress
# suites last and alone.
# COGEN_SKIP_TSAN=1 skips the ThreadSanitizer step; extra arguments go to `swift test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
scripts/check-traps.sh
if [ "${COGEN_SKIP_TSAN:-0}" != 1 ]; then
  scripts/tsan.sh
fi
if [ $# -gt 0 ]; then
  exec swift test "$@"
fi
swift test --skip StressTests
# The stress suites (slowloris latency ratios, memory under slow readers) run alone,
# once the other suites no longer load the machine's CPUs.
exec swift test --skip-build --filter StressTests
