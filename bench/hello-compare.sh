#!/usr/bin/env bash
# hello-compare.sh: wasmcorn vs gunicorn (sync workers) serving a "Hello, World!" app.
#
# Usage: bench/hello-compare.sh [--workers "1 2"] [--rounds 2] [--duration 10]
#                               [--hey-requests 20000] [--wasmcorn PATH]
#
#   --workers       worker counts to try (space separated)           default "1 2"
#   --rounds        rounds per worker count                           default 2
#   --duration      seconds of wrk load per measurement               default 10
#   --hey-requests  requests hey sends per measurement                default 20000
#   --wasmcorn      wasmcorn binary; default target/release/wasmcorn, else target/debug/wasmcorn
#   --with-nginx    also measure Debian's nginx answering `return 204` with the same worker count
#   --with-metrics  also measure wasmcorn with `--metrics-bind 127.0.0.1:0` (server `wasmcorn-metrics`), its
#                   /metrics scraped once a second during every load run, and print the cost against plain wasmcorn
#   --with-reuse N  also measure wasmcorn with `--instance-reuse N` (server `wasmcorn-reuse`): an instance serves up
#                   to N requests instead of one, so this shows what the fresh instance costs on each path
#   --no-gunicorn   leave Gunicorn out (for an A/B of wasmcorn alone, such as --with-metrics over many rounds)
#
# For each worker count and round it runs both servers one after the other (order
# alternating between rounds, so CPU drift hits both): start on 127.0.0.1, wait until it
# answers, 1 s wrk warm-up, read per-worker PSS/USS/RSS (idle) from /proc/PID/smaps_rollup,
# run `wrk -t2 -c8 -H 'Connection: close'` and `hey -c 8 -disable-keepalive` (a connection per
# request), then `wrk -t2 -c8` without that header (keep-alive: gunicorn's sync workers close every
# connection anyway; nginx and wasmcorn keep it; halfway through, `ss` records how wrk's 8 connections are spread
# over the server's processes, e.g. `5+3`), read memory again (loaded), stop the server by pid.
# gunicorn: bench/gunicorn/hello.py; wasmcorn: `serve sample:hello`.  A missing wasmcorn binary is skipped with a
# message.
#
# Needs: python3 (venv), curl, pgrep, ss (iproute2; without it the spread reads NA); installs wrk/hey with
# apt-get if missing and a venv with gunicorn + psycopg2-binary at $WASMCORN_BENCH_DIR/venv (created once, reused).
# Output: $WASMCORN_BENCH_DIR/hello-compare.csv (default dir target/bench, memory columns
# are the mean per worker, KiB), server logs in $WASMCORN_BENCH_DIR/logs/, and a Markdown
# summary on stdout (progress goes to stderr). When host/hot-symbols.txt was not written for the wasmcorn binary
# (a debug build, or a list gone stale: checked with nm), a warning on stderr and a line in the summary say that
# its PSS is not a laid-out release build's.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORKERS="1 2" ROUNDS=2 DURATION=10 HEY_REQUESTS=20000 WASMCORN=""
WITH_NGINX="" WITH_METRICS="" WITH_REUSE="" NO_GUNICORN=""
die() { echo "hello-compare: error: $*" >&2; exit 1; }
say() { echo "hello-compare: $*" >&2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --workers) WORKERS=${2:?}; shift 2 ;;
    --rounds) ROUNDS=${2:?}; shift 2 ;;
    --duration) DURATION=${2:?}; shift 2 ;;
    --hey-requests) HEY_REQUESTS=${2:?}; shift 2 ;;
    --wasmcorn) WASMCORN=$(realpath -m -- "${2:?}"); shift 2 ;;
    --with-nginx) WITH_NGINX=1; shift ;;
    --with-metrics) WITH_METRICS=1; shift ;;
    --with-reuse) WITH_REUSE=${2:?}; shift 2 ;;
    --no-gunicorn) NO_GUNICORN=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
for n in $WORKERS "$ROUNDS" "$DURATION" "$HEY_REQUESTS" ${WITH_REUSE:+"$WITH_REUSE"}; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "expected a positive integer, got '$n'"
done
cd "$ROOT"
BENCH_DIR=$(realpath -m -- "${WASMCORN_BENCH_DIR:-target/bench}")
VENV=$BENCH_DIR/venv CSV=$BENCH_DIR/hello-compare.csv LOGS=$BENCH_DIR/logs
mkdir -p "$LOGS"

