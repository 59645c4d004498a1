#!/usr/bin/env bash
# keepalive-cpu.sh: where the CPU of a keep-alive hello goes, server by server, in one run. Each round starts nginx
# (`return 204`), wasmcorn (`serve sample:hello`) and wasmcorn with `--instance-reuse N`, 2 workers each, in turn
# (the order rotates from round to round), warms each for 1 s, and drives it with `wrk -t2 -c8 -dDURATION`
# (keep-alive). Per server and round it prints the requests per second and, per request: wrk's CPU (user and
# system, `/usr/bin/time`), the workers' CPU (utime and stime from /proc/PID/stat, before and after), and the
# workers' voluntary and involuntary context switches (/proc/PID/status). On this 2-core machine the client and
# the server share the cores, so a server's req/s is bounded by its own CPU per request plus what it makes wrk spend.
#
# Usage: bench/keepalive-cpu.sh [--wasmcorn PATH] [--rounds N] [--duration S] [--reuse N]
#   --wasmcorn PATH  the binary (default the repository's target/release/wasmcorn)
#   --rounds N       rounds (default 2)
#   --duration S     seconds of load per server and round (default 6)
#   --reuse N        the reuse server's --instance-reuse (default 1000; 0 leaves that server out)
# Needs wrk, time and nginx (Debian packages; nginx is left out with a message when missing). Servers bind
# 127.0.0.1 and are stopped by pid; their logs go to a private temporary folder, removed at the end.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WASMCORN=$ROOT/target/release/wasmcorn ROUNDS=2 DURATION=6 REUSE=1000
while [[ $# -gt 0 ]]; do
  case $1 in
    --wasmcorn) WASMCORN=${2:?--wasmcorn needs a path}; shift 2 ;;
    --rounds) ROUNDS=${2:?--rounds needs a number}; shift 2 ;;
    --duration) DURATION=${2:?--duration needs a number}; shift 2 ;;
    --reuse) REUSE=${2:?--reuse needs a number}; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "keepalive-cpu: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ && $DURATION =~ ^[1-9][0-9]*$ && $REUSE =~ ^[0-9]+$ ]] \
  || { echo "keepalive-cpu: --rounds and --duration take a positive whole number, --reuse a whole number" >&2; exit 2; }
[[ -x $WASMCORN ]] \
  || { echo "keepalive-cpu: $WASMCORN is not an executable (cargo build --release -p wasmcorn)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "keepalive-cpu: wrk is missing (apt-get install wrk)" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "keepalive-cpu: /usr/bin/time is missing (apt-get install time)" >&2; exit 2; }
SERVERS=(wasmcorn)
if command -v nginx >/dev/null; then
  SERVERS=(nginx "${SERVERS[@]}")
else
  echo "keepalive-cpu: nginx is missing: left out" >&2
fi
(( REUSE == 0 )) || SERVERS+=(reuse)
WORK=$(mktemp -d)
MASTER=""
stop() { [[ -z $MASTER ]] || { kill -TERM "$MASTER" 2>/dev/null; wait "$MASTER" 2>/dev/null; MASTER=""; }; }
trap 'stop; rm -rf "$WORK"' EXIT

# start SERVER: starts it, sets MASTER, PORT and WORKERS (the master's children).
start() {
  local log=$WORK/$1.log
  PORT=""
  if [[ $1 == nginx ]]; then
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf '%s\n' "daemon off; master_process on; worker_processes 2; pid $WORK/nginx.pid; error_log stderr;" \
      "events {}" \
      "http { access_log off; keepalive_requests 1000000;" \
      "  server { listen 127.0.0.1:$PORT; location / { return 204; } } }" \
      >"$WORK/nginx.conf"
    nginx -p "$WORK" -c "$WORK/nginx.conf" >"$log" 2>&1 & MASTER=$!
    sleep 1
  else
    local extra=(); [[ $1 == reuse ]] && extra=(--instance-reuse "$REUSE")
    "$WASMCORN" serve sample:hello -w 2 -b 127.0.0.1:0 --access-logfile /dev/null "${extra[@]}" >"$log" 2>&1 & MASTER=$!
    for _ in $(seq 100); do
      PORT=$(sed -n 's|.*Listening at: http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$log" | head -1)
      [[ -n $PORT ]] && break
      sleep 0.1
    done
    sleep 1
  fi
  WORKERS=$(pgrep -P "$MASTER" | tr '\n' ' ')
  [[ -n $PORT && $(wc -w <<<"$WORKERS") -eq 2 ]] \
    || { cat "$log" >&2; echo "keepalive-cpu: $1 did not start" >&2; exit 1; }
}

# The workers' CPU in clock ticks, from the fields after the process name (which may hold a space).
ticks() {
  local t=0 p
  for p in $WORKERS; do t=$((t + $(cut -d')' -f2 "/proc/$p/stat" | awk '{print $12 + $13}'))); done
  echo "$t"
}
# Their voluntary and involuntary context switches.
switches() {
  local v=0 n=0 p
  for p in $WORKERS; do
    v=$((v + $(awk '/^voluntary_ctxt_switches/{print $2}' "/proc/$p/status")))
    n=$((n + $(awk '/^nonvoluntary_ctxt_switches/{print $2}' "/proc/$p/status")))
  done
  echo "$v $n"
}

measure() {
  start "$1"
  wrk -t2 -c8 -d1s "http://127.0.0.1:$PORT/" >/dev/null
  local t0 t1 s0 s1
  t0=$(ticks); s0=($(switches))
  /usr/bin/time -f '%U %S' -o "$WORK/time" wrk -t2 -c8 -d"${DURATION}s" "http://127.0.0.1:$PORT/" >"$WORK/wrk"
  t1=$(ticks); s1=($(switches))
  stop
  awk -v server="$1" -v round="$2" -v hz="$(getconf CLK_TCK)" -v ticks=$((t1 - t0)) \
    -v vol=$((s1[0] - s0[0])) -v invol=$((s1[1] - s0[1])) '
    FILENAME ~ /time$/ { wrk = $1 + $2; next }
    /requests in/ { n = $1 }
    /^Requests\/sec/ { rps = $2 }
    END {
      if (!n) { print "keepalive-cpu: wrk counted no request for " server > "/dev/stderr"; exit 1 }
      printf "| %s | %d | %.0f | %.1f | %.1f | %.2f | %.2f |\n", server, round, rps, wrk * 1e6 / n,
        ticks * 1e6 / hz / n, vol / n, invol / n
    }' "$WORK/time" "$WORK/wrk"
}

echo "| server | round | req/s | wrk CPU per request (us) | workers' CPU per request (us) |" \
  "voluntary switches per request | involuntary switches per request |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for round in $(seq "$ROUNDS"); do
  for i in "${!SERVERS[@]}"; do
    measure "${SERVERS[$(((i + round - 1) % ${#SERVERS[@]}))]}" "$round"
  done
done
