#!/usr/bin/env bash
# soak.sh: a long mixed load on one server, to show that its workers neither grow nor leak (issue 12).
#
# Usage: bench/soak.sh [--requests 1000000] [--workers 2] [--connections 4] [--wasmcorn PATH]
#
#   --requests     requests in all: 10 % in phase 1, the other 90 % in phase 2      default 1000000
#   --workers      shared-pool workers                                              default 2
#   --connections  wrk's connections, one per wrk thread, one request in flight each default 4
#   --wasmcorn     the binary to measure; default target/release/wasmcorn when it exists, else the dev
#                  build (`cargo build -p wasmcorn`, then target/debug/wasmcorn)
#
# One `wasmcorn serve --apps` on 127.0.0.1 hosts three apps on its shared pool: hello (host hello.test),
# echo (host echo.test, prefix /echo) and the misbehave test guest (host misbehave.test, max_memory 4 MiB,
# built by the host build at target/guest-apps/wasm32-wasip2/release/misbehave.wasm). wrk (installed with
# apt-get if missing) runs bench/soak.lua: every connection sends `Connection: close` requests from a fixed
# cycle of 40 (hello GET 14; echo GET 2, POST 100 B 4, 4 KiB 4, 64 KiB 2; misbehave /trap, /panic,
# /bad-header, /no-start, /count 2 each, /big?bytes=10000 3, /alloc 1), tallies each response by route and
# status, checks the bodies of hello, echo (its body_length), /count ("1": a fresh instance per request) and
# /big, and stops at exactly its share of the phase's requests. After start-up, after 10 % and after 100 % of
# the requests, with no request in flight, it reads VmRSS (/proc/PID/status) and the open descriptors
# (/proc/PID/fd) of the arbiter and of every worker, then prints a Markdown report and the verdict:
#   - every response had its route's expected status (200, or 500 for the failing routes) and body;
#   - wrk saw no socket error (connect, read, write, timeout);
#   - the workers are the processes that booted first (none was replaced);
#   - RSS at 100 % within 5 % of RSS at 10 %, and the same number of descriptors, for every process.
# Exit status 0 when all hold, 1 otherwise (with a line saying what failed). Time: the requests divided by
# the throughput; with 2 workers of the dev build on this busy 2-core machine about 7,000 req/s, so
# 1,000,000 takes about 2.5 minutes. Each phase is bounded (wrk's --duration, 60 s + 4 ms per request) and
# stops by itself at its count. The server's error log (about 150 bytes per request here, mostly the
# misbehave routes' backtraces) goes to a temporary folder, removed at the end with the artefact cache.
# Every process is stopped by pid. Output: Markdown on stdout, progress on stderr.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REQUESTS=1000000 WORKERS=2 CONNECTIONS=4 WASMCORN=""
die() { echo "soak: error: $*" >&2; exit 1; }
say() { echo "soak: $*" >&2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --requests) REQUESTS=${2:?}; shift 2 ;;
    --workers) WORKERS=${2:?}; shift 2 ;;
    --connections) CONNECTIONS=${2:?}; shift 2 ;;
    --wasmcorn) WASMCORN=$(realpath -m -- "${2:?}"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
for n in "$REQUESTS" "$WORKERS" "$CONNECTIONS"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "expected a positive integer, got '$n'"
done
FIRST=$((REQUESTS / 10))
((FIRST >= CONNECTIONS)) || die "--requests must be at least 10 times --connections"
SECOND=$((REQUESTS - FIRST))

# --- tools and the binary ---------------------------------------------------------------
if ! command -v wrk >/dev/null; then
  say "installing wrk with apt-get"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; } >&2 || die "could not install wrk"
fi
for t in curl pgrep timeout awk; do command -v "$t" >/dev/null || die "$t is required"; done
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
MISBEHAVE=$TARGET/guest-apps/wasm32-wasip2/release/misbehave.wasm
if [[ -n $WASMCORN ]]; then
  BUILD="given with --wasmcorn"
elif [[ -x $TARGET/release/wasmcorn ]]; then
  WASMCORN=$TARGET/release/wasmcorn BUILD="the release build found there"
