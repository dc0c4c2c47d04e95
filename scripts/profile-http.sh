#!/usr/bin/env bash
# Instructions per request of cogen-http's user space, under callgrind: noise-free, so
# that a change to the request path can be judged on this shared, noisy machine (no
# hardware counters here). The kernel's share is not counted: use perf for that
# (BENCHMARKS.md, "Where a request's instructions go").
#
#   scripts/profile-http.sh [connections] [extra cogen-http arguments…]
#     e.g. scripts/profile-http.sh 16
#          scripts/profile-http.sh 16 --backend epoll
#   KEEP=DIR keeps the callgrind dump in DIR (for callgrind_annotate --tree=caller).
#
# Builds cogen-http (release), runs a copy without debug info (valgrind 3.19 cannot read
# Swift 6.3's DWARF) under callgrind on one scheduler, warms it up with wrk for 3 s, then
# counts a 10 s wrk run (callgrind_control --zero, then --dump) and prints the
# instructions per request wrk counted, and the top functions. Needs valgrind and wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
connections=${1:-16}
shift || true
for tool in valgrind callgrind_control callgrind_annotate wrk; do
  command -v "$tool" >/dev/null || { echo "profile-http.sh: $tool is missing (apt-get install valgrind wrk)" >&2; exit 1; }
done
swift build -c release --package-path Benchmarks --product cogen-http >&2
work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    # The server shuts down slowly under valgrind: give it a moment, then end it.
    for _ in 1 2 3 4 5 6; do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  if [ -n "${KEEP:-}" ]; then cp "$work"/out.* "$KEEP"/ 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
objcopy --strip-debug Benchmarks/.build/release/cogen-http "$work/cogen-http"
valgrind --tool=callgrind --callgrind-out-file="$work/out" "$work/cogen-http" --threads 1 --port 0 "$@" \
  > "$work/server.log" 2>&1 &
pid=$!
port=""
for _ in $(seq 240); do
  port=$(ss -ltnp 2>/dev/null | grep "pid=$pid," | grep -o '127.0.0.1:[0-9]*' | head -1 | cut -d: -f2 || true)
  [ -n "$port" ] && break
  sleep 0.5
done
[ -n "$port" ] || { echo "profile-http.sh: the server did not start" >&2; cat "$work/server.log" >&2; exit 1; }
headers=(-H 'Host: localhost'
  -H 'Accept: text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7'
  -H 'Connection: keep-alive')
wrk -t1 -c"$connections" -d3s "${headers[@]}" "http://127.0.0.1:$port/plaintext" > /dev/null
callgrind_control --zero "$pid" > /dev/null
wrk -t1 -c"$connections" -d10s "${headers[@]}" "http://127.0.0.1:$port/plaintext" > "$work/wrk.txt"
callgrind_control --dump "$pid" > /dev/null
requests=$(grep -o '^ *[0-9]* requests' "$work/wrk.txt" | awk '{print $1}')
dump=$(ls -t "$work"/out.* | head -1)
total=$(callgrind_annotate "$dump" 2>/dev/null | grep -m1 'PROGRAM TOTALS' | awk '{print $1}' | tr -d ,)
echo "cogen-http${*:+ $*} under wrk -c$connections: $requests requests, $total instructions, $((total / requests)) per request"
echo "top functions (self), instructions per request:"
# (The thread's entry points, which carry the whole total, left out.)
callgrind_annotate --threshold=100 --auto=no "$dump" 2>/dev/null | sed -n '/file:function/,$p' \
  | grep -v 'clone\.S\|start_thread\|LoopThread\|SchedulerC5start' | sed -n '3,27p' \
  | sed -E 's/ \[[^]]*\]$//' | awk -v r="$requests" '{n=$1; gsub(",", "", n); printf "%7d  %s\n", n / r, $NF}'
echo "by object (self), instructions per request:"
# Where the instructions run: this binary (CogenUring, CogenHTTP, the stdlib code inlined
# into them), the Swift runtime (reference counting), its concurrency runtime (task
# resume, executor checks, task allocator), libc (memcpy, the task-status mutex).
callgrind_annotate --threshold=100 --auto=no "$dump" 2>/dev/null | sed -n '/file:function/,$p' \
  | tail -n +3 | grep -v '(100.0%)' \
  | awk -v r="$requests" '{n=$1; gsub(",", "", n); o=$NF; gsub(/.*\//, "", o); gsub(/\]/, "", o); s[o]+=n}
      END {for (o in s) if (s[o] / r >= 1) printf "%7d  %s\n", s[o] / r, o}' | sort -rn
