#!/usr/bin/env bash
# latency-ab.sh: two wasmcorn binaries side by side, one worker each, answering one client that sends its next
# request on the same connection as soon as it has the last response (`wrk -t1 -c1 -d5s --latency`, after 1 s of
# warm-up), 3 rounds alternating (A B, B A, A B). What a single client waits for per request, where hello-ab.sh
# measures what 8 clients get through 2 busy workers. This machine's speed drifts: only binaries measured in one
# run compare.
#
# Usage: bench/latency-ab.sh BINARY_A BINARY_B [APP]   (APP: what `serve` takes, default sample:hello;
#                                                       EXTRA="--flag ..." adds arguments to both servers)
# Output: one line per server and round, `A req/s=N p50=T p90=T p99=T`. Needs wrk; servers bind 127.0.0.1:0 and
# are stopped by pid; their logs go to a private temporary folder, removed at the end.
set -u
[[ ($# -eq 2 || $# -eq 3) && -x $1 && -x $2 ]] || {
  echo "usage: bench/latency-ab.sh BINARY_A BINARY_B [APP] (two executables)" >&2
  exit 2
}
APP=${3:-sample:hello}
command -v wrk >/dev/null || { echo "latency-ab: wrk is required (apt-get install wrk)" >&2; exit 2; }
LOGS=$(mktemp -d)
SERVER="" # the running server's pid, stopped on any exit (an interrupt included)
trap '[[ -z $SERVER ]] || kill -TERM "$SERVER" 2>/dev/null; rm -rf "$LOGS"' EXIT
trap 'exit 130' INT TERM
run() { # binary label
  local log=$LOGS/$2.log out=$LOGS/$2.wrk
  "$1" serve "$APP" -w 1 -b 127.0.0.1:0 --access-logfile /dev/null ${EXTRA:-} >"$log" 2>&1 & local m=$!
  SERVER=$m
  local port="" i
  for i in $(seq 300); do
    port=$(sed -n 's|.*Listening at: http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$log" | head -1)
    [[ -n $port ]] && break
    sleep 0.1
  done
  [[ -n $port ]] || { kill -TERM $m; cat "$log" >&2; echo "latency-ab: $1 did not start" >&2; exit 1; }
  sleep 1; wrk -t1 -c1 -d1s "http://127.0.0.1:$port/" >/dev/null
  wrk -t1 -c1 -d5s --latency "http://127.0.0.1:$port/" >"$out"
  kill -TERM $m; wait $m 2>/dev/null; SERVER=""
  awk -v label="$2" '/^Requests\/sec/ { rps = $2 } $1 == "50%" { p50 = $2 } $1 == "90%" { p90 = $2 }
    $1 == "99%" { p99 = $2 } END { printf "%s req/s=%s p50=%s p90=%s p99=%s\n", label, rps, p50, p90, p99 }' "$out"
}
for r in 1 2 3; do
  if (( r % 2 )); then run "$1" A; run "$2" B; else run "$2" B; run "$1" A; fi
done
