#!/usr/bin/env bash
# The main job: installs liburing-dev, wrk and nginx-light when missing, builds the
# benchmarks in release mode, then prints three tables:
#   1. the scheduler micro-benchmarks (cogen-bench; JSON in bench-results.json),
#   2. the echo servers (echo-matrix: the library on io_uring and on epoll, C liburing,
#      C epoll, SwiftNIO, all driven by echo-load; JSON in echo-results.json), and
#   3. a short HTTP table (http-matrix: cogen-http on io_uring and on epoll against nginx,
#      TechEmpower plaintext under wrk, pipelined at a 40 % CPU quota and 256 connections at
#      60 %, 3 turns of 3 s; JSON in http-results.json).
# Options: --quick (a smoke run of all three), --full (the full echo matrix, ~5 minutes),
#          --scheduler-only, --echo-only,
#          --http (only the full HTTP table: four shapes, quota'd and not, the C floors, a spinning
#          cogen-http; ~9 min),
#          --http-full (the same with Hummingbird, whose first build takes minutes more).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh

quick=0; full=0; scheduler=1; echo=1; http=short; hummingbird=0
for argument in "$@"; do
  case "$argument" in
    --quick) quick=1 ;;
    --full) full=1 ;;
    --scheduler-only) echo=0; http=none ;;
    --echo-only) scheduler=0; http=none ;;
    --http) scheduler=0; echo=0; http=full ;;
    --http-full) scheduler=0; echo=0; http=full; hummingbird=1 ;;
    *) echo "usage: scripts/bench.sh [--quick] [--full] [--scheduler-only] [--echo-only] [--http] [--http-full]" >&2; exit 64 ;;
  esac
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if [ "$http" != none ]; then
  # wrk and nginx from Debian's packages. The package's own nginx service is not started
  # (a policy-rc.d for the duration of the install, where none exists): the benchmark
  # runs its own nginx on a loopback port.
  missing=()
  command -v wrk >/dev/null || missing+=(wrk)
  [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]} with apt-get" >&2
    policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
      $SUDO chmod +x /usr/sbin/policy-rc.d
      policy=1
    fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${missing[@]}"
    if [ "$policy" = 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
  fi
fi

# Product by product: a plain `swift build` would also build hb-http (Hummingbird: minutes).
products=()
[ "$scheduler" = 1 ] && products+=(cogen-bench)
[ "$echo" = 1 ] && products+=(echo-load echo-matrix cogen-echo c-uring-echo c-epoll-echo nio-echo)
[ "$http" != none ] && products+=(cogen-http http-matrix)
[ "$http" = full ] && products+=(c-uring-http c-epoll-http)
[ "$hummingbird" = 1 ] && products+=(hb-http)
for product in "${products[@]}"; do
  swift build -c release --package-path Benchmarks --product "$product"
done
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
# The cgroup CPU quota and nice -20 need root.
case "$http" in
  short)
    if [ "$quick" = 1 ]; then
      $SUDO "$bin/http-matrix" --turns 1 --duration 1 --warmup 0
    else
      $SUDO "$bin/http-matrix"
    fi ;;
  full)
    if [ "$hummingbird" = 1 ]; then $SUDO "$bin/http-matrix" --full --hummingbird; else $SUDO "$bin/http-matrix" --full; fi ;;
esac
