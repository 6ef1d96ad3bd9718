#!/usr/bin/env bash
# `make demo`, the change-capture part: run `inlet run` (full load, then changes) in the
# background, wait for the full load, apply config/demo-changes.sql, wait until inlet has
# captured and acknowledged every change, then stop it with SIGTERM as systemd would.
#
#   scripts/demo-run.sh INLET PSQL_COMMAND...
set -euo pipefail
inlet=$1
shift
psql=("$@")
checkpoint=warehouse/_inlet/demo/checkpoint

"$inlet" run -c config/demo.toml --listen "${INLET_DEMO_LISTEN:-127.0.0.1:9440}" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' EXIT

wait_for() { # SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@"; do
        kill -0 $pid 2>/dev/null || { echo "demo: inlet stopped unexpectedly" >&2; exit 1; }
        [ $SECONDS -lt $deadline ] || { echo "demo: timed out waiting for $what" >&2; exit 1; }
        sleep 0.2
    done
}
wait_for 120 "the full load" test -f "$checkpoint"
echo "demo: full load done; applying config/demo-changes.sql while inlet follows the changes"
"${psql[@]}" -d shop -f config/demo-changes.sql
target=$("${psql[@]}" -At -d shop -c "SELECT pg_current_wal_insert_lsn()")
caught_up() {
    [ "$("${psql[@]}" -At -d shop -c "SELECT confirmed_flush_lsn >= '$target' FROM pg_replication_slots WHERE slot_name = 'inlet_demo'")" = t ]
}
wait_for 120 "the changes to be captured" caught_up
echo "demo: what the running daemon reports (inlet status, from its /status endpoint):"
"$inlet" status --address "${INLET_DEMO_LISTEN:-127.0.0.1:9440}" || true
kill -TERM $pid
trap - EXIT
wait $pid
echo "demo: changes captured; inlet stopped cleanly"
