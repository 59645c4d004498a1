#!/usr/bin/env bash
# python-compare.sh: the same Python WSGI apps under Gunicorn (sync workers) and in wasmcorn.
#
# Usage: bench/python-compare.sh [--apps "flask trivial"] [--workers "2"] [--rounds 2]
#                                [--requests 2000] [--concurrency 4] [--wasmcorn PATH]
#                                [--wasmcorn-args "--instance-reuse 1000"]
#
#   --apps           which apps (bench/python/): flask (flask_hello:app, Flask's hello world) and/or
#                    trivial (trivial:application, a 204 with no body)                default "flask trivial"
#   --workers        worker counts to try (space separated), the same for both servers  default "2"
#   --rounds         rounds per app and worker count (the order of servers alternates)  default 2
#   --requests       requests hey sends per measurement (after 200 warm-up requests)   default 2000
#   --concurrency    hey's concurrent clients                                           default 4
#   --wasmcorn       wasmcorn binary; default target/release/wasmcorn, else target/debug/wasmcorn
#   --wasmcorn-args  extra arguments for `wasmcorn serve` (quoted as one)
#
# Each measurement: start the server on 127.0.0.1:0, wait for its workers and a right answer, 200 warm-up
# requests, `hey -n N -c C -disable-keepalive` (req/s, p50, p99), then PSS/USS/RSS per worker from
# /proc/PID/smaps_rollup while the workers are still up (after load), then stop the server by pid.
# The wasmcorn components are built once with `wasmcorn build python` into $WASMCORN_BENCH_DIR/python/.
#
# Needs: python3 (venv), curl, pgrep; installs hey with apt-get if missing, and a venv with gunicorn and the
# apps' requirements at $WASMCORN_BENCH_DIR/python-venv (created once, reused).
# Output: $WASMCORN_BENCH_DIR/python-compare.csv (default dir target/bench), logs in
# $WASMCORN_BENCH_DIR/logs/, a Markdown summary on stdout (progress on stderr).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
APPS="flask trivial" WORKERS="2" ROUNDS=2 REQUESTS=2000 CONCURRENCY=4 WASMCORN="" WASMCORN_ARGS=""
die() { echo "python-compare: error: $*" >&2; exit 1; }
say() { echo "python-compare: $*" >&2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --apps) APPS=${2:?}; shift 2 ;;
    --workers) WORKERS=${2:?}; shift 2 ;;
    --rounds) ROUNDS=${2:?}; shift 2 ;;
    --requests) REQUESTS=${2:?}; shift 2 ;;
    --concurrency) CONCURRENCY=${2:?}; shift 2 ;;
    --wasmcorn) WASMCORN=$(realpath -m -- "${2:?}"); shift 2 ;;
    --wasmcorn-args) WASMCORN_ARGS=${2?}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
for n in $WORKERS "$ROUNDS" "$REQUESTS" "$CONCURRENCY"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "expected a positive integer, got '$n'"
done
for app in $APPS; do [[ $app == flask || $app == trivial ]] || die "unknown app '$app' (flask, trivial)"; done
cd "$ROOT"
BENCH_DIR=$(realpath -m -- "${WASMCORN_BENCH_DIR:-target/bench}")
VENV=$BENCH_DIR/python-venv CSV=$BENCH_DIR/python-compare.csv LOGS=$BENCH_DIR/logs BUILT=$BENCH_DIR/python
mkdir -p "$LOGS" "$BUILT"

# --- tools --------------------------------------------------------------------------------
if ! command -v hey >/dev/null; then
  say "installing hey with apt-get"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hey; } >&2 || die "could not install hey"
fi
for t in curl pgrep timeout python3; do command -v "$t" >/dev/null || die "$t is required"; done
if [[ ! -x $VENV/bin/gunicorn ]]; then
  say "creating venv $VENV (gunicorn and bench/python/requirements.txt)"
  if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q gunicorn -r bench/python/requirements.txt; } >&2; then
    rm -rf "$VENV"; die "could not set up $VENV"
  fi
fi
GUNICORN_EXTRA=()
"$VENV/bin/gunicorn" --help 2>/dev/null | grep -q -- --no-control-socket && GUNICORN_EXTRA=(--no-control-socket)
if [[ -z $WASMCORN ]]; then
  WASMCORN=$ROOT/target/release/wasmcorn
  [[ -x $WASMCORN ]] || WASMCORN=$ROOT/target/debug/wasmcorn
