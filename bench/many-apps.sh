#!/usr/bin/env bash
# many-apps.sh: one wasmcorn hosting many apps (issue 7's figures).
#
# Usage: bench/many-apps.sh [--apps 50] [--requests 20000] [--rounds 3] [--wasmcorn PATH]
#
#   --apps       how many apps the manifest lists (the samples hello, echo, workload in turn,
#                each under its own name and host appNN.test)                    default 50
#   --requests   requests hey sends per latency measurement                     default 20000
#   --rounds     rounds of the three latency set-ups (order rotates each round)  default 3
#   --wasmcorn   the binary; default target/release/wasmcorn
#
# It measures, on 127.0.0.1:
#   1. start-up: `serve --apps M -w 1` with the compiled artefacts already cached, from exec to
#      the first answered request (and to the `Booting worker` line);
#   2. PSS/USS/RSS of that one shared-pool worker from /proc/PID/smaps_rollup: idle, after one
#      request to every app, and after hey's load on one of them;
#   3. the cost of routing, side by side: hey -c 1 (one request at a time, so the figure is
#      latency) against `hello` served (a) alone without a manifest, (b) as one of the N apps
#      on the shared pool (routed by Host), (c) in a dedicated pool of its own (routed, then the
#      connection handed over to the pool's worker).
# Every server is stopped by pid. Output: a Markdown summary on stdout, progress on stderr.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
APPS=50 REQUESTS=20000 ROUNDS=3 WASMCORN=$ROOT/target/release/wasmcorn
die() { echo "many-apps: error: $*" >&2; exit 1; }
say() { echo "many-apps: $*" >&2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --apps) APPS=${2:?}; shift 2 ;;
    --requests) REQUESTS=${2:?}; shift 2 ;;
    --rounds) ROUNDS=${2:?}; shift 2 ;;
    --wasmcorn) WASMCORN=$(realpath -m -- "${2:?}"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
for n in "$APPS" "$REQUESTS" "$ROUNDS"; do [[ $n =~ ^[1-9][0-9]*$ ]] || die "expected a positive integer, got '$n'"; done
[[ -x $WASMCORN ]] || die "no executable at $WASMCORN (cargo build --release -p wasmcorn, or --wasmcorn PATH)"
if ! command -v hey >/dev/null; then
  say "installing hey with apt-get"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hey; } >&2 || die "could not install hey"
fi
for t in curl timeout awk; do command -v "$t" >/dev/null || die "$t is required"; done

WORK=$(mktemp -d)
SERVER_PID=""
stop_server() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -INT "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}
trap 'stop_server; rm -rf "$WORK"' EXIT
export WASMCORN_CACHE_DIR=$WORK/cache

# The manifest: N apps cycling through the samples; app01 is hello. `dedicated` puts app01 in a
# pool of its own.
write_manifest() { # FILE DEDICATED
  local file=$1 dedicated=$2 samples=(hello echo workload) i name
  : >"$file"
  for ((i = 1; i <= APPS; i++)); do
    printf -v name 'app%02d' "$i"
    {
      echo "[[app]]"
      echo "name = \"$name\""
      echo "component = \"sample:${samples[$(((i - 1) % 3))]}\""
      echo "hosts = [\"$name.test\"]"
      if ((i % 3 == 0)); then # workload: a short CPU-bound request
        echo "env = { APP_NAME = \"$name\", IO_BOUND = \"0\", CPU_BOUND = \"100\", ITERATIONS = \"1000\" }"
      else
        echo "env = { APP_NAME = \"$name\" }"
      fi
      if [[ $i == 1 && $dedicated == 1 ]]; then echo "workers = 1"; fi
      echo
    } >>"$file"
  done
}
write_manifest "$WORK/shared.toml" 0
write_manifest "$WORK/dedicated.toml" 1

