#!/usr/bin/env bash
# hello-ab.sh: two wasmcorn binaries side by side serving sample:hello with 2 workers, 3 rounds alternating
# (A B, B A, A B), each `wrk -t2 -c8 -d8s -H 'Connection: close'` (a connection per request) then `wrk -t2 -c8 -d8s`
# (keep-alive: a binary without it closes every connection anyway), after 1 s of warm-up. For a before/after
# figure of one change: this machine's speed drifts, so only binaries measured in one run compare.
#
# Usage: bench/hello-ab.sh BINARY_A BINARY_B      (EXTRA="--flag ..." adds arguments to both servers)
# Output: one line per server and round, `A close=REQ/S keepalive=REQ/S`. Needs wrk; servers bind 127.0.0.1:0
# and are stopped by pid; their logs go to a private temporary folder, removed at the end.
set -u
[[ $# -eq 2 && -x $1 && -x $2 ]] || { echo "usage: bench/hello-ab.sh BINARY_A BINARY_B (two executables)" >&2; exit 2; }
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT
run() { # binary label
  local log=$LOGS/$2.log
  "$1" serve sample:hello -w 2 -b 127.0.0.1:0 --access-logfile /dev/null ${EXTRA:-} >"$log" 2>&1 & local m=$!
  local port=""; for i in $(seq 100); do port=$(sed -n 's|.*Listening at: http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$log" | head -1); [[ -n $port ]] && break; sleep 0.1; done
  [[ -n $port ]] || { kill -TERM $m; cat "$log" >&2; echo "hello-ab: $1 did not start" >&2; exit 1; }
  sleep 1; wrk -t2 -c8 -d1s -H 'Connection: close' http://127.0.0.1:$port/ >/dev/null
  local close=$(wrk -t2 -c8 -d8s -H 'Connection: close' http://127.0.0.1:$port/ | awk '/^Requests\/sec/{print $2}')
  local ka=$(wrk -t2 -c8 -d8s http://127.0.0.1:$port/ | awk '/^Requests\/sec/{print $2}')
  kill -TERM $m; wait $m 2>/dev/null
  echo "$2 close=$close keepalive=$ka"
}
for r in 1 2 3; do
  if (( r % 2 )); then run "$1" A; run "$2" B; else run "$2" B; run "$1" A; fi
done
