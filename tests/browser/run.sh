#!/usr/bin/env bash
# Browser tests of ekg's client (/ekg.js) and demo page (/) in Debian's headless Chromium,
# driven by npm playwright-core (which downloads no browser). Installs what is missing
# (chromium, node_modules), then runs the node:test files against the real binaries:
#   EKG_BIN (default target/debug/ekg), REFLEKTOR_BIN (default target/debug/reflektor).
# When EKG_BIN is not given, the binaries are built first (cargo build -p ekg -p reflektor),
# since ekg embeds the static files at compile time. Safe to run again.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
started=$SECONDS

if [ ! -x /usr/bin/chromium ]; then
  echo "== installing Debian's chromium"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

if [ ! -d "$here/node_modules/playwright-core" ]; then
  echo "== npm ci (playwright-core only, no browser download)"
  (cd "$here" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi

if [ -z "${EKG_BIN:-}" ] && [ -z "${SKIP_BUILD:-}" ]; then
  echo "== cargo build -p ekg -p reflektor"
  (cd "$root" && cargo build --locked -p ekg -p reflektor)
fi
export EKG_BIN="${EKG_BIN:-$root/target/debug/ekg}"
export REFLEKTOR_BIN="${REFLEKTOR_BIN:-$root/target/debug/reflektor}"

mkdir -p "$here/out"
cd "$here"
status=0
node --test --test-concurrency=1 --test-timeout=120000 ./*.test.js || status=$?
echo "browser tests finished in $((SECONDS - started))s (exit $status)"
exit $status
