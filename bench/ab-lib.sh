# ab-lib.sh: what hello-ab.sh and latency-ab.sh share, sourced by both. Two wasmcorn binaries side by side: each
# round starts one server on 127.0.0.1:0 with its log in a private temporary folder, measures it and stops it by
# pid; the rounds alternate (A B, B A, A B) so that this machine's drift falls on both. A server still running
# when the script ends (an error or an interrupt included) is stopped by pid, and the folder removed.
#
# The sourcing script sets NAME (its name, for messages) and defines `measure PORT LABEL`, which drives the
# running server and prints its line; `ab_rounds BINARY_A BINARY_B WORKERS APP` then runs the three rounds.
# EXTRA="--flag ..." adds arguments to both servers.
AB_LOGS=$(mktemp -d)
AB_SERVER="" # the running server's pid
trap '[[ -z $AB_SERVER ]] || kill -TERM "$AB_SERVER" 2>/dev/null; rm -rf "$AB_LOGS"' EXIT
trap 'exit 130' INT TERM

# Starts BINARY serving APP with WORKERS workers, waits up to 30 s for its start-up line, runs `measure PORT
# LABEL`, then stops the server by pid.
ab_run() { # binary label workers app
  local log=$AB_LOGS/$2.log port="" i
  # shellcheck disable=SC2086 # EXTRA holds words
  "$1" serve "$4" -w "$3" -b 127.0.0.1:0 --access-logfile /dev/null ${EXTRA:-} >"$log" 2>&1 &
  AB_SERVER=$!
  for i in $(seq 300); do
    port=$(sed -n 's|.*Listening at: http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$log" | head -1)
    [[ -n $port ]] && break
    sleep 0.1
  done
  [[ -n $port ]] || { cat "$log" >&2; echo "$NAME: $1 did not start" >&2; exit 1; }
  measure "$port" "$2"
  kill -TERM "$AB_SERVER"; wait "$AB_SERVER" 2>/dev/null; AB_SERVER=""
}

ab_rounds() { # binary_a binary_b workers app
  local r
  for r in 1 2 3; do
    if (( r % 2 )); then ab_run "$1" A "$3" "$4"; ab_run "$2" B "$3" "$4"
    else ab_run "$2" B "$3" "$4"; ab_run "$1" A "$3" "$4"; fi
  done
}
