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
# are stopped by pid (on any exit too); their logs go to a private temporary folder, removed at the end.
set -u
[[ ($# -eq 2 || $# -eq 3) && -x $1 && -x $2 ]] || {
  echo "usage: bench/latency-ab.sh BINARY_A BINARY_B [APP] (two executables)" >&2
  exit 2
}
command -v wrk >/dev/null || { echo "latency-ab: wrk is required (apt-get install wrk)" >&2; exit 2; }
NAME=latency-ab
# shellcheck source=bench/ab-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/ab-lib.sh"
measure() { # port label
  local out=$AB_LOGS/$2.wrk
  sleep 1; wrk -t1 -c1 -d1s "http://127.0.0.1:$1/" >/dev/null
  wrk -t1 -c1 -d5s --latency "http://127.0.0.1:$1/" >"$out"
  awk -v label="$2" '/^Requests\/sec/ { rps = $2 } $1 == "50%" { p50 = $2 } $1 == "90%" { p90 = $2 }
    $1 == "99%" { p99 = $2 } END { printf "%s req/s=%s p50=%s p90=%s p99=%s\n", label, rps, p50, p90, p99 }' "$out"
}
ab_rounds "$1" "$2" 1 "${3:-sample:hello}"
