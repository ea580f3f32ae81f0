#!/usr/bin/env bash
# The benchmark matrix of BENCHMARKS.md: every shape against ours, Nchan and the limit servers,
# back to back in one session, so each table compares figures taken minutes apart on the same
# machine. Loopback only; every run is bounded in time (and the servers are killed after it).
#
#   loadtest/bench.sh                      # the whole matrix once (~25 min at DURATION=10s)
#   REPEAT=3 loadtest/bench.sh             # three rounds; the table quotes medians
#   ONLY='^(e2e|wrk)' loadtest/bench.sh    # shapes whose name matches the regex
#   BIN_DIR=/path/to/release loadtest/bench.sh   # reflektor and ekg from elsewhere (a baseline)
#
# Environment: DURATION (10s), REPEAT (1), ONLY (all), SESSION (loadtest/results/<UTC time>),
# BIN_DIR (target/release: reflektor, ekg), LOADTEST (target/release/loadtest), SKIP_BUILD.
#
# Installs what the benchmarks need when it is missing (Debian's nginx, libnginx-mod-nchan and
# wrk, with apt-get; never starting nginx's system service). The tests do not need them.
# Writes every report (JSON + SVG) under $SESSION/rep<N>/, then $SESSION/summary.md and
# compare-*.svg (`loadtest table`). Run it when the machine is as quiet as it gets: the harness
# shares the two cores with the servers, and each report records the load average.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
REPEAT=${REPEAT:-1}
ONLY=${ONLY:-.}
BIN_DIR=${BIN_DIR:-target/release}
LOADTEST=${LOADTEST:-target/release/loadtest}
SESSION=${SESSION:-loadtest/results/$(date -u +%Y%m%dT%H%M%SZ)}

install_missing() {
  local need=()
  [ -x /usr/sbin/nginx ] || need+=(nginx)
  [ -e /usr/lib/nginx/modules/ngx_nchan_module.so ] || need+=(libnginx-mod-nchan)
  command -v wrk >/dev/null || need+=(wrk)
  command -v taskset >/dev/null || need+=(util-linux)
  [ ${#need[@]} -eq 0 ] && return
  echo "== installing ${need[*]} (apt-get)"
  # nginx's package starts its system service unless policy-rc.d forbids it: forbid it for the
  # install when nothing does already. The benchmarks start their own nginx on loopback.
  local policy=/usr/sbin/policy-rc.d added=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1
  fi
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
  [ -n "$added" ] && rm -f "$policy"
  return 0
}

install_missing
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release --locked -p loadtest
  [ "$BIN_DIR" = target/release ] && cargo build --release --locked -p reflektor -p ekg
fi
mkdir -p "$SESSION"
{
  echo "started $(date -u +%FT%TZ) on $(hostname), nproc $(nproc)"
  echo "harness at $(git log -1 --format="%h %s" 2>/dev/null || true); reflektor and ekg from $BIN_DIR"
  echo "DURATION=$DURATION REPEAT=$REPEAT ONLY=$ONLY"
} >"$SESSION/session.txt"

# shape NAME "TARGETS" [pinned] -- LOADTEST ARGS...: run the shape against each target in turn.
shape() {
  local name=$1 targets=$2; shift 2
  local pin_harness=() pin_servers=()
  if [ "$1" = pinned ]; then
    # Servers on core 0, the harness on core 1: the two sides stop preempting each other.
    pin_harness=(taskset -c 1); pin_servers=(--server-cpus 0); shift
  fi
  [ "$1" = -- ] && shift
  [[ $name =~ $ONLY ]] || return 0
  local t
  for t in $targets; do
    echo "== $name / $t (round $rep of $REPEAT, load $(cut -d' ' -f1-3 /proc/loadavg))"
    if ! "${pin_harness[@]}" "$LOADTEST" "$@" --spawn --target "$t" --bin-dir "$BIN_DIR" \
        "${pin_servers[@]}" --label "$name" --out "$SESSION/rep$rep"; then
      echo "$name $t round $rep" >>"$SESSION/failed.txt"
    fi
  done
}

D=$DURATION
FAN=(ours nchan limit-thread limit-task limit-coalesce)
for rep in $(seq "$REPEAT"); do
  # End to end, post to socket, at 10k posts/s: 10 rooms x 1 subscriber.
  e2e=(fanout --rooms 10 --subscribers 10 --rate 10000 --publishers 10 --duration "$D")
  shape e2e-ws-10x1 "ours nchan limit-thread limit-task" -- "${e2e[@]}"
  shape e2e-ws-10x1-fsync-always "ours" -- "${e2e[@]}" --reflektor-arg=--fsync=always
  shape e2e-ws-10x1-standalone "ours" -- "${e2e[@]}" --standalone
  shape e2e-sse-10x1 "ours nchan" -- "${e2e[@]}" --transport sse
  shape e2e-sse-10x1-fsync-always "ours" -- "${e2e[@]}" --transport sse --reflektor-arg=--fsync=always

  # Many small rooms: 100 rooms x 100 WebSocket subscribers at 15 and 30 messages/s per room.
  shape ws-100x100-15 "${FAN[*]}" -- fanout --rooms 100 --subscribers 10000 --rate 1500 --publishers 8 --duration "$D"
  shape ws-100x100-30 "${FAN[*]}" -- fanout --rooms 100 --subscribers 10000 --rate 3000 --publishers 8 --duration "$D"
  # One big room.
  shape ws-1x1000 "ours nchan limit-thread limit-task" -- fanout --rooms 1 --subscribers 1000 --rate 500 --duration "$D"
  shape sse-1x1000 "ours nchan" -- fanout --transport sse --rooms 1 --subscribers 1000 --rate 500 --duration "$D"

  # 10,000 connections opened 256 at a time: set-up time (the reconnect storm when a host
  # dies) and idle memory per connection.
  conns=(connections --connections 10000 --concurrency 256 --source-addrs 8 --hold 5s --duration 120s)
  shape ws-10000 "ours nchan limit-thread limit-task" -- "${conns[@]}"
  shape sse-10000 "ours nchan" -- "${conns[@]}" --transport sse

  # Rooms: memory per room holding one short message; opening rooms vs writing to one.
  shape rooms-78000 "ours nchan" -- rooms --rooms 78000 --connections 16 --duration 120s

  # Intake: saturation with wrk (64 connections), and the 202's latency at 10k posts/s.
  shape wrk-64c "ours nchan limit-202" -- wrk --connections 64 --threads 2 --duration "$D"
  shape intake-10k "ours nchan limit-202" -- intake --rate 10000 --connections 32 --duration "$D"

  # Pinned, where the harness's share of the cores decides the tail.
  shape pinned-ws-100x100-15 "ours nchan limit-thread limit-task" pinned -- fanout --rooms 100 --subscribers 10000 --rate 1500 --publishers 8 --duration "$D"
  shape pinned-ws-1x1000 "ours nchan limit-thread" pinned -- fanout --rooms 1 --subscribers 1000 --rate 500 --duration "$D"
  shape pinned-e2e-ws-10x1 "ours nchan limit-thread" pinned -- "${e2e[@]}"

  # The first round's shapes that have no peer (ours only).
  shape history-limit50-10k "ours" -- history --prefill 10000 --limit 50 --rate 10000 --connections 16 --duration "$D"
  shape rebuild-500k "ours" -- rebuild --records 500000
done

"$LOADTEST" table "$SESSION"
echo "finished $(date -u +%FT%TZ)" >>"$SESSION/session.txt"
if [ -s "$SESSION/failed.txt" ]; then
  echo "some runs failed:"; cat "$SESSION/failed.txt"
  exit 1
fi