else
  say "building the dev profile: cargo build -p wasmcorn"
  (cd "$ROOT" && cargo build -q -p wasmcorn) >&2 || die "cargo build -p wasmcorn failed"
  WASMCORN=$TARGET/debug/wasmcorn BUILD="the dev build, cargo build -p wasmcorn"
fi
[[ -x $WASMCORN ]] || die "no executable at $WASMCORN"
[[ -f $MISBEHAVE ]] || die "no $MISBEHAVE (the host build makes it: cargo build -p wasmcorn)"

# --- process bookkeeping: everything started is stopped by pid on exit ------------------
WORK=$(mktemp -d)
MASTER="" WORKER_PIDS=() LOADPID=""
alive() { kill -0 "$1" 2>/dev/null; }
# shellcheck disable=SC2317 # wait_gone and stop_server are called from the EXIT trap only
wait_gone() { # PID TENTHS: 0 once PID is gone
  local i; for ((i = 0; i < $2; i++)); do alive "$1" || return 0; sleep 0.1; done; ! alive "$1"
}
# shellcheck disable=SC2317
stop_server() {
  [[ -n $MASTER ]] || return 0
  local p
  kill -TERM "$MASTER" 2>/dev/null || true
  if ! wait_gone "$MASTER" 100; then say "arbiter $MASTER still alive after 10 s: SIGKILL"; kill -KILL "$MASTER" 2>/dev/null || true; fi
  wait "$MASTER" 2>/dev/null || true
  for p in "${WORKER_PIDS[@]}"; do
    if ! wait_gone "$p" 20; then say "worker $p survived its arbiter: SIGKILL"; kill -KILL "$p" 2>/dev/null || true; fi
  done
  MASTER="" WORKER_PIDS=()
}
trap '[[ -z $LOADPID ]] || kill -TERM "$LOADPID" 2>/dev/null || true; stop_server; rm -rf "$WORK"' EXIT
trap 'exit 130' INT; trap 'exit 143' TERM
export WASMCORN_CACHE_DIR=$WORK/cache

# --- the manifest and the server --------------------------------------------------------
cat >"$WORK/apps.toml" <<EOF
[[app]]
name = "hello"
component = "sample:hello"
hosts = ["hello.test"]

[[app]]
name = "echo"
component = "sample:echo"
hosts = ["echo.test"]
prefix = "/echo"

[[app]]
name = "misbehave"
component = "$MISBEHAVE"
hosts = ["misbehave.test"]
max_memory = 4
EOF
LOG=$WORK/server.log
say "compiling the apps into $WASMCORN_CACHE_DIR"
"$WASMCORN" serve --apps "$WORK/apps.toml" --check-config >&2 || die "--check-config failed"
: >"$LOG"
"$WASMCORN" serve --apps "$WORK/apps.toml" --bind 127.0.0.1:0 --workers "$WORKERS" \
  --access-logfile /dev/null >"$LOG" 2>&1 &
