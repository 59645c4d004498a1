#!/usr/bin/env bash
# wasi-http-compare.sh: `wasmtime serve` 48.0.8 vs wasmcorn serving the same standard wasi:http hello component
# (guest-apps/proxy-hello), in the same run, and wasmcorn serving the wasmcorn:app hello (sample:hello) beside
# them, so that a proxy-world request can be compared with a wasmcorn:app one.
#
# Usage: bench/wasi-http-compare.sh [--workers 2] [--rounds 2] [--duration 10] [--hey-requests 20000]
#                                   [--wasmcorn PATH] [--wasmtime PATH]
#
#   --workers       wasmcorn workers                                        default 2
#   --rounds        rounds (the servers' order alternates between rounds)   default 2
#   --duration      seconds of wrk load per measurement                     default 10
#   --hey-requests  requests hey sends per measurement                      default 20000
#   --wasmcorn      default target/release/wasmcorn, else target/debug/wasmcorn (say which in a report)
#   --wasmtime      default $WASMCORN_BENCH_DIR/wasmtime-48.0.8/bin/wasmtime, installed there when missing with
#                   `cargo install wasmtime-cli --version 48.0.8 --locked --root DIR` (many minutes)
#   --no-wasmtime   measure the two wasmcorn servers only (the ratios to wasmtime serve are then NA)
#
# Each measurement: start the server on 127.0.0.1, wait until it answers `Hello, World!`, 1 s of wrk warm-up, then
# `wrk -t2 -c8 --latency -H 'Connection: close'` and `hey -c 8 -disable-keepalive` (a new connection per request:
# the way a load balancer without keep-alive to its backends sends them), then `wrk -t2 -c8` without that header
# (keep-alive: both servers keep the connection), then PSS (KiB, /proc/PID/smaps_rollup, after the load): of the
# one `wasmtime serve` process, of each wasmcorn worker (mean) and of its arbiter. `wasmtime serve` runs with
# `-S cli` (the component, built with Rust's std, imports wasi:cli) and its own defaults otherwise.
# Output: $WASMCORN_BENCH_DIR/wasi-http-compare.csv (default dir target/bench), logs in $WASMCORN_BENCH_DIR/logs/,
# a Markdown summary with the ratios on stdout (progress on stderr).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORKERS=2 ROUNDS=2 DURATION=10 HEY_REQUESTS=20000 WASMCORN="" WASMTIME="" NO_WASMTIME=""
die() { echo "wasi-http-compare: error: $*" >&2; exit 1; }
say() { echo "wasi-http-compare: $*" >&2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --workers) WORKERS=${2:?}; shift 2 ;;
    --rounds) ROUNDS=${2:?}; shift 2 ;;
    --duration) DURATION=${2:?}; shift 2 ;;
    --hey-requests) HEY_REQUESTS=${2:?}; shift 2 ;;
    --wasmcorn) WASMCORN=$(realpath -m -- "${2:?}"); shift 2 ;;
    --wasmtime) WASMTIME=$(realpath -m -- "${2:?}"); shift 2 ;;
    --no-wasmtime) NO_WASMTIME=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
for n in "$WORKERS" "$ROUNDS" "$DURATION" "$HEY_REQUESTS"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "expected a positive integer, got '$n'"
done
cd "$ROOT"
BENCH_DIR=$(realpath -m -- "${WASMCORN_BENCH_DIR:-target/bench}")
CSV=$BENCH_DIR/wasi-http-compare.csv LOGS=$BENCH_DIR/logs
mkdir -p "$LOGS"
for t in wrk hey curl pgrep timeout python3 cargo; do command -v "$t" >/dev/null || die "$t is required"; done
if [[ -z $WASMCORN ]]; then
  WASMCORN=$ROOT/target/release/wasmcorn
  [[ -x $WASMCORN ]] || WASMCORN=$ROOT/target/debug/wasmcorn
fi
[[ -x $WASMCORN ]] || die "no wasmcorn at $WASMCORN (cargo build --release, or --wasmcorn PATH)"
COMPONENT=$(ls "$ROOT"/target/guest-apps/wasm32-wasip2/release/proxy_hello.wasm 2>/dev/null) ||
  die "no proxy_hello.wasm: build wasmcorn first (host/build.rs builds guest-apps/)"
if [[ -n $NO_WASMTIME ]]; then
  say "SKIPPING wasmtime serve (--no-wasmtime)"