fi
[[ -x $WASMCORN ]] || die "no wasmcorn binary at $WASMCORN (cargo build --release, or --wasmcorn PATH)"
read -ra EXTRA <<<"$WASMCORN_ARGS"

target_of() { [[ $1 == flask ]] && echo flask_hello:app || echo trivial:application; }
expected_of() { [[ $1 == flask ]] && echo 200 || echo 204; }
for app in $APPS; do
  # Built again when the app or the binary (whose SDK it embeds) changed.
  if [[ ! -s $BUILT/$app.wasm || -n $(find bench/python "$WASMCORN" -newer "$BUILT/$app.wasm" -type f) ]]; then
    say "building $BUILT/$app.wasm"
    "$WASMCORN" build python "$(target_of "$app")" --src bench/python --requirements bench/python/requirements.txt \
      --warmup / -o "$BUILT/$app.wasm" >&2 || die "wasmcorn build python failed"
  fi
done

# --- process bookkeeping: everything started is stopped by pid on exit --------------------
MASTER="" LOADPID=""
alive() { kill -0 "$1" 2>/dev/null; }
stop_server() {
  [[ -n $MASTER ]] || return 0
  local i kids; kids=$(pgrep -P "$MASTER" || true)
  kill -TERM "$MASTER" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do alive "$MASTER" || break; sleep 0.1; done
  alive "$MASTER" && { say "pid $MASTER still alive after 10 s: SIGKILL"; kill -KILL "$MASTER" 2>/dev/null || true; }
  wait "$MASTER" 2>/dev/null || true
  for p in $kids; do alive "$p" && kill -KILL "$p" 2>/dev/null || true; done
  MASTER=""
}
trap '[[ -z $LOADPID ]] || kill -TERM "$LOADPID" 2>/dev/null || true; stop_server' EXIT
trap 'exit 130' INT; trap 'exit 143' TERM
load() { # output-file timeout-seconds command...
  local out=$1 t=$2; shift 2
  timeout "$t" "$@" >"$out" 2>&1 & LOADPID=$!
  wait "$LOADPID" || { LOADPID=""; die "$1 failed or timed out (output: $out)"; }
  LOADPID=""
}
workers_of() { # server log
  local kids; kids=$(pgrep -P "$MASTER" || true)
  if [[ $1 == gunicorn ]]; then echo "$kids" | xargs echo; return; fi
  sed -n 's/.*Booting worker with pid: \([0-9][0-9]*\).*/\1/p' "$2" | grep -Fxf <(echo "$kids") | xargs echo || true
}
mem_of() { # mean Pss, USS, Rss (KiB) over the pids
  local files=() p; for p in "$@"; do [[ -r /proc/$p/smaps_rollup ]] && files+=("/proc/$p/smaps_rollup"); done
  [[ ${#files[@]} -gt 0 ]] || { echo "NA NA NA"; return; }
  awk '/^Pss:/{p+=$2} /^Private_(Clean|Dirty):/{u+=$2} /^Rss:/{r+=$2} FNR==1{n++}
       END{if(n) printf "%d %d %d\n", p/n, u/n, r/n; else print "NA NA NA"}' "${files[@]}" 2>/dev/null || echo "NA NA NA"
}

start_server() { # server app workers log -> MASTER, PORT
  local server=$1 app=$2 n=$3 log=$4 i pids=() code=""
  : >"$log"
  if [[ $server == gunicorn ]]; then
    "$VENV/bin/gunicorn" --chdir bench/python --bind 127.0.0.1:0 --workers "$n" --worker-class sync \
      --access-logfile /dev/null "${GUNICORN_EXTRA[@]}" "$(target_of "$app")" >"$log" 2>&1 &
  else
    "$WASMCORN" serve "$BUILT/$app.wasm" --bind 127.0.0.1:0 --workers "$n" --access-logfile /dev/null \
      "${EXTRA[@]}" >"$log" 2>&1 &
  fi
  MASTER=$! PORT=""
  for ((i = 0; i < 1200; i++)); do  # up to 120 s: the first start compiles the component
    alive "$MASTER" || { cat "$log" >&2; die "$server exited during start-up (log: $log)"; }
    [[ -n $PORT ]] || PORT=$(sed -n 's|.*Listening at: http://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$log" | head -n1)
    read -ra pids <<<"$(workers_of "$server" "$log")"
    [[ -n $PORT && ${#pids[@]} -ge $n ]] && break
    sleep 0.1
  done
  [[ -n $PORT && ${#pids[@]} -ge $n ]] || die "$server: no port or only ${#pids[@]}/$n workers (log: $log)"
  for ((i = 0; i < 100; i++)); do
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$PORT/" 2>/dev/null || true)
    [[ $code == "$(expected_of "$app")" ]] && return 0
    sleep 0.1
  done
  die "$server ($app) on port $PORT answered $code, not $(expected_of "$app") (log: $log)"
}

run_one() { # server app workers round -> a CSV row
  local server=$1 app=$2 n=$3 round=$4 name="python-$1-$2-w$3-r$4" rps p50 p99 mem workers
  start_server "$server" "$app" "$n" "$LOGS/$name.log"
  load "$LOGS/$name.warmup" 120 hey -n 200 -c "$CONCURRENCY" -disable-keepalive "http://127.0.0.1:$PORT/"
  load "$LOGS/$name.hey" $((REQUESTS / 10 + 120)) hey -n "$REQUESTS" -c "$CONCURRENCY" -disable-keepalive \
    "http://127.0.0.1:$PORT/"
  read -ra workers <<<"$(workers_of "$server" "$LOGS/$name.log")"
  mem=$(mem_of "${workers[@]}")
  stop_server
  rps=$(awk '/Requests\/sec:/{print $2}' "$LOGS/$name.hey")
  p50=$(awk '/ 50% in /{printf "%.2f", $3 * 1000}' "$LOGS/$name.hey")
  p99=$(awk '/ 99% in /{printf "%.2f", $3 * 1000}' "$LOGS/$name.hey")
  grep -A9 'Status code distribution' "$LOGS/$name.hey" | grep -E '^\s+\[[013-9]' >&2 || true
  echo "$app,$server,$n,$round,${rps:-NA},${p50:-NA},${p99:-NA},${mem// /,}" >>"$CSV"
  say "$app $server workers=$n round=$round: ${rps:-NA} req/s, p50 ${p50:-NA} ms, p99 ${p99:-NA} ms, PSS/worker ${mem%% *} KiB"
}

echo "app,server,workers,round,rps,p50_ms,p99_ms,pss_kib,uss_kib,rss_kib" >"$CSV"
for app in $APPS; do
  for n in $WORKERS; do
    for ((r = 1; r <= ROUNDS; r++)); do
      if ((r % 2)); then order=(gunicorn wasmcorn); else order=(wasmcorn gunicorn); fi
      for s in "${order[@]}"; do run_one "$s" "$app" "$n" "$r"; done
    done
  done
done

# --- summary --------------------------------------------------------------------------------
median() { # app server workers column
  awk -F, -v a="$1" -v s="$2" -v w="$3" -v c="$4" '$1==a && $2==s && $3==w && $c!="NA" {print $c}' "$CSV" | sort -g \
    | awk '{v[NR]=$1} END{if(!NR) print "NA"; else if(NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if(a=="NA"||b=="NA"||b==0) print "NA"; else printf "%.2f\n", a/b}'; }
cat <<EOF

## python-compare: Gunicorn sync vs wasmcorn, same apps ($(basename "$WASMCORN") at $WASMCORN ${WASMCORN_ARGS}; hey -n $REQUESTS -c $CONCURRENCY, $ROUNDS round(s), $(nproc) CPUs)

| app | workers | gunicorn req/s | wasmcorn req/s | ratio | gunicorn p50/p99 ms | wasmcorn p50/p99 ms | gunicorn PSS/worker KiB | wasmcorn PSS/worker KiB | PSS ratio |
|---|---|---|---|---|---|---|---|---|---|
EOF
for app in $APPS; do
  for n in $WORKERS; do
    gr=$(median "$app" gunicorn "$n" 5) wr=$(median "$app" wasmcorn "$n" 5)
    gp=$(median "$app" gunicorn "$n" 8) wp=$(median "$app" wasmcorn "$n" 8)
    echo "| $app | $n | $gr | $wr | $(ratio "$wr" "$gr") | $(median "$app" gunicorn "$n" 6)/$(median "$app" gunicorn "$n" 7)" \
      "| $(median "$app" wasmcorn "$n" 6)/$(median "$app" wasmcorn "$n" 7) | $gp | $wp | $(ratio "$wp" "$gp") |"
  done
done
echo
echo "Medians over rounds; ratios are wasmcorn/gunicorn. CSV: $CSV"
