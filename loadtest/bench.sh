#!/usr/bin/env bash
# Every scenario of BENCHMARKS.md, one after the other, against freshly spawned release binaries.
# Build first: cargo build --release -p reflektor -p ekg -p loadtest
set -u
cd "$(dirname "$0")/.."
B=target/release/loadtest
D=${DURATION:-10s}
for i in 1 2 3; do
  $B intake --spawn --rate 10000 --connections 32 --duration "$D" --label "open-10k-run$i"
  $B intake --spawn --connections 64 --duration "$D" --label "closed-64c-run$i"
done
$B fanout --spawn --rooms 1 --subscribers 1000 --rate 300 --duration "$D" --label ws-1x1000
$B fanout --spawn --rooms 100 --subscribers 10000 --rate 3000 --publishers 8 --duration "$D" --label ws-100x100
$B fanout --spawn --transport sse --rooms 1 --subscribers 1000 --rate 300 --duration "$D" --label sse-1x1000
$B connections --spawn --connections 19000 --source-addrs 8 --hold 5s --duration 120s --label ws-19000
$B history --spawn --prefill 10000 --limit 50 --rate 10000 --connections 16 --duration "$D" --label limit50-10k
$B rebuild --spawn --records 500000 --label 500k