elif [[ -z $WASMTIME ]]; then
  WASMTIME=$BENCH_DIR/wasmtime-48.0.8/bin/wasmtime
  if [[ ! -x $WASMTIME ]]; then
    say "installing wasmtime-cli 48.0.8 into $BENCH_DIR/wasmtime-48.0.8 (many minutes)"
    nice -n 19 cargo install wasmtime-cli --version 48.0.8 --locked --root "$BENCH_DIR/wasmtime-48.0.8" >&2 ||
      die "cargo install wasmtime-cli failed"
  fi
fi
[[ -n $NO_WASMTIME ]] || "$WASMTIME" --version | grep -q '^wasmtime 48\.0\.8' || die "$WASMTIME is not wasmtime 48.0.8"

# --- process bookkeeping: everything started is stopped by pid on exit ------------------------------------------
MASTER="" LOADPID=""
alive() { kill -0 "$1" 2>/dev/null; }
stop_server() {
  [[ -n $MASTER ]] || return 0
  local i
  kill -TERM "$MASTER" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do alive "$MASTER" || break; sleep 0.1; done
  alive "$MASTER" && { say "pid $MASTER still alive after 10 s: SIGKILL"; kill -KILL "$MASTER" 2>/dev/null || true; }
  wait "$MASTER" 2>/dev/null || true
  MASTER=""
}
load() { # output-file timeout-seconds command...
  local out=$1 t=$2; shift 2
  timeout "$t" "$@" >"$out" 2>&1 & LOADPID=$!
  wait "$LOADPID" || { LOADPID=""; die "$1 failed or timed out (output: $out)"; }
  LOADPID=""
}
trap '[[ -z $LOADPID ]] || kill -TERM "$LOADPID" 2>/dev/null || true; stop_server' EXIT
trap 'exit 130' INT; trap 'exit 143' TERM
pss() { # mean Pss (KiB) over the given pids
  local files=() p; for p in "$@"; do [[ -r /proc/$p/smaps_rollup ]] && files+=("/proc/$p/smaps_rollup"); done
  [[ ${#files[@]} -gt 0 ]] || { echo NA; return; }
  awk '/^Pss:/{s+=$2} FNR==1{n++} END{printf "%d\n", s/n}' "${files[@]}"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_server() { # name log -> MASTER, PORT
  local name=$1 log=$2 i
  PORT=$(free_port)
  case $name in
    wasmtime-serve) "$WASMTIME" serve -S cli --addr "127.0.0.1:$PORT" "$COMPONENT" >"$log" 2>&1 & ;;
    wasmcorn-proxy) "$WASMCORN" serve "$COMPONENT" --bind "127.0.0.1:$PORT" --workers "$WORKERS" \
                      --access-logfile /dev/null >"$log" 2>&1 & ;;
    wasmcorn-app)   "$WASMCORN" serve sample:hello --bind "127.0.0.1:$PORT" --workers "$WORKERS" \
                      --access-logfile /dev/null >"$log" 2>&1 & ;;
  esac
  MASTER=$!
  for ((i = 0; i < 600; i++)); do  # up to 60 s: the first start compiles the component
    alive "$MASTER" || { cat "$log" >&2; die "$name exited during start-up (log: $log)"; }
    [[ $(curl -s --max-time 2 "http://127.0.0.1:$PORT/" 2>/dev/null) == "Hello, World!" ]] && return 0
    sleep 0.1
  done
  die "$name did not answer Hello, World! within 60 s (log: $log)"
}

echo "round,server,workers,wrk_rps,wrk_p99_ms,hey_rps,hey_p99_ms,pss_kib_per_process,pss_kib_arbiter,wrk_keepalive_rps,wrk_keepalive_p99_ms" >"$CSV"
# wrk's 99th percentile latency, in ms
p99_ms() {
  awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}' "$1"
}
measure() { # round name
  local round=$1 name=$2 log=$LOGS/$2-$1.log wrk_out=$LOGS/$2-$1.wrk hey_out=$LOGS/$2-$1.hey
  say "round $round: $name"
  start_server "$name" "$log"
  load /dev/null 30 wrk -t2 -c8 -d1 -H 'Connection: close' "http://127.0.0.1:$PORT/"
  load "$wrk_out" $((DURATION + 60)) wrk -t2 -c8 -d"$DURATION" --latency -H 'Connection: close' "http://127.0.0.1:$PORT/"
  load "$hey_out" 600 hey -n "$HEY_REQUESTS" -c 8 -disable-keepalive "http://127.0.0.1:$PORT/"
  load "$wrk_out.ka" $((DURATION + 60)) wrk -t2 -c8 -d"$DURATION" --latency "http://127.0.0.1:$PORT/"
  local wrk_rps wrk_p99 hey_rps hey_p99 per arbiter="NA" workers=1 ka_rps ka_p99
  wrk_rps=$(awk '/^Requests\/sec:/{print $2}' "$wrk_out")
  wrk_p99=$(p99_ms "$wrk_out")
  ka_rps=$(awk '/^Requests\/sec:/{print $2}' "$wrk_out.ka")
  ka_p99=$(p99_ms "$wrk_out.ka")
  hey_rps=$(awk '/Requests\/sec:/{print $2}' "$hey_out")
  hey_p99=$(awk '/ 99% in /{print $3 * 1000}' "$hey_out")
  if [[ $name == wasmtime-serve ]]; then
    per=$(pss "$MASTER")
  else
    workers=$WORKERS
    per=$(pss $(pgrep -P "$MASTER" | xargs echo))
    arbiter=$(pss "$MASTER")
  fi
  grep -q "Non-2xx or 3xx responses\|Socket errors" "$wrk_out" && say "$name: wrk saw errors: $(grep -E 'Non-2xx|Socket errors' "$wrk_out")"
  echo "$round,$name,$workers,$wrk_rps,$wrk_p99,$hey_rps,$hey_p99,$per,$arbiter,$ka_rps,$ka_p99" >>"$CSV"
  stop_server
}
SERVERS=(wasmtime-serve wasmcorn-proxy wasmcorn-app)
[[ -z $NO_WASMTIME ]] || SERVERS=(wasmcorn-proxy wasmcorn-app)
for ((round = 1; round <= ROUNDS; round++)); do
  order=("${SERVERS[@]}")
  if ((round % 2 == 0)); then order=(); for ((i = ${#SERVERS[@]} - 1; i >= 0; i--)); do order+=("${SERVERS[i]}"); done; fi
  for name in "${order[@]}"; do measure "$round" "$name"; done
done

# --- summary: means over the rounds, and the ratios the issue asks for ------------------------------------------
echo "## wasi:http hello: wasmtime serve 48.0.8 vs wasmcorn ($WORKERS workers, $(basename "$(dirname "$WASMCORN")") build)"
echo
awk -F, 'NR > 1 { n[$2]++; wr[$2]+=$4; wp[$2]+=$5; hr[$2]+=$6; hp[$2]+=$7; ps[$2]+=$8; ar[$2]+=$9; kr[$2]+=$10; kp[$2]+=$11 }
  END {
    print "| server | wrk req/s | wrk p99 ms | hey req/s | hey p99 ms | keep-alive wrk req/s | keep-alive p99 ms | PSS KiB per process | arbiter PSS KiB |"
    print "|---|---|---|---|---|---|---|---|---|"
    split("wasmtime-serve wasmcorn-proxy wasmcorn-app", order, " ")
    for (i = 1; i <= 3; i++) { s = order[i]; if (!n[s]) { printf "| %s | not measured |\n", s; continue }
      printf "| %s | %.0f | %.2f | %.0f | %.2f | %.0f | %.2f | %.0f | %s |\n", s, wr[s]/n[s], wp[s]/n[s], hr[s]/n[s], hp[s]/n[s], kr[s]/n[s], kp[s]/n[s], ps[s]/n[s], (s == "wasmtime-serve" ? "-" : sprintf("%.0f", ar[s]/n[s])) }
    print ""
    if (n["wasmtime-serve"]) printf "- wasmcorn / wasmtime serve req/s, a connection per request: wrk %.2fx, hey %.2fx (target >= 1.5x)\n", wr["wasmcorn-proxy"]/wr["wasmtime-serve"], hr["wasmcorn-proxy"]/hr["wasmtime-serve"]
    printf "- proxy-world / wasmcorn:app time per request (end to end, inverse req/s): wrk %.2fx, hey %.2fx (target <= 1.5x)\n", wr["wasmcorn-app"]/wr["wasmcorn-proxy"], hr["wasmcorn-app"]/hr["wasmcorn-proxy"]
    if (n["wasmtime-serve"]) printf "- wasmcorn / wasmtime serve req/s with keep-alive: wrk %.2fx\n", kr["wasmcorn-proxy"]/kr["wasmtime-serve"]
    if (n["wasmtime-serve"]) printf "- PSS of one wasmcorn worker / the wasmtime serve process: %.2f (target <= 0.25)\n", ps["wasmcorn-proxy"]/ps["wasmtime-serve"]
  }' "$CSV"