# --- tools ------------------------------------------------------------------------------
missing=()
for t in wrk hey; do command -v "$t" >/dev/null || missing+=("$t"); done
[[ -z $WITH_NGINX ]] || command -v nginx >/dev/null || missing+=(nginx)
if [[ ${#missing[@]} -gt 0 ]]; then
  say "installing ${missing[*]} with apt-get"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >&2; then
    die "could not install ${missing[*]}"
  fi
fi
for t in curl pgrep timeout python3; do command -v "$t" >/dev/null || die "$t is required"; done
if [[ -z $NO_GUNICORN && ! -x $VENV/bin/gunicorn ]]; then
  say "creating venv $VENV (gunicorn, psycopg2-binary)"
  if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q gunicorn psycopg2-binary; } >&2; then
    rm -rf "$VENV"; die "could not set up $VENV"
  fi
fi

# recent gunicorn opens a control socket in ~/.gunicorn by default; the classic arbiter has none
GUNICORN_EXTRA=()
if [[ -z $NO_GUNICORN ]] && "$VENV/bin/gunicorn" --help 2>/dev/null | grep -q -- --no-control-socket; then
  GUNICORN_EXTRA=(--no-control-socket)
fi
SERVERS=(gunicorn)
[[ -z $NO_GUNICORN ]] || SERVERS=()
if [[ -z $WASMCORN ]]; then
  WASMCORN=$ROOT/target/release/wasmcorn
  [[ -x $WASMCORN ]] || WASMCORN=$ROOT/target/debug/wasmcorn
fi
if [[ -x $WASMCORN ]]; then
  SERVERS+=(wasmcorn)
  [[ -z $WITH_METRICS ]] || SERVERS+=(wasmcorn-metrics)
  [[ -z $WITH_REUSE ]] || SERVERS+=(wasmcorn-reuse)
else say "SKIPPING wasmcorn: no executable at $WASMCORN (cargo build --release, or --wasmcorn PATH)"; fi
[[ -z $WITH_NGINX ]] || SERVERS+=(nginx)

# --- the binary's code layout ----------------------------------------------------------------------------------
# A worker's PSS is what a release build's workers map only when host/hot-symbols.txt was written for this very
# binary: when it lists this build's `wasmcorn::worker::run` (as bench/study/layout.rs checks). A stale list, or a
# debug build, leaves the worker's hot code scattered, and its PSS higher. Said on stderr and in the summary.
LAYOUT_NOTE=""
if [[ -x $WASMCORN ]]; then
  if ! command -v nm >/dev/null; then
    LAYOUT_NOTE="code layout unknown (no nm to read $WASMCORN's symbols)"
  else
    entry=$(grep -m1 '^_ZN8wasmcorn6worker3run17h' host/hot-symbols.txt || true)
    if [[ -z $entry ]] || ! nm --defined-only "$WASMCORN" | awk -v entry="$entry" '$3 == entry {found = 1}
        END {exit !found}'; then
      LAYOUT_NOTE="host/hot-symbols.txt was not written for $WASMCORN (a debug build, or a list gone stale): its\
 workers map more code than a release build laid out for them, so their PSS is higher (for a release build,\
 regenerate the list with bench/hot-symbols.sh and build again)"
    fi
  fi
  [[ -z $LAYOUT_NOTE ]] || say "warning: $LAYOUT_NOTE"
fi

# --- process bookkeeping: everything started is stopped by pid on exit ------------------
MASTER="" WORKER_PIDS=() LOADPID="" SCRAPER="" SPREADER=""
alive() { kill -0 "$1" 2>/dev/null; }
wait_gone() { # pid tenths-of-a-second: returns 0 once pid is gone
  local i; for ((i = 0; i < $2; i++)); do alive "$1" || return 0; sleep 0.1; done; ! alive "$1"
}
stop_server() {
  [[ -n $MASTER ]] || return 0
  local p
  kill -TERM "$MASTER" 2>/dev/null || true
  if ! wait_gone "$MASTER" 100; then say "pid $MASTER still alive after 10 s: SIGKILL"; kill -KILL "$MASTER" 2>/dev/null || true; fi
  wait "$MASTER" 2>/dev/null || true
  for p in "${WORKER_PIDS[@]}"; do
    if ! wait_gone "$p" 20; then say "worker $p survived its master: SIGKILL"; kill -KILL "$p" 2>/dev/null || true; fi
  done
  MASTER="" WORKER_PIDS=()
}
# load generator in the background + wait, so a signal is handled at once (and stops it too)
load() { # output-file timeout-seconds command...
  local out=$1 t=$2; shift 2
  timeout "$t" "$@" >"$out" 2>&1 & LOADPID=$!
  wait "$LOADPID" || { LOADPID=""; die "$1 failed or timed out (output: $out)"; }
  LOADPID=""
}
trap '[[ -z $LOADPID ]] || kill -TERM "$LOADPID" 2>/dev/null || true; stop_spreader; stop_scraper; stop_server' EXIT
trap 'exit 130' INT; trap 'exit 143' TERM

# current worker pids: children of the master (for wasmcorn, those announced as booted)
current_workers() {
  local kids; kids=$(pgrep -P "$MASTER" || true)
  if [[ $1 != wasmcorn* ]]; then echo "$kids" | xargs echo; return; fi
  sed -n 's/.*Booting worker with pid: \([0-9][0-9]*\).*/\1/p' "$2" | grep -Fxf <(echo "$kids") | xargs echo || true
}
# mean Pss, USS (Private_Clean+Private_Dirty), Rss in KiB over the given pids
mem_of() {
  local files=() p; for p in "$@"; do [[ -r /proc/$p/smaps_rollup ]] && files+=("/proc/$p/smaps_rollup"); done
  [[ ${#files[@]} -gt 0 ]] || { echo "NA NA NA"; return; }
  awk '/^Pss:/{p+=$2} /^Private_(Clean|Dirty):/{u+=$2} /^Rss:/{r+=$2} FNR==1{n++}
       END{if(n) printf "%d %d %d\n", p/n, u/n, r/n; else print "NA NA NA"}' "${files[@]}" 2>/dev/null || echo "NA NA NA"
}

start_server() { # server workers log -> sets MASTER, WORKER_PIDS, PORT
  local server=$1 n=$2 log=$3 i pids=()
  : >"$log"  # exists before the background child opens it, so the polling below can read it
  if [[ $server == gunicorn ]]; then
    "$VENV/bin/gunicorn" --chdir bench/gunicorn --bind 127.0.0.1:0 --workers "$n" --worker-class sync \
      --access-logfile /dev/null "${GUNICORN_EXTRA[@]}" hello:application >"$log" 2>&1 &
  elif [[ $server == nginx ]]; then
    local port; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$BENCH_DIR/nginx"
    printf '%s\n' "daemon off; master_process on; worker_processes $n; pid $BENCH_DIR/nginx/nginx.pid; error_log stderr;" \
      "events { worker_connections 1024; }" \
      "http { access_log off; keepalive_requests 1000000; server { listen 127.0.0.1:$port; location / { return 204; } } }" \
      >"$BENCH_DIR/nginx/nginx.conf"
    echo "Listening at: http://127.0.0.1:$port (nginx)" >"$log"
    nginx -p "$BENCH_DIR/nginx" -c "$BENCH_DIR/nginx/nginx.conf" >"$log.nginx" 2>&1 &
  elif [[ $server == wasmcorn-metrics ]]; then
    "$WASMCORN" serve sample:hello --bind 127.0.0.1:0 --workers "$n" --access-logfile /dev/null \
      --metrics-bind 127.0.0.1:0 >"$log" 2>&1 &
  elif [[ $server == wasmcorn-reuse ]]; then
    "$WASMCORN" serve sample:hello --bind 127.0.0.1:0 --workers "$n" --access-logfile /dev/null \
      --instance-reuse "$WITH_REUSE" >"$log" 2>&1 &
  else
    "$WASMCORN" serve sample:hello --bind 127.0.0.1:0 --workers "$n" --access-logfile /dev/null >"$log" 2>&1 &
  fi
  MASTER=$! PORT=""
  for ((i = 0; i < 300; i++)); do  # up to 30 s for the listening line and all workers
    alive "$MASTER" || { cat "$log" >&2; die "$server exited during start-up (log: $log)"; }
    [[ -n $PORT ]] || PORT=$(sed -n 's|.*Listening at: http://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$log" | head -n1)
    read -ra pids <<<"$(current_workers "$server" "$log")"
    [[ -n $PORT && ${#pids[@]} -ge $n ]] && break
    sleep 0.1
  done
  WORKER_PIDS=("${pids[@]}")
  [[ -n $PORT && ${#pids[@]} -ge $n ]] || die "$server: no port or only ${#pids[@]}/$n workers after 30 s (log: $log)"
  local body="" expected="Hello, World!"
  [[ $server != nginx ]] || expected=204
  for ((i = 0; i < 100; i++)); do
    if [[ $server == nginx ]]; then
      body=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$PORT/" 2>/dev/null)
    else
      body=$(curl -fsS --max-time 1 "http://127.0.0.1:$PORT/" 2>/dev/null)
    fi
    [[ $body == "$expected" ]] && break
    sleep 0.1
  done
  [[ $body == "$expected" ]] || die "$server on port $PORT did not answer '$expected' (got '$body')"
}

# wasmcorn-metrics: scrape /metrics once a second in the background while the load runs
start_scraper() { # server log
  [[ $1 == wasmcorn-metrics ]] || return 0
  local address; address=$(sed -n 's|.*Serving metrics at: http://\([0-9.:]*\).*|\1|p' "$2" | head -n1)
  [[ -n $address ]] || die "wasmcorn-metrics: no 'Serving metrics at' line in $2"
  curl -fsS --max-time 2 "http://$address/metrics" | grep '^wasmcorn_workers' >/dev/null || die "no metrics at $address"
  (while sleep 1; do curl -sS --max-time 2 -o /dev/null "http://$address/metrics" || true; done) & SCRAPER=$!
}
stop_scraper() { [[ -z $SCRAPER ]] || { kill "$SCRAPER" 2>/dev/null || true; wait "$SCRAPER" 2>/dev/null || true; SCRAPER=""; }; }

# How the established connections to PORT are spread over the processes holding them, most first (`5+3`; `8`
# when one process holds all of them), sampled DELAY seconds from now into FILE. nginx's keep-alive req/s on a
# 2-core machine follows it: all 8 in one worker, it runs at about the speed of one (docs/benchmarks.md).
start_spreader() { # port delay file
  (sleep "$2"; ss -tnpH state established "( sport = :$1 )" 2>/dev/null | grep -o 'pid=[0-9]*' | sort | uniq -c \
    | awk '{print $1}' | sort -rn | paste -sd+ >"$3") & SPREADER=$!
}
stop_spreader() {
  [[ -z $SPREADER ]] || { kill "$SPREADER" 2>/dev/null || true; wait "$SPREADER" 2>/dev/null || true; SPREADER=""; }
}

run_one() { # server workers round -> appends a CSV row
  local server=$1 n=$2 round=$3 log="$LOGS/$1-w$2-r$3.log" url wrk_rps hey_rps ka_rps idle loaded cur spread
  start_server "$server" "$n" "$log"
  url="http://127.0.0.1:$PORT/"
  say "$server workers=$n round=$round port=$PORT master=$MASTER workers=[${WORKER_PIDS[*]}]"
  start_scraper "$server" "$log"
  load "$LOGS/$server-w$n-r$round.warmup" 30 wrk -t2 -c8 -d1s -H 'Connection: close' "$url"
  read -ra cur <<<"$(current_workers "$server" "$log")"; WORKER_PIDS+=("${cur[@]}")
  idle=$(mem_of "${cur[@]}"); MIDLE=$(mem_of "$MASTER" | cut -d' ' -f1)
  load "$LOGS/$server-w$n-r$round.wrk" $((DURATION + 60)) wrk -t2 -c8 -d"${DURATION}s" -H 'Connection: close' "$url"
  load "$LOGS/$server-w$n-r$round.hey" $((HEY_REQUESTS / 20 + 60)) hey -n "$HEY_REQUESTS" -c 8 -disable-keepalive "$url"
  start_spreader "$PORT" "$(awk -v d="$DURATION" 'BEGIN{print d / 2}')" "$LOGS/$server-w$n-r$round.spread"
  load "$LOGS/$server-w$n-r$round.wrk-ka" $((DURATION + 60)) wrk -t2 -c8 -d"${DURATION}s" "$url"
  wait "$SPREADER" 2>/dev/null || true; SPREADER=""
  spread=$(cat "$LOGS/$server-w$n-r$round.spread" 2>/dev/null || true)
  wrk_rps=$(awk '/^Requests\/sec:/{print $2}' "$LOGS/$server-w$n-r$round.wrk")
  hey_rps=$(awk '/Requests\/sec:/{print $2}' "$LOGS/$server-w$n-r$round.hey")
  ka_rps=$(awk '/^Requests\/sec:/{print $2}' "$LOGS/$server-w$n-r$round.wrk-ka")
  grep -E 'Socket errors|Non-2xx' "$LOGS/$server-w$n-r$round.wrk" "$LOGS/$server-w$n-r$round.wrk-ka" >&2 || true
  grep -A9 'Status code distribution' "$LOGS/$server-w$n-r$round.hey" | grep -E '^\s+\[[013-9]' >&2 || true
  read -ra cur <<<"$(current_workers "$server" "$log")"; WORKER_PIDS+=("${cur[@]}")
  loaded=$(mem_of "${cur[@]}"); MLOADED=$(mem_of "$MASTER" | cut -d' ' -f1)
  stop_scraper
  stop_server
  local row="$server,$n,$round,${wrk_rps:-NA},${hey_rps:-NA},${idle// /,},${loaded// /,},${ka_rps:-NA}"
  echo "$row,${spread:-NA}" >>"$CSV"
  printf '%s\t%s\t%s\t%s\n' "$server" "$n" "$MIDLE" "$MLOADED" >>"$LOGS/master-pss.tsv"
  say "  wrk ${wrk_rps:-NA} rps, hey ${hey_rps:-NA} rps, wrk keep-alive ${ka_rps:-NA} rps," \
    "PSS/worker idle ${idle%% *} KiB, loaded ${loaded%% *} KiB, keep-alive connections ${spread:-NA}"
}

echo "server,workers,round,wrk_rps,hey_rps,pss_idle_kib,uss_idle_kib,rss_idle_kib,pss_loaded_kib,uss_loaded_kib,\
rss_loaded_kib,wrk_keepalive_rps,keepalive_spread" >"$CSV"
: >"$LOGS/master-pss.tsv"
for n in $WORKERS; do
  for ((r = 1; r <= ROUNDS; r++)); do
    # Rotate the order each round, so that drift hits every server.
    shift_by=$(((r - 1) % ${#SERVERS[@]}))
    order=("${SERVERS[@]:$shift_by}" "${SERVERS[@]:0:$shift_by}")
    for s in "${order[@]}"; do run_one "$s" "$n" "$r"; done
  done
done

# --- summary ----------------------------------------------------------------------------
agg() { # file server workers column median|mean
  awk -F'[,\t]' -v s="$2" -v w="$3" -v c="$4" '$1==s && $2==w && $c!="NA" && $c!="" {print $c}' "$1" | sort -g \
    | awk -v m="$5" '{a[NR]=$1; t+=$1} END{if(!NR){print "NA"; exit}
        if(m=="mean") printf "%.0f\n", t/NR; else if(NR%2) printf "%.0f\n", a[(NR+1)/2]; else printf "%.0f\n", (a[NR/2]+a[NR/2+1])/2}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if(a=="NA"||b=="NA"||b==0) print "NA"; else printf "%.2f\n", a/b}'; }
cat <<EOF

## hello-compare: wasmcorn vs gunicorn sync (${DURATION}s wrk, ${HEY_REQUESTS} hey requests, ${ROUNDS} round(s), $(nproc) CPUs)

| workers | gunicorn wrk rps | wasmcorn wrk rps | wrk ratio | gunicorn hey rps | wasmcorn hey rps | hey ratio | gunicorn PSS/worker KiB | wasmcorn PSS/worker KiB | PSS ratio |
|---|---|---|---|---|---|---|---|---|---|
EOF
for n in $WORKERS; do
  gw=$(agg "$CSV" gunicorn "$n" 4 median) ww=$(agg "$CSV" wasmcorn "$n" 4 median)
  gh=$(agg "$CSV" gunicorn "$n" 5 median) wh=$(agg "$CSV" wasmcorn "$n" 5 median)
  gp=$(agg "$CSV" gunicorn "$n" 9 mean) wp=$(agg "$CSV" wasmcorn "$n" 9 mean)
  echo "| $n | $gw | $ww | $(ratio "$ww" "$gw") | $gh | $wh | $(ratio "$wh" "$gh") | $gp | $wp | $(ratio "$wp" "$gp") |"
done
cat <<EOF

Medians over rounds for rps; PSS is the mean per worker after load (idle values in the CSV).
Ratios are wasmcorn/gunicorn.
${LAYOUT_NOTE:+
**Code layout**: $LAYOUT_NOTE.
}
| workers | server | PSS/worker idle KiB | PSS/worker loaded KiB | arbiter/master PSS idle KiB | arbiter/master PSS loaded KiB |
|---|---|---|---|---|---|
EOF
for n in $WORKERS; do
  for s in "${SERVERS[@]}"; do
    echo "| $n | $s | $(agg "$CSV" "$s" "$n" 6 mean) | $(agg "$CSV" "$s" "$n" 9 mean)" \
      "| $(agg "$LOGS/master-pss.tsv" "$s" "$n" 3 mean) | $(agg "$LOGS/master-pss.tsv" "$s" "$n" 4 mean) |"
  done
done
echo
echo "Keep-alive rounds (wrk without \`Connection: close\`; gunicorn's sync workers close every connection anyway):"
echo
echo "| workers | gunicorn rps | wasmcorn rps | wasmcorn keep-alive / connection-per-request | nginx return-204 rps | wasmcorn/nginx |"
echo "|---|---|---|---|---|---|"
for n in $WORKERS; do
  gk=$(agg "$CSV" gunicorn "$n" 12 median) wk=$(agg "$CSV" wasmcorn "$n" 12 median) ww=$(agg "$CSV" wasmcorn "$n" 4 median)
  nk=NA; [[ -z $WITH_NGINX ]] || nk=$(agg "$CSV" nginx "$n" 12 median)
  echo "| $n | $gk | $wk | $(ratio "$wk" "$ww") | $nk | $(ratio "$wk" "$nk") |"
done
echo
echo "Each keep-alive round, with how wrk's 8 connections were spread over the server's processes halfway through:"
echo
echo "| workers | round | server | keep-alive rps | connections per process |"
echo "|---|---|---|---|---|"
awk -F, 'NR > 1 && $1 != "gunicorn" {print "| " $2 " | " $3 " | " $1 " | " $12 " | " $13 " |"}' "$CSV" \
  | sort -t'|' -k2,2n -k3,3n
if [[ -n $WITH_NGINX ]]; then
  echo
  echo "| workers | nginx return-204 wrk rps | wasmcorn wrk rps | wasmcorn/nginx | nginx hey rps | wasmcorn hey rps | wasmcorn/nginx |"
  echo "|---|---|---|---|---|---|---|"
  for n in $WORKERS; do
    nw=$(agg "$CSV" nginx "$n" 4 median) ww=$(agg "$CSV" wasmcorn "$n" 4 median)
    nh=$(agg "$CSV" nginx "$n" 5 median) wh=$(agg "$CSV" wasmcorn "$n" 5 median)
    echo "| $n | $nw | $ww | $(ratio "$ww" "$nw") | $nh | $wh | $(ratio "$wh" "$nh") |"
  done
fi
if [[ -n $WITH_REUSE ]]; then
  echo
  echo "An instance for up to $WITH_REUSE requests (\`--instance-reuse $WITH_REUSE\`) against one per request, medians:"
  echo
  echo "| workers | wasmcorn wrk rps | reuse wrk rps | reuse keep-alive rps | reuse keep-alive / connection-per-request" \
    "| reuse keep-alive / nginx |"
  echo "|---|---|---|---|---|---|"
  for n in $WORKERS; do
    ww=$(agg "$CSV" wasmcorn "$n" 4 median) rw=$(agg "$CSV" wasmcorn-reuse "$n" 4 median)
    rk=$(agg "$CSV" wasmcorn-reuse "$n" 12 median)
    nk=NA; [[ -z $WITH_NGINX ]] || nk=$(agg "$CSV" nginx "$n" 12 median)
    echo "| $n | $ww | $rw | $rk | $(ratio "$rk" "$rw") | $(ratio "$rk" "$nk") |"
  done
fi
if [[ -n $WITH_METRICS ]]; then
  echo
  echo "Metrics cost (\`--metrics-bind\`, /metrics scraped once a second during the load), medians:"
  echo
  echo "| workers | wasmcorn wrk rps | with metrics | ratio | wasmcorn keep-alive rps | with metrics | ratio | wasmcorn hey rps | with metrics | ratio |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for n in $WORKERS; do
    ww=$(agg "$CSV" wasmcorn "$n" 4 median) mw=$(agg "$CSV" wasmcorn-metrics "$n" 4 median)
    wk=$(agg "$CSV" wasmcorn "$n" 12 median) mk=$(agg "$CSV" wasmcorn-metrics "$n" 12 median)
    wh=$(agg "$CSV" wasmcorn "$n" 5 median) mh=$(agg "$CSV" wasmcorn-metrics "$n" 5 median)
    echo "| $n | $ww | $mw | $(ratio "$mw" "$ww") | $wk | $mk | $(ratio "$mk" "$wk") | $wh | $mh | $(ratio "$mh" "$wh") |"
  done
fi
echo
echo "CSV: $CSV"
