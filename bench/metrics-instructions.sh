#!/usr/bin/env bash
# metrics-instructions.sh: what `--metrics-bind` costs, counted in instructions rather than seconds, so that the
# figure holds on a machine whose speed drifts. Each server runs under `valgrind --tool=callgrind` (which counts
# every instruction a process executes, whatever else the machine is doing), serving sample:hello with one worker
# that leaves by itself after `--max-requests` requests, so that its count is written when it exits.
#
# A worker's instructions per request are the difference between a worker that served LONG requests and one
# that served SHORT ones, divided by LONG - SHORT: the boot cost cancels out. That is measured without and with
# `--metrics-bind`, for a connection per request (`hey -disable-keepalive`) and for keep-alive (`hey`, one
# connection). The metrics process's instructions per scrape of /metrics are counted the same way (SCRAPES_LONG
# against SCRAPES_SHORT scrapes), since a scrape runs on the same cores as the workers.
#
# Usage: bench/metrics-instructions.sh [WASMCORN_BINARY]     (default: target/release/wasmcorn)
# Environment: SHORT (200), LONG (2200), SCRAPES_SHORT (1), SCRAPES_LONG (41); KEEP=1 keeps callgrind's files
# (one per process, for callgrind_annotate) and says where.
# Needs valgrind and hey. Servers bind 127.0.0.1:0 and are stopped by pid; files go to a private temporary folder.
set -u
BIN=${1:-target/release/wasmcorn}
SHORT=${SHORT:-200} LONG=${LONG:-2200} SCRAPES_SHORT=${SCRAPES_SHORT:-1} SCRAPES_LONG=${SCRAPES_LONG:-41}
die() { echo "metrics-instructions: $*" >&2; exit 1; }
[[ -x $BIN ]] || die "no executable at $BIN (build it: cargo build --release -p wasmcorn)"
for tool in valgrind hey curl; do command -v $tool >/dev/null || die "needs $tool"; done
WORK=$(mktemp -d); [[ -z ${KEEP:-} ]] || echo "files in $WORK" >&2
SERVER=""
cleanup() { [[ -z $SERVER ]] || kill -TERM "$SERVER" 2>/dev/null; [[ -n ${KEEP:-} ]] || rm -rf "$WORK"; }
trap cleanup EXIT

# Instructions counted in callgrind's file $1.
instructions() { sed -n 's/^\(summary\|totals\): *\([0-9]*\).*/\2/p' "$1" | head -n1; }

# Waits up to 300 s for the line matching sed expression $2 in file $1 and prints its first capture.
await() {
  local found=""
  for _ in $(seq 3000); do
    found=$(sed -n "$2" "$1" | head -n1)
    [[ -n $found ]] && { echo "$found"; return 0; }
    [[ -n $SERVER ]] && ! kill -0 "$SERVER" 2>/dev/null && break
    sleep 0.1
  done
  return 1
}

