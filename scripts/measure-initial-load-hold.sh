#!/usr/bin/env bash
# What the initial load of a PostgreSQL `full-load-and-cdc` task holds on the source while it runs
# (the design notes "resumable initial load" in README.md quote its figures).
#
#   scripts/measure-initial-load-hold.sh PORT DB TABLE OUTDIR [KILL_AT_S]
#
# Writes a full-load-and-cdc task for DB.TABLE into OUTDIR, starts a steady write workload
# (pgbench, $RATE transactions/s, each updating one row of public.hot, outside the task, and one
# row of TABLE), runs `inlet run` and samples every $EVERY s until the table is loaded:
#   wal_mb     the slot's retained WAL: pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)
#   xmin_age   the oldest backend_xmin's age in transactions (what VACUUM may not remove, server-wide)
#   xact_s     the oldest open transaction's age in seconds
#   hot_dead   n_dead_tup of public.hot (dead rows VACUUM is held from removing)
# With KILL_AT_S, inlet is SIGKILLed after that many seconds and started again, and the samples
# go on until the restarted run has loaded the table (what a crash costs today).
# Needs public.hot (id int primary key, v bigint) with ids 1..10000 and TABLE with a bigint `id`
# primary key from 1 and an int column `k`, in a server from scripts/pg-sandbox.sh (database DB
# created); SETUP_ROWS=N creates both (TABLE with N rows, ~120 bytes each) when TABLE is absent.
# Environment: INLET_BIN (default target/release/inlet), RATE (200), EVERY (3), SETUP_ROWS,
# SNAPSHOT_MINUTES (full_load.snapshot_minutes; default 0: one snapshot per run).
set -euo pipefail

[ $# -ge 4 ] || { echo "usage: $0 PORT DB TABLE OUTDIR [KILL_AT_S]" >&2; exit 2; }
port=$1 db=$2 table=$3 out=$4 kill_at=${5:-}
inlet=${INLET_BIN:-target/release/inlet}
rate=${RATE:-200}
every=${EVERY:-3}
bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
q() { "$bin/psql" -X -q -At -F ' ' -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d "$db" "$@"; }

if [ -n "${SETUP_ROWS:-}" ] && [ "$(q -c "SELECT to_regclass('public.$table') IS NULL")" = t ]; then
    q -c "CREATE TABLE public.$table (id bigint PRIMARY KEY, k int, qty numeric(12,2),
            price numeric(12,2), d date, flag text, comment text)" \
      -c "INSERT INTO public.$table SELECT g, g % 100000, (g % 50) + 0.25, (g % 100000) / 7.0,
            date '2020-01-01' + (g % 2000), CASE WHEN g % 3 = 0 THEN 'A' ELSE 'N' END,
            md5(g::text) || ' lorem ipsum dolor sit' FROM generate_series(1, $SETUP_ROWS) g" \
      -c "CREATE TABLE IF NOT EXISTS public.hot (id int PRIMARY KEY, v bigint, note text)" \
      -c "INSERT INTO public.hot SELECT g, 0, 'x' FROM generate_series(1, 10000) g ON CONFLICT DO NOTHING" \
      -c "VACUUM ANALYZE public.$table" -c "VACUUM ANALYZE public.hot"
fi
rm -rf "$out" && mkdir -p "$out"
task=$out/task.toml
slot=inlet_holdmeasure
cat >"$task" <<EOF
[task]
name = "holdmeasure"
mode = "full-load-and-cdc"

[source]
kind = "postgres"
url = "postgres://postgres@127.0.0.1:$port/$db"
tls = "disable"

[target]
kind = "parquet"
url = "$out/target"

[tables]
include = ["public.$table"]

[full_load]
workers = 2
snapshot_minutes = ${SNAPSHOT_MINUTES:-0}

[service]
listen = "127.0.0.1:0"
EOF
q -c "SELECT pg_drop_replication_slot('$slot') FROM pg_replication_slots WHERE slot_name = '$slot'" >/dev/null
max_id=$(q -c "SELECT max(id) FROM public.$table")
cat >"$out/workload.sql" <<EOF
\set h random(1, 10000)
\set b random(1, $max_id)
UPDATE public.hot SET v = v + 1 WHERE id = :h;
UPDATE public.$table SET k = k + 1 WHERE id = :b;
EOF
"$bin/pgbench" -n -h 127.0.0.1 -p "$port" -U postgres -c 2 -R "$rate" -T 3600 -f "$out/workload.sql" "$db" \
    >"$out/pgbench.log" 2>&1 &
bench_pid=$!
inlet_pid=
cleanup() {
    kill "$bench_pid" 2>/dev/null || true
    [ -z "$inlet_pid" ] || kill "$inlet_pid" 2>/dev/null || true
}
trap cleanup EXIT
sleep 2

runs=0
start_inlet() {
    runs=$((runs + 1))
    "$inlet" run -c "$task" >"$out/inlet-$runs.log" 2>&1 &
    inlet_pid=$!
}
t0=$(date +%s.%N)
start_inlet
killed=0
echo "t_s run wal_mb xmin_age xact_s hot_dead"
while :; do
    sleep "$every"
    now=$(date +%s.%N)
    t=$(echo "$now - $t0" | bc)
    s=$(q -c "SELECT
        coalesce((SELECT round(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) / 1048576.0, 1)
                    FROM pg_replication_slots WHERE slot_name = '$slot'), 0),
        coalesce((SELECT max(age(backend_xmin)) FROM pg_stat_activity WHERE backend_xmin IS NOT NULL), 0),
        coalesce((SELECT round(extract(epoch FROM max(now() - xact_start))) FROM pg_stat_activity
                    WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid()
                      AND application_name <> 'pgbench'), 0),
        (SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'hot')")
    printf '%.0f %d %s\n' "$t" "$runs" "$s"
    if [ -n "$kill_at" ] && [ "$killed" = 0 ] && [ "$(echo "$t >= $kill_at" | bc)" = 1 ]; then
        q -c "VACUUM (VERBOSE) public.hot" 2>&1 | grep -E 'tuples:|removable cutoff' | head -2 \
            | sed 's/^/# vacuum during the load: /' || true
        kill -KILL "$inlet_pid"
        wait "$inlet_pid" 2>/dev/null || true
        killed=1
        echo "# SIGKILL at ${t}s"
        start_inlet
    fi
    if grep -q 'table loaded' "$out/inlet-$runs.log"; then
        echo "# run $runs: table loaded at ${t}s"
        q -c "VACUUM (VERBOSE) public.hot" 2>&1 | grep -E 'tuples:|removable cutoff' | head -2 \
            | sed 's/^/# vacuum after the load: /' || true
        break
    fi
    if ! kill -0 "$inlet_pid" 2>/dev/null; then
        echo "# inlet exited: see $out/inlet-$runs.log" >&2
        exit 1
    fi
done
grep -E 'table loaded|resum|snapshot' "$out"/inlet-*.log | head -20 | sed 's/^/# /'
