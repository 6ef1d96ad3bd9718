#!/usr/bin/env bash
# The MariaDB shape of scripts/measure-initial-load-hold.sh: what the initial load of a
# `full-load-and-cdc` task holds on the server while it runs (README design notes, "resumable
# initial load").
#
#   scripts/measure-initial-load-hold-mariadb.sh PORT DB TABLE OUTDIR
#
# Writes a full-load-and-cdc task for DB.TABLE into OUTDIR, runs a steady write workload (one
# UPDATE of DB.hot, outside the task, every 1/$RATE s from a single client), runs `inlet run`, and
# samples every $EVERY s until the table is loaded:
#   trx_s      the oldest open InnoDB transaction's age in seconds (the load's consistent snapshot)
#   history    InnoDB's history list length (undo that purge may not remove while it is open)
# Needs DB.hot (id int primary key, v bigint) with ids 1..10000 in a server from
# scripts/mariadb-sandbox.sh; SETUP_ROWS=N creates DB, DB.hot and DB.TABLE (N rows) when TABLE is
# absent. Environment: INLET_BIN (default target/release/inlet), RATE (200), EVERY (3), SETUP_ROWS.
set -euo pipefail

[ $# -eq 4 ] || { echo "usage: $0 PORT DB TABLE OUTDIR" >&2; exit 2; }
port=$1 db=$2 table=$3 out=$4
inlet=${INLET_BIN:-target/release/inlet}
rate=${RATE:-200}
every=${EVERY:-3}
my() { mariadb --no-defaults -h 127.0.0.1 -P "$port" -u root --batch --skip-column-names "$@"; }

[ -z "${SETUP_ROWS:-}" ] || my -e "CREATE DATABASE IF NOT EXISTS $db"
if [ -n "${SETUP_ROWS:-}" ] && [ -z "$(my -e "SHOW TABLES FROM $db LIKE '$table'")" ]; then
    my "$db" -e "CREATE TABLE $db.$table (id bigint PRIMARY KEY, k int, qty decimal(12,2),
            price decimal(12,2), d date, flag varchar(1), comment varchar(64));
        CREATE TABLE IF NOT EXISTS $db.hot (id int PRIMARY KEY, v bigint);
        INSERT IGNORE INTO $db.hot SELECT seq, 0 FROM seq_1_to_10000;
        INSERT INTO $db.$table SELECT seq, seq % 100000, (seq % 50) + 0.25, (seq % 100000) / 7.0,
            date '2020-01-01' + interval (seq % 2000) day, IF(seq % 3 = 0, 'A', 'N'),
            concat(md5(seq), ' lorem ipsum dolor sit') FROM seq_1_to_$SETUP_ROWS;"
fi
rm -rf "$out" && mkdir -p "$out"
cat >"$out/task.toml" <<TOML
[task]
name = "holdmeasure"
mode = "full-load-and-cdc"

[source]
kind = "mysql"
url = "mysql://root@127.0.0.1:$port/$db"
tls = "disable"

[target]
kind = "parquet"
url = "$out/target"

[tables]
include = ["$db.$table"]

[full_load]
workers = 2

[service]
listen = "127.0.0.1:0"
TOML
# The workload: one client, $rate updates a second. $! is the client (the pipeline's last
# command, not a function, so no subshell): killing it ends the generator at its next write.
workload() {
    while :; do
        for _ in $(seq 1 "$rate"); do
            echo "UPDATE $db.hot SET v = v + 1 WHERE id = $((RANDOM % 10000 + 1));"
        done
        echo "DO SLEEP(1);"
    done
}
workload | mariadb --no-defaults -h 127.0.0.1 -P "$port" -u root >/dev/null 2>&1 &
load_pid=$!
inlet_pid=
trap 'kill $load_pid 2>/dev/null || true; [ -z "$inlet_pid" ] || kill $inlet_pid 2>/dev/null || true' EXIT
sleep 2
t0=$(date +%s.%N)
"$inlet" run -c "$out/task.toml" >"$out/inlet.log" 2>&1 &
inlet_pid=$!
echo "t_s trx_s history"
while :; do
    sleep "$every"
    t=$(echo "$(date +%s.%N) - $t0" | bc)
    s=$(my -e "SELECT coalesce(max(timestampdiff(SECOND, trx_started, now())), 0)
                 FROM information_schema.innodb_trx;
               SELECT count FROM information_schema.innodb_metrics WHERE name = 'trx_rseg_history_len'" | tr '\n' ' ')
    printf '%.0f %s\n' "$t" "$s"
    if grep -q 'table loaded' "$out/inlet.log"; then echo "# table loaded at ${t}s"; break; fi
    kill -0 "$inlet_pid" 2>/dev/null || { echo "# inlet exited: see $out/inlet.log" >&2; exit 1; }
done
grep -E 'table loaded|snapshot' "$out/inlet.log" | head -5 | sed 's/^/# /'