# One server under callgrind: `measure NAME REQUESTS SCRAPES HEY_FLAGS [SERVER_ARGS...]`. Sends REQUESTS requests
# (the worker then leaves) and SCRAPES scrapes of /metrics (when metrics are on), stops the server and prints
# `WORKER_INSTRUCTIONS METRICS_PROCESS_INSTRUCTIONS`.
measure() {
  local name=$1 requests=$2 scrapes=$3 hey_flags=$4; shift 4
  # Each measurement runs in a subshell of its own, which does not inherit the script's trap.
  trap '[[ -z $SERVER ]] || kill -TERM "$SERVER" 2>/dev/null' EXIT
  local dir=$WORK/$name; mkdir -p "$dir"
  # valgrind's options go through its environment: a worker rewrites the command-line area for its title, which
  # under valgrind holds valgrind's own arguments, the output file's name among them.
  VALGRIND_OPTS="--trace-children=yes --callgrind-out-file=$dir/%p.out" valgrind --tool=callgrind \
    "$BIN" serve sample:hello -w 1 -b 127.0.0.1:0 --access-logfile /dev/null --max-requests "$requests" "$@" \
    >"$dir/log" 2>&1 &
  SERVER=$!
  local port worker metrics_address="" metrics_pid=""
  port=$(await "$dir/log" 's|.*Listening at: http://127\.0\.0\.1:\([0-9]*\).*|\1|p') || die "$name: no start-up line"
  worker=$(await "$dir/log" 's|.*Booting worker with pid: \([0-9]*\).*|\1|p') || die "$name: no worker booted"
  # shellcheck disable=SC2086 # the flags are words
  hey -n "$requests" -c 1 $hey_flags "http://127.0.0.1:$port/" >"$dir/hey" || die "$name: hey failed"
  grep -q "\[200\][[:space:]]*$requests responses" "$dir/hey" || die "$name: not $requests answers of 200: $(cat "$dir/hey")"
  await "$dir/log" "s|.*\(Worker exiting (pid: $worker)\).*|\1|p" >/dev/null || die "$name: the worker did not leave"
  if grep -q "Serving metrics at" "$dir/log"; then
    metrics_address=$(sed -n 's|.*Serving metrics at: http://\([0-9.:]*\).*|\1|p' "$dir/log" | head -n1)
    metrics_pid=$(ps -o pid=,args= --ppid "$SERVER" | awk '/wasmcorn: metrics/ { print $1 }')
    [[ -n $metrics_pid ]] || die "$name: no metrics process"
    for _ in $(seq "$scrapes"); do
      curl -fsS --max-time 30 -o /dev/null "http://$metrics_address/metrics" || die "$name: a scrape failed"
    done
  fi
  # The metrics process is ended first, with a signal whose default action lets callgrind write its count (the
  # arbiter's stop sends SIGKILL, which would not); the arbiter then starts another, which is not counted.
  if [[ $scrapes -gt 0 && -n $metrics_pid ]]; then
    kill -TERM "$metrics_pid"
    for _ in $(seq 300); do [[ -s $dir/$metrics_pid.out ]] && ! kill -0 "$metrics_pid" 2>/dev/null && break; sleep 0.1; done
  fi
  kill -TERM "$SERVER"; wait "$SERVER" 2>/dev/null; SERVER=""
  for _ in $(seq 100); do [[ -s $dir/$worker.out ]] && break; sleep 0.1; done
  local worker_count metrics_count=0 file
  worker_count=$(instructions "$dir/$worker.out")
  [[ -n $worker_count ]] || die "$name: no count for worker $worker"
  if [[ $scrapes -gt 0 && -n $metrics_pid ]]; then
    for _ in $(seq 100); do [[ -s $dir/$metrics_pid.out ]] && break; sleep 0.1; done
    metrics_count=$(instructions "$dir/$metrics_pid.out")
    [[ -n $metrics_count ]] || die "$name: no count for the metrics process $metrics_pid"
  fi
  echo "$worker_count $metrics_count"
}

per() { # total_long total_short count_long count_short
  [[ -n $1 && -n $2 && $1 != 0 && $2 != 0 ]] || die "a run gave no count (its error is above)"
  awk -v a="$1" -v b="$2" -v n="$3" -v m="$4" 'BEGIN { printf "%.0f", (a - b) / (n - m) }'
}

echo "Instructions per request in the worker (callgrind; $LONG against $SHORT requests, one worker, sample:hello):"
echo "| load | without --metrics-bind | with --metrics-bind | ratio |"
echo "|---|---:|---:|---:|"
for load in close keep-alive; do
  flags=""; [[ $load == close ]] && flags="-disable-keepalive"
  read -r off_short _ < <(measure "off-$load-short" "$SHORT" 0 "$flags")
  read -r off_long _ < <(measure "off-$load-long" "$LONG" 0 "$flags")
  read -r on_short _ < <(measure "on-$load-short" "$SHORT" 0 "$flags" --metrics-bind 127.0.0.1:0)
  read -r on_long _ < <(measure "on-$load-long" "$LONG" 0 "$flags" --metrics-bind 127.0.0.1:0)
  off=$(per "$off_long" "$off_short" "$LONG" "$SHORT")
  on=$(per "$on_long" "$on_short" "$LONG" "$SHORT")
  echo "| $load | $off | $on | $(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.4f", a / b }') |"
done
read -r _ scrape_short < <(measure scrape-short "$SHORT" "$SCRAPES_SHORT" "" --metrics-bind 127.0.0.1:0)
read -r _ scrape_long < <(measure scrape-long "$SHORT" "$SCRAPES_LONG" "" --metrics-bind 127.0.0.1:0)
[[ $scrape_short -gt 0 && $scrape_long -gt 0 ]] || die "no count for the metrics process"
echo
echo "Instructions per scrape of /metrics in the metrics process: $(per "$scrape_long" "$scrape_short" "$SCRAPES_LONG" "$SCRAPES_SHORT")"
