#!/usr/bin/env bash
# Cluster-mode measurements of BENCHMARKS.md, in one session so the figures compare: intake
# at 10k posts/s and at saturation for the embedded log and for JetStream with 1 and 3
# replicas; fan-out through the cluster; the delivery gap when the delivering instance is
# SIGKILLed. Loopback only; every run is bounded by --duration; everything started is stopped
# at the end (the local cluster by SIGTERM to the launcher).
#
#   loadtest/bench-cluster.sh              # DURATION=10s, results under $SESSION
#
# Environment: DURATION (10s), SESSION (loadtest/results/cluster-<UTC time>), SKIP_BUILD,
# PROFILE (release; `debug` runs the debug binaries, for a relative comparison only).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
SESSION=${SESSION:-loadtest/results/cluster-$(date -u +%Y%m%dT%H%M%SZ)}
PROFILE=${PROFILE:-release}
BIN=target/$PROFILE
LOADTEST=$BIN/loadtest
mkdir -p "$SESSION"
NATS_SERVER_BIN="$(scripts/install-nats)"
export NATS_SERVER_BIN
if [ -z "${SKIP_BUILD:-}" ]; then
  if [ "$PROFILE" = release ]; then flag=--release; else flag=; fi
  cargo build $flag --locked -p reflektor -p ekg -p loadtest -p tests --bins
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The local cluster: NATS x3, reflektor on 27070/27071 (stream "reflektor", 3 replicas),
# ekg on 27080/27081.
"$BIN/stack" --cluster --data-dir "$work/stack" --intake-port 27070 --ekg-port 27080 \
  > "$work/stack.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do grep -q "Ctrl-C stops" "$work/stack.out" && break; sleep 0.1; done
grep -q "Ctrl-C stops" "$work/stack.out" || { cat "$work/stack.out"; exit 1; }
nats=$(grep '^NATS ' "$work/stack.out" | awk '{print $3}' | paste -sd, -)
secret=$(cat "$work/stack/secret")

# A third instance on a one-replica stream of the same cluster.
mkdir -p "$work/r1"
"$BIN/reflektor" --listen 127.0.0.1:27072 --data-dir "$work/r1" --nats "$nats" \
  --stream bench_r1 --replicas 1 --secret "$secret" > "$work/r1.out" 2> "$work/r1.err" &
pids+=($!)
for _ in $(seq 1 300); do grep -q listening "$work/r1.out" && break; sleep 0.1; done

run() { echo "== $1"; shift; "$LOADTEST" "$@" --out "$SESSION" | tail -n 25; }
post='rooms/{room}/messages'
for shape in rate sat; do
  if [ "$shape" = rate ]; then extra=(--rate 10000 --connections 32); else extra=(--connections 64); fi
  run "intake $shape embedded" intake --spawn --bin-dir "$BIN" "${extra[@]}" --duration "$DURATION" --label "embedded-$shape"
  run "intake $shape jetstream R1" intake --url "http://127.0.0.1:27072/$post" "${extra[@]}" --duration "$DURATION" --label "js-r1-$shape"
  run "intake $shape jetstream R3" intake --url "http://127.0.0.1:27070/$post" "${extra[@]}" --duration "$DURATION" --label "js-r3-$shape"
done

run "fan-out through the cluster" fanout --publish-url "http://127.0.0.1:27071/$post" \
  --subscribe-url 'ws://127.0.0.1:27080/rooms/{room}/ws' --subscribe-url 'http://127.0.0.1:27081/rooms/{room}/sse' \
  --rooms 1 --subscribers 400 --rate 300 --duration "$DURATION" --label cluster-fanout

# The delivery gap: publish through the instance that does NOT deliver to host 27080, SIGKILL
# the one that does; the worst end-to-end latency of that run is the gap (kill to the next
# delivered record), since publishing never stops.
owner=$(curl -s http://127.0.0.1:27070/_reflektor/hosts | python3 -c '
import json,sys
h=[h for h in json.load(sys.stdin)["hosts"] if h["url"].endswith(":27080")][0]
print(h["owner"].split("-")[1])')
other=27071
[ "$(ss -ltnp 'sport = :27071' | grep -o "pid=$owner")" ] && other=27070
echo "== delivery gap: host 27080 is delivered by pid $owner; publishing to $other"
( sleep 5; kill -KILL "$owner"; echo "killed $owner at $(date +%s.%N)" ) &
run "delivery gap" fanout --publish-url "http://127.0.0.1:$other/$post" \
  --subscribe-url 'ws://127.0.0.1:27080/rooms/{room}/ws' --rooms 1 --subscribers 50 --rate 200 \
  --duration 15s --label cluster-kill-gap
echo "reports in $SESSION"
