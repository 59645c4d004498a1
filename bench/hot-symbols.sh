#!/usr/bin/env bash
# hot-symbols.sh: writes host/hot-symbols.txt, the functions wasmcorn's workers run, which host/build.rs hands to
# the linker so that it lays them out side by side in optimised builds.
#
# Usage: bench/hot-symbols.sh [--wasmcorn PATH]... [--out FILE]
#
#   --wasmcorn   an optimised build to trace; repeat for several. Default: `cargo build --release`'s, built
#                here (5 to 15 minutes). It is also the binary the study (`cargo bench --bench study`) builds
#                and measures, and the benches' crate (bench/) turns on no feature of a crate it uses, so its
#                functions have the same names under `cargo bench`.
#   --out        where to write the list; default host/hot-symbols.txt
#
# Then build again (cargo build --release) to link with the new list.
#
# Why: the kernel maps a program's code 64 KiB around every page a process touches. After the fork a worker
# runs about 1.2 MiB of functions spread over 16 MB of text, so without this list it maps about 5 MiB of code;
# with them side by side it maps little more than what it runs. The list is names: it survives small edits, but
# functions renamed, added or inlined differently drop out of it (by 2026-12-07 only 365 of its 1,456 names were
# left), so regenerate it when the request path has changed and after upgrading Rust, wasmtime or other
# dependencies (their symbols change). bench/hello-compare.sh and the study say when it was not written for the
# binary they measure.
#
# How: each set-up below runs under valgrind's callgrind (Debian's package, installed when missing), with
# 1 worker, answers a few requests of every kind, and stops. Every function of the binary that a worker ran
# after the fork is listed first, then those only the arbiter ran (its start-up, which the workers inherit but
# do not run again). The compile step's child is left out: it runs once.
#   1. `serve sample:workload` as the study runs it, IO 90 / CPU 10, the IO part as `pg_sleep` on a private
#      PostgreSQL (Debian's package) on 127.0.0.1;
#   2. `serve sample:hello`, as the hello benchmarks run it;
#   3. `serve --apps` with hello and echo on the shared pool and workload in a pool of its own, access log
#      on: GET, HEAD, POST with a length and chunked, an unrouted 404 and a hand-over.
# Every process it starts is stopped by pid. Progress on stderr. KEEP=1 keeps the work folder (profiles, logs).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BINARIES=() OUT=$ROOT/host/hot-symbols.txt
die() { echo "hot-symbols: error: $*" >&2; exit 1; }
say() { echo "hot-symbols: $*" >&2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --wasmcorn) BINARIES+=("$(realpath -m -- "${2:?}")"); shift 2 ;;
    --out) OUT=$(realpath -m -- "${2:?}"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
for binary in "${BINARIES[@]}"; do [[ -x $binary ]] || die "no executable at $binary"; done
apt_install() {
  say "installing $* with apt-get"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >&2 || die "could not install $*"
}
command -v valgrind >/dev/null || apt_install valgrind
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || apt_install postgresql
PG_BIN=$(dirname "$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | sort -V | tail -1)")
for t in curl setpriv awk nm; do command -v "$t" >/dev/null || die "$t is required"; done

WORK=$(mktemp -d)
chmod 755 "$WORK"
SERVER_PID="" PG_PID=""
running() { [[ -n $1 ]] && kill -0 "$1" 2>/dev/null && [[ $(ps -o stat= -p "$1") != Z* ]]; }
stop() { # PID SIGNAL: signal a child of this script, give it 60 s to exit, then kill it; reaps it
  local pid=$1
  running "$pid" || return 0
  kill "-$2" "$pid" 2>/dev/null || true
  for _ in $(seq 600); do running "$pid" || break; sleep 0.1; done
  running "$pid" && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}
trap 'stop "$SERVER_PID" TERM; stop "$PG_PID" INT; [[ -n ${KEEP:-} ]] || rm -rf "$WORK"' EXIT
export WASMCORN_CACHE_DIR=$WORK/cache

if ((${#BINARIES[@]} == 0)); then
  say "building the release binary (cargo build --release)"
  (cd "$ROOT" && cargo build --release -p wasmcorn --bin wasmcorn) >&2 || die "cargo build --release failed"
  cp "$ROOT/target/release/wasmcorn" "$WORK/wasmcorn-release"
  BINARIES=("$WORK/wasmcorn-release")
fi

free_port() {
  local port
  for port in $(shuf -i 20000-60000 -n 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
  die "no free port found"
}

# A private PostgreSQL cluster, as the study's.
mkdir "$WORK/pg" && chown postgres: "$WORK/pg"
# A command array, not a function: a function sent to the background runs in a subshell, and $! would name it.
AS_POSTGRES=(setpriv --reuid=postgres --regid=postgres --init-groups --)
"${AS_POSTGRES[@]}" "$PG_BIN/initdb" --auth=trust --username=postgres --no-sync --no-locale -E UTF8 -D "$WORK/pg/data" \
  >/dev/null || die "initdb failed"
PG_PORT=$(free_port)
"${AS_POSTGRES[@]}" "$PG_BIN/postgres" -D "$WORK/pg/data" -p "$PG_PORT" \
  -k "$WORK/pg" -c listen_addresses=127.0.0.1 -c fsync=off >"$WORK/pg/log" 2>&1 &
PG_PID=$!
for _ in $(seq 300); do grep -q "ready to accept connections" "$WORK/pg/log" && break; sleep 0.1; done
grep -q "ready to accept connections" "$WORK/pg/log" || die "PostgreSQL did not start: $(tail -3 "$WORK/pg/log")"

# Compile the samples outside valgrind, so that no traced run compiles.
for sample in hello echo workload; do
  "${BINARIES[0]}" serve "sample:$sample" --check-config >/dev/null || die "sample:$sample does not load"
done

# Where a forked worker starts: `wasmcorn::worker::run`, its mangled name in the binary being traced (set below):
# Rust's legacy mangling (_ZN8wasmcorn6worker3run17h...E), or v0 (_RNvNtCs..._8wasmcorn6worker3run), which Rust 1.97
# uses.
WORKER_ENTRY=""

WASMCORN="" WORKERS="" ARBITERS="" BASE=""
# traced NAME ARGS...: starts `wasmcorn ARGS` under callgrind and waits for its worker(s) to boot.
traced() {
  local name=$TAG-$1; shift
  local log=$WORK/$name.log
  say "tracing: wasmcorn $*"
  # Profiles go to callgrind.out.PID in the current folder. (--callgrind-out-file is lost in the workers:
  # valgrind reads it again after the fork, from memory that the worker's process title has overwritten.)
  mkdir "$WORK/$name"
  # A worker's profile starts empty at worker::run: what it ran before is the arbiter's start-up, inherited.
  (cd "$WORK/$name" && exec valgrind --tool=callgrind --zero-before="$WORKER_ENTRY" --demangle=no --dump-instr=no \
    --compress-strings=no --compress-pos=no "$WASMCORN" "$@" --bind 127.0.0.1:0 --workers 1 --timeout 0 \
    >"$log" 2>&1) &
  SERVER_PID=$!
  ARBITERS+=" $WORK/$name/callgrind.out.$SERVER_PID"
  for _ in $(seq 1200); do grep -q "Booting worker" "$log" && break; sleep 0.1; done
  BASE=$(grep -o 'Listening at: http://[0-9.:]*' "$log" | head -1 | cut -d' ' -f3)
  [[ -n $BASE ]] && grep -q "Booting worker" "$log" || die "wasmcorn $* did not start: $(tail -3 "$log")"
}
# finish NAME: stops the traced server and keeps its workers' profiles.
finish() {
  local name=$TAG-$1
  stop "$SERVER_PID" TERM
  SERVER_PID=""
  local pid
  for pid in $(grep -o 'Booting worker with pid: [0-9]*' "$WORK/$name.log" | awk '{print $NF}'); do
    [[ -f $WORK/$name/callgrind.out.$pid ]] || die "no profile of worker $pid: $(grep "==$pid==" "$WORK/$name.log")"
    WORKERS+=" $WORK/$name/callgrind.out.$pid"
  done
}
get() { curl -sS -o /dev/null --max-time 300 -w '%{http_code}\n' "$@" >&2; }

# trace_all: the three set-ups, on $WASMCORN.
trace_all() {
  traced study serve sample:workload --guest-timeout 600 --env IO_BOUND=90 --env CPU_BOUND=10 \
    --env IO_SECONDS=0.05 --env ITERATIONS=20000 --env "DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres" \
    --allow-net "127.0.0.1:$PG_PORT"
  for _ in 1 2 3; do get "$BASE/"; done
  finish study

  traced hello serve sample:hello
  for _ in 1 2 3; do get "$BASE/"; done
  finish hello

  cat >"$WORK/apps.toml" <<EOF
[[app]]
name = "hello"
component = "sample:hello"
hosts = ["hello.test"]

[[app]]
name = "echo"
component = "sample:echo"
prefix = "/echo"

[[app]]
name = "work"
component = "sample:workload"
hosts = ["work.test"]
workers = 1
env = { IO_BOUND = "0", CPU_BOUND = "100", ITERATIONS = "1000" }
EOF
  traced apps serve --apps "$WORK/apps.toml" --access-logfile -
  for _ in 1 2; do
    get -H 'Host: hello.test' "$BASE/"
    get -I -H 'Host: hello.test' "$BASE/"
    get -d 'a=1&b=2' "$BASE/echo/form?x=1"
    get -H 'Transfer-Encoding: chunked' --data-binary @"$WORK/apps.toml" "$BASE/echo/upload"
    get -H 'Host: nowhere.test' "$BASE/nothing"
    get -H 'Host: work.test' "$BASE/"
  done
  finish apps
}

# Every function of the binary that a profile ran: `fn=` lines under the binary's `ob=`, without the `'N`
# callgrind adds to recursive calls, and without unnamed addresses.
functions() {
  awk -v bin="$WASMCORN" '/^ob=/ { ob = substr($0, 4) } /^fn=/ && ob == bin { print substr($0, 4) }' "$@" |
    sed "s/'[0-9]*\$//" | grep -v '^0x\|^(' | sort -u
}
# Trace every binary; each one's functions are named by its own path in the profiles.
: >"$WORK/workers.txt"
: >"$WORK/all.txt"
TAG=0
for WASMCORN in "${BINARIES[@]}"; do
  TAG=$((TAG + 1)) WORKERS="" ARBITERS=""
  WORKER_ENTRY=$(nm --defined-only "$WASMCORN" |
    awk '!found && ($3 ~ /^_ZN8wasmcorn6worker3run17h[0-9a-f]+E$/ ||
                    $3 ~ /^_RNvNtCs[0-9A-Za-z_]+_8wasmcorn6worker3run$/) { print $3; found = 1 }')
  [[ -n $WORKER_ENTRY ]] ||
    die "$WASMCORN has no wasmcorn::worker::run (a stripped binary? or was it renamed? then update WORKER_ENTRY)"
  trace_all
  functions $WORKERS >>"$WORK/workers.txt"
  functions $WORKERS $ARBITERS >>"$WORK/all.txt"
done
sort -u -o "$WORK/workers.txt" "$WORK/workers.txt"
sort -u "$WORK/all.txt" | comm -23 - "$WORK/workers.txt" >"$WORK/arbiter.txt"
{
  echo "# Functions a worker runs, then those only the arbiter runs: host/build.rs asks the linker to place them"
  echo "# side by side. Written by bench/hot-symbols.sh from $("${BINARIES[0]}" --version 2>/dev/null || echo wasmcorn),"
  echo "# $(rustc --version); regenerate it after upgrading Rust or a dependency."
  cat "$WORK/workers.txt" "$WORK/arbiter.txt"
} >"$OUT"

# How much of each binary's text they are.
for binary in "${BINARIES[@]}"; do
  nm -S -t d --defined-only "$binary" | awk -v list="$WORK/workers.txt" -v binary="$binary" '
    BEGIN { while ((getline name < list) > 0) hot[name] = 1 }
    NF == 4 && ($4 in hot) && !seen[$4]++ { bytes += $2; found++ }
    END { printf "hot-symbols: %s: %d of the %d worker functions, %.0f KiB\n", binary, found, length(hot), bytes / 1024 > "/dev/stderr" }'
done
say "wrote $OUT: $(wc -l <"$WORK/workers.txt") worker and $(wc -l <"$WORK/arbiter.txt") arbiter-only functions"
