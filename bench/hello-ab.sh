#!/usr/bin/env bash
# hello-ab.sh: two wasmcorn binaries side by side serving sample:hello with 2 workers, 3 rounds alternating
# (A B, B A, A B), each `wrk -t2 -c8 -d8s -H 'Connection: close'` (a connection per request) then `wrk -t2 -c8 -d8s`
# (keep-alive: a binary without it closes every connection anyway), after 1 s of warm-up. For a before/after
# figure of one change: this machine's speed drifts, so only binaries measured in one run compare.
#
# Usage: bench/hello-ab.sh BINARY_A BINARY_B      (EXTRA="--flag ..." adds arguments to both servers)
# Output: one line per server and round, `A close=REQ/S keepalive=REQ/S`. Needs wrk; servers bind 127.0.0.1:0
# and are stopped by pid (on any exit too); their logs go to a private temporary folder, removed at the end.
set -u
[[ $# -eq 2 && -x $1 && -x $2 ]] || { echo "usage: bench/hello-ab.sh BINARY_A BINARY_B (two executables)" >&2; exit 2; }
NAME=hello-ab
# shellcheck source=bench/ab-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/ab-lib.sh"
measure() { # port label
  local close ka
  sleep 1; wrk -t2 -c8 -d1s -H 'Connection: close' "http://127.0.0.1:$1/" >/dev/null
  close=$(wrk -t2 -c8 -d8s -H 'Connection: close' "http://127.0.0.1:$1/" | awk '/^Requests\/sec/{print $2}')
  ka=$(wrk -t2 -c8 -d8s "http://127.0.0.1:$1/" | awk '/^Requests\/sec/{print $2}')
  echo "$2 close=$close keepalive=$ka"
}
ab_rounds "$1" "$2" 2 sample:hello