MASTER=$! PORT=""
booted() { # the pids announced as booted that are children of the arbiter
  local kids; kids=$(pgrep -P "$MASTER" || true)
  sed -n 's/.*Booting worker with pid: \([0-9][0-9]*\).*/\1/p' "$LOG" | grep -Fxf <(echo "$kids") | sort -n | xargs echo || true
}
pids=()
for ((i = 0; i < 300; i++)); do # up to 30 s for the listening line and every worker
  alive "$MASTER" || { cat "$LOG" >&2; die "the server exited during start-up"; }
  [[ -n $PORT ]] || PORT=$(sed -n 's|.*Listening at: http://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$LOG" | head -n1)
  read -ra pids <<<"$(booted)"
  [[ -n $PORT && ${#pids[@]} -ge $WORKERS ]] && break
  sleep 0.1
done
WORKER_PIDS=("${pids[@]}")
[[ -n $PORT && ${#pids[@]} -eq $WORKERS ]] || die "no port, or ${#pids[@]} of $WORKERS workers after 30 s (log: $(tail -5 "$LOG"))"
BASE=http://127.0.0.1:$PORT
for host in hello.test echo.test; do
  curl -fsS -o /dev/null --max-time 10 -H "Host: $host" "$BASE/echo/" || die "$host does not answer"
done
say "server: arbiter $MASTER, workers ${WORKER_PIDS[*]}, port $PORT, binary $WASMCORN ($BUILD)"

# --- measuring ----------------------------------------------------------------------------
declare -A RSS FDS
FAILURES=()
measure() { # LABEL: RSS[LABEL,pid] in KiB and FDS[LABEL,pid] for the arbiter and every worker
  local p
  sleep 1 # wrk has exited; let the workers close the last connection
  for p in "$MASTER" "${WORKER_PIDS[@]}"; do
    RSS[$1,$p]=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$p/status" 2>/dev/null || true)
    FDS[$1,$p]=$(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l || true)
    if [[ -z ${RSS[$1,$p]} ]]; then
      RSS[$1,$p]=gone FDS[$1,$p]=gone
      FAILURES+=("process $p is gone at $1")
    fi
  done
}
# A request to each app first, so that the start-up figures are those of workers that have served.
for url in hello.test/ echo.test/echo/warm misbehave.test/trap misbehave.test/count; do
  curl -sS -o /dev/null --max-time 10 -H "Host: ${url%%/*}" "$BASE/${url#*/}" || true
done
measure start

# --- the load -------------------------------------------------------------------------------
declare -A TALLY
ELAPSED=() RATE=()
run_phase() { # NAME REQUESTS
  local name=$1 count=$2 bound out marks began ended line fields answered
  bound=$((60 + count * 4 / 1000))
  out=$WORK/wrk-$name.txt marks=$WORK/marks-$name
  mkdir -p "$marks"
  say "phase $name: $count requests (bounded at ${bound} s)"
  began=$(date +%s%N)
  SOAK_REQUESTS=$count SOAK_THREADS=$CONNECTIONS SOAK_MARKS=$marks \
    timeout $((bound + 60)) wrk -t "$CONNECTIONS" -c "$CONNECTIONS" -d "${bound}s" --timeout 30s \
    -s "$ROOT/bench/soak.lua" "$BASE/" >"$out" 2>&1 &
  LOADPID=$!
  local tick=0
  while alive "$LOADPID"; do
    if (($(find "$marks" -mindepth 1 | wc -l) >= CONNECTIONS)); then
      kill -INT "$LOADPID" 2>/dev/null || true # wrk's main thread sleeps through --duration otherwise
      break
    fi
    sleep 0.1
    if ((++tick % 600 == 0)); then say "  phase $name: $((tick / 10)) s"; fi
  done
  wait "$LOADPID" || { LOADPID=""; cat "$out" >&2; die "wrk failed in phase $name"; }
  LOADPID=""
  ended=$(date +%s%N)
  ELAPSED+=("$(awk -v ns="$((ended - began))" 'BEGIN { printf "%.1f", ns / 1e9 }')")
  RATE+=("$(awk -v n="$count" -v ns="$((ended - began))" 'BEGIN { printf "%.0f", n / (ns / 1e9) }')")
  answered=0
  while IFS=$'\t' read -ra fields; do
    case ${fields[0]} in
      soak-route) line="${fields[1]}"$'\t'"${fields[2]}"$'\t'"${fields[3]}"
        TALLY[$line]=$((${TALLY[$line]:-0} + fields[4])) ;;
      soak-answered) answered=${fields[1]} ;;
      soak-errors)
        if [[ ${fields[*]:1} != "0 0 0 0" ]]; then
          FAILURES+=("phase $name: wrk socket errors: connect ${fields[1]}, read ${fields[2]}, write ${fields[3]}, timeout ${fields[4]}")
        fi ;;
    esac
  done <"$out"
  grep -q '^soak-errors' "$out" || { cat "$out" >&2; die "phase $name: no summary from wrk"; }
  ((answered == count)) || FAILURES+=("phase $name: $answered of $count requests answered within ${bound} s")
  say "  phase $name: $answered answered in ${ELAPSED[-1]} s (${RATE[-1]} req/s)"
}
run_phase 10% "$FIRST"
measure 10%
run_phase 100% "$SECOND"
measure 100%

# --- checks and the report ------------------------------------------------------------------
read -ra now <<<"$(booted)"
if [[ "${now[*]}" != "${WORKER_PIDS[*]}" ]] || (($(grep -c 'Booting worker with pid' "$LOG") != WORKERS)); then
  FAILURES+=("workers were replaced: booted first ${WORKER_PIDS[*]}, now ${now[*]:-none}, $(grep -c 'Booting worker with pid' "$LOG") boots logged")
fi
echo "## Soak: $REQUESTS requests, $WORKERS workers, $CONNECTIONS connections ($(date -u '+%Y-%m-%d %H:%M UTC'))"
echo
echo "Binary: \`$WASMCORN\` ($BUILD, $("$WASMCORN" --version 2>/dev/null || echo unknown version))."
echo "Phase 10 %: $FIRST requests in ${ELAPSED[0]} s (${RATE[0]} req/s); phase 100 %: $SECOND more in ${ELAPSED[1]} s (${RATE[1]} req/s)."
echo
echo "| route | expected | responses | statuses seen |"
echo "|---|---|---:|---|"
declare -A ROUTE_TOTAL ROUTE_SEEN ROUTE_EXPECTED
for key in "${!TALLY[@]}"; do
  IFS=$'\t' read -r route expected got <<<"$key"
  ROUTE_EXPECTED[$route]=$expected
  ROUTE_TOTAL[$route]=$((${ROUTE_TOTAL[$route]:-0} + TALLY[$key]))
  ROUTE_SEEN[$route]+="${ROUTE_SEEN[$route]:+, }$got × ${TALLY[$key]}"
  [[ $got == "$expected" ]] || FAILURES+=("$route: ${TALLY[$key]} responses were $got, expected $expected")
done
while read -r route; do
  [[ -n $route ]] || continue
  echo "| $route | ${ROUTE_EXPECTED[$route]} | ${ROUTE_TOTAL[$route]} | ${ROUTE_SEEN[$route]} |"
done < <(printf '%s\n' "${!ROUTE_TOTAL[@]}" | sort)
echo
echo "| process | pid | RSS after start (KiB) | at 10 % | at 100 % | change 10 % → 100 % | fds after start | at 10 % | at 100 % |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for p in "$MASTER" "${WORKER_PIDS[@]}"; do
  what=worker; [[ $p == "$MASTER" ]] && what=arbiter
  if [[ ${RSS[10%,$p]} == gone || ${RSS[100%,$p]} == gone ]]; then
    echo "| $what | $p | ${RSS[start,$p]} | ${RSS[10%,$p]} | ${RSS[100%,$p]} | - | ${FDS[start,$p]} | ${FDS[10%,$p]} | ${FDS[100%,$p]} |"
    continue
  fi
  change=$(awk -v a="${RSS[10%,$p]}" -v b="${RSS[100%,$p]}" 'BEGIN { printf "%+.1f %%", (b - a) * 100 / a }')
  echo "| $what | $p | ${RSS[start,$p]} | ${RSS[10%,$p]} | ${RSS[100%,$p]} | $change | ${FDS[start,$p]} | ${FDS[10%,$p]} | ${FDS[100%,$p]} |"
  if ! awk -v a="${RSS[10%,$p]}" -v b="${RSS[100%,$p]}" 'BEGIN { exit !((b - a) * 100 <= 5 * a && (a - b) * 100 <= 5 * a) }'; then
    FAILURES+=("$what $p: RSS went from ${RSS[10%,$p]} KiB to ${RSS[100%,$p]} KiB ($change), more than 5 %")
  fi
  [[ ${FDS[10%,$p]} == "${FDS[100%,$p]}" ]] || FAILURES+=("$what $p: open descriptors went from ${FDS[10%,$p]} to ${FDS[100%,$p]}")
done
echo
say "server log: $(wc -c <"$LOG") bytes"
if ((${#FAILURES[@]} == 0)); then
  echo "Verdict: PASS. Every response had its expected status, no socket error, no worker replaced, RSS within 5 % and descriptors unchanged from 10 % to 100 %."
  exit 0
fi
echo "Verdict: FAIL."
for f in "${FAILURES[@]}"; do echo "- $f"; done
say "FAILED: ${#FAILURES[@]} problem(s), see the report"
exit 1
