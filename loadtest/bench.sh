#!/usr/bin/env bash
# Every scenario of BENCHMARKS.md, one after the other, against release binaries on loopback.
# Build first: cargo build --release -p reflektor -p ekg -p loadtest -p tests
# Run on an otherwise idle machine: the harness shares the two cores with the servers.
set -u
cd "$(dirname "$0")/.."
B=target/release/loadtest
D=${DURATION:-10s}
for i in 1 2 3; do
  $B intake --spawn --rate 10000 --connections 32 --duration "$D" --label "open-10k-run$i"
  $B intake --spawn --connections 64 --duration "$D" --label "closed-64c-run$i"
done

# Fan-out, unpinned: servers and harness float over both cores.
$B fanout --spawn --rooms 1 --subscribers 1000 --rate 300 --duration "$D" --label ws-1x1000
$B fanout --spawn --rooms 100 --subscribers 10000 --rate 3000 --publishers 8 --duration "$D" --label ws-100x100
$B fanout --spawn --transport sse --rooms 1 --subscribers 1000 --rate 300 --duration "$D" --label sse-1x1000

# Fan-out, pinned: reflektor + ekg (the local stack) on core 0, the harness on core 1, so the
# two sides stop preempting each other. The stack is stopped by its pid after each run.
pinned() {
  local label=$1; shift
  local dir; dir=$(mktemp -d)
  taskset -c 0 target/release/stack --data-dir "$dir" --intake-port 27070 --ekg-port 27080 >"$dir/stack.out" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:27080/readyz >/dev/null && break; sleep 0.1; done
  taskset -c 1 $B fanout --publish-url 'http://127.0.0.1:27070/rooms/{room}/messages' "$@" --duration "$D" --label "$label"
  kill -INT "$pid"; wait "$pid"
  rm -rf "$dir"
}
pinned pinned-ws-1x1000 --subscribe-url 'ws://127.0.0.1:27080/rooms/{room}/ws' --rooms 1 --subscribers 1000 --rate 300
pinned pinned-ws-100x100 --subscribe-url 'ws://127.0.0.1:27080/rooms/{room}/ws' --rooms 100 --subscribers 10000 --rate 3000 --publishers 8
pinned pinned-sse-1x1000 --subscribe-url 'http://127.0.0.1:27080/rooms/{room}/sse' --rooms 1 --subscribers 1000 --rate 300

$B connections --spawn --connections 19000 --source-addrs 8 --hold 5s --duration 120s --label ws-19000
$B history --spawn --prefill 10000 --limit 50 --rate 10000 --connections 16 --duration "$D" --label limit50-10k
$B rebuild --spawn --records 500000 --label 500k