# start LOG ARGS...: starts the server, waits for its port; sets SERVER_PID and PORT.
start() {
  local log=$1; shift
  "$WASMCORN" serve --bind 127.0.0.1:0 --access-logfile /dev/null "$@" 2>"$log" &
  SERVER_PID=$!
  PORT=""
  for _ in $(seq 600); do
    PORT=$(sed -n 's/.*Listening at: http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
    [[ -n $PORT ]] && break
    sleep 0.01
  done
  [[ -n $PORT ]] || die "the server did not start: $(cat "$log")"
}
wait_answer() { # HOST
  for _ in $(seq 3000); do
    curl -fsS -o /dev/null -H "Host: $1" "http://127.0.0.1:$PORT/" 2>/dev/null && return 0
    sleep 0.002
  done
  die "no answer from $1"
}
worker_pids() { pgrep -P "$SERVER_PID" | sort -n; }
rollup() { # PID FIELD -> KiB
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/smaps_rollup"
}
memory() { # PID -> "PSS USS RSS" in KiB
  local pid=$1
  local pss uss rss
  pss=$(rollup "$pid" Pss)
  uss=$(($(rollup "$pid" Private_Clean) + $(rollup "$pid" Private_Dirty)))
  rss=$(rollup "$pid" Rss)
  echo "$pss $uss $rss"
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

say "filling the artefact cache ($APPS apps)"
"$WASMCORN" serve --apps "$WORK/shared.toml" --check-config >&2
"$WASMCORN" serve --apps "$WORK/dedicated.toml" --check-config >&2
"$WASMCORN" serve sample:hello --check-config >&2

# 1 and 2: start-up and memory.
echo "## $APPS apps, one shared-pool worker ($(date -u '+%Y-%m-%d %H:%M UTC'))"
echo
echo "| run | start-up to first answer (ms) | worker PSS idle (KiB) | after one request per app | after $REQUESTS requests | USS after load | RSS after load | arbiter PSS |"
echo "|---|---|---|---|---|---|---|---|"
for run in 1 2 3; do
  began=$(now_ms)
  start "$WORK/startup.log" --apps "$WORK/shared.toml" --workers 1
  wait_answer app01.test
  answered=$(now_ms)
  worker=$(worker_pids | head -1)
  sleep 1
  read -r idle _ _ < <(memory "$worker")
  for ((i = 1; i <= APPS; i++)); do
    printf -v name 'app%02d' "$i"
    curl -fsS -o /dev/null -H "Host: $name.test" "http://127.0.0.1:$PORT/" || die "app $name did not answer"
  done
  read -r touched _ _ < <(memory "$worker")
  hey -n "$REQUESTS" -c 8 -disable-keepalive -host app01.test "http://127.0.0.1:$PORT/" >/dev/null
  read -r loaded loaded_uss loaded_rss < <(memory "$worker")
  read -r arbiter _ _ < <(memory "$SERVER_PID")
  stop_server
  echo "| $run | $((answered - began)) | $idle | $touched | $loaded | $loaded_uss | $loaded_rss | $arbiter |"
done
echo

# 3: routing latency, the three set-ups side by side, order rotating each round.
setups=(alone shared dedicated)
declare -A latency_sum throughput_sum
for setup in "${setups[@]}"; do latency_sum[$setup]=0; throughput_sum[$setup]=0; done
for ((round = 0; round < ROUNDS; round++)); do
  for ((k = 0; k < 3; k++)); do
    setup=${setups[$(((round + k) % 3))]}
    case $setup in
      alone) start "$WORK/$setup.log" sample:hello --workers 1 ;;
      shared) start "$WORK/$setup.log" --apps "$WORK/shared.toml" --workers 1 ;;
      dedicated) start "$WORK/$setup.log" --apps "$WORK/dedicated.toml" --workers 1 ;;
    esac
    wait_answer app01.test
    hey -n 2000 -c 1 -disable-keepalive -host app01.test "http://127.0.0.1:$PORT/" >/dev/null
    out=$(hey -n "$REQUESTS" -c 1 -disable-keepalive -host app01.test "http://127.0.0.1:$PORT/")
    stop_server
    [[ $(echo "$out" | awk '/\[200\]/ { print $2 }') == "$REQUESTS" ]] || die "$setup: not every request answered 200: $out"
    rps=$(echo "$out" | awk '/Requests\/sec:/ { print $2 }')
    # One request at a time: the mean time per request is 1/throughput (hey's own average has 100 µs steps).
    average=$(awk -v r="$rps" 'BEGIN { printf "%.1f", 1000000 / r }')
    say "round $((round + 1)) $setup: average ${average} us, $rps req/s"
    latency_sum[$setup]=$(awk -v a="${latency_sum[$setup]}" -v b="$average" 'BEGIN { print a + b }')
    throughput_sum[$setup]=$(awk -v a="${throughput_sum[$setup]}" -v b="$rps" 'BEGIN { print a + b }')
  done
done
echo "## Routing latency: hey -n $REQUESTS -c 1 -disable-keepalive (a new connection per request), mean of $ROUNDS rounds"
echo
echo "| hello served | mean time per request (µs) | extra over alone (µs) | req/s |"
echo "|---|---|---|---|"
base=$(awk -v s="${latency_sum[alone]}" -v n="$ROUNDS" 'BEGIN { print s / n }')
for setup in "${setups[@]}"; do
  mean=$(awk -v s="${latency_sum[$setup]}" -v n="$ROUNDS" 'BEGIN { printf "%.0f", s / n }')
  extra=$(awk -v m="$mean" -v b="$base" 'BEGIN { printf "%+.0f", m - b }')
  rps=$(awk -v s="${throughput_sum[$setup]}" -v n="$ROUNDS" 'BEGIN { printf "%.0f", s / n }')
  case $setup in
    alone) what="alone (\`serve sample:hello\`, no manifest)" ;;
    shared) what="one of $APPS apps on the shared pool (routed by Host)" ;;
    dedicated) what="one of $APPS apps, in a pool of its own (routed, then handed over)" ;;
  esac
  echo "| $what | $mean | $extra | $rps |"
done
