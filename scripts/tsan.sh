#!/usr/bin/env bash
# ThreadSanitizer over the cross-thread suites: spawn, execute, stop, cancel and resume from
# other threads, the server (its threads and its shutdown), shutdown from another thread,
# and compat's box shared by schedulers on different threads. Builds into .build-tsan.
# Fails (exit 1) when a test fails or ThreadSanitizer reports anything; prints the count.
# Extra arguments go to `swift test` (e.g. --filter to narrow further).
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh

scratch=.build-tsan
suites='^(CogenUringTests\.(ThreadTests|LifecycleTests|ServerTests|ServerGrownTests)|CogenCompatTests\.SharedTests)/'

start=$(date +%s)
if ! swift build --build-tests --sanitize=thread --scratch-path "$scratch"; then
  echo "tsan: the build failed" >&2
  exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# halt_on_error=0: every report is printed and counted, not just the first.
TSAN_OPTIONS="halt_on_error=0 ${TSAN_OPTIONS:-}" \
  swift test --skip-build --sanitize=thread --scratch-path "$scratch" --filter "$suites" "$@" 2>&1 \
  | tee "$log"
status=${PIPESTATUS[0]}

reports=$(grep -c 'WARNING: ThreadSanitizer' "$log")
tests=$(grep -Eo 'Test run with [0-9]+ tests?' "$log" | tail -1)
echo "tsan: ${tests:-no test run}; ${reports} ThreadSanitizer report(s); exit status ${status}; $(($(date +%s) - start)) s"
if [ "$reports" -ne 0 ] || [ "$status" -ne 0 ] || [ -z "$tests" ]; then
  exit 1
fi
