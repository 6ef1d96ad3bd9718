#!/usr/bin/env bash
# `inlet validate` on the bench's TPC-H lineitem (6,001,215 rows at BENCH_SF=1): the time, inlet's
# peak memory, and the load it puts on the source PostgreSQL.
#
#   scripts/bench-validate.sh [parquet|iceberg]...   (default: parquet)
#
# Uses the bench's sandbox PostgreSQL (scripts/pg-sandbox.sh, lineitem loaded by
# scripts/bench-tpch.py load, as `make bench` does). Per target kind: a full load of lineitem
# (mode full-load), then `inlet validate` under /usr/bin/time -v, while a sampler records every
# 0.2 s the source's open transactions (pg_stat_activity) and which of them hold a lock on
# lineitem. Prints one machine line per target kind:
#   bench: validate-<kind> rows=N wall_s=S peak_rss_mb=N server_cpu_s=S rows_read=N
#          blocks_read=N blocks_hit=N longest_xact_s=S longest_lock_s=S ranges=N
#          ranges_differing=N rows_read_by_inlet=N
# (ranges, ranges_differing, rows_read_by_inlet: from the --json report; an inlet without range
# hashes reports none, shown as -). For parquet, a second line, validate-parquet-1-changed,
# measures it again once one value of the target is changed (BENCH_VALIDATE_CHANGE=0: not).
# INLET_BIN=/path/to/an/older/inlet measures another build the same way.
# server_cpu_s is the CPU time of the whole PostgreSQL server during the validation (its live
# processes plus those it reaped, from /proc); rows_read and blocks_* come from
# pg_stat_statements (the sandbox is restarted with it preloaded).
#
# Environment: INLET_BENCH_PGPORT (default 54339), BENCH_DIR (default .bench), BENCH_SF (1),
# INLET_BIN (target/release/inlet), INLET_PYTHON (.venv/bin/python), VALIDATE_ARGS (extra
# arguments for inlet validate, e.g. "--memory-mb 256").
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
port=${INLET_BENCH_PGPORT:-54339}
dir=${BENCH_DIR:-.bench}
sf=${BENCH_SF:-1}
inlet=${INLET_BIN:-target/release/inlet}
py=${INLET_PYTHON:-$root/.venv/bin/python}
pg_bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
db=bench
dsn="host=127.0.0.1 port=$port user=postgres dbname=$db"
kinds=("$@")
[ ${#kinds[@]} -gt 0 ] || kinds=(parquet)

fail() {
    echo "bench-validate: FAILED: $*" >&2
    exit 1
}
[ -x "$inlet" ] || fail "no inlet binary at $inlet (cargo build --release)"
[ -x /usr/bin/time ] || fail "no /usr/bin/time (apt-get install time)"

scripts/pg-sandbox.sh start "$dir" "$port"
conf="$dir/data/sandbox.conf"
if ! grep -q pg_stat_statements "$conf"; then
    # pg-sandbox.sh rewrites sandbox.conf on start: append and restart without it.
    echo "shared_preload_libraries = 'pg_stat_statements'" >>"$conf"
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$pg_bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w restart >/dev/null
    else
        "$pg_bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w restart >/dev/null
    fi
fi
q() { psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"; }
if [ "$(q -d postgres -c "SELECT count(*) FROM pg_database WHERE datname = '$db'")" = 0 ]; then
    q -d postgres -c "CREATE DATABASE $db"
fi
"$py" scripts/bench-tpch.py load --dsn "$dsn" --sf "$sf"
q -d "$db" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
rows=$(q -d "$db" -c "SELECT count(*) FROM public.lineitem")
postmaster=$(head -1 "$dir/data/postmaster.pid")

# CPU seconds of the server: its live processes, plus the children it reaped (cutime, cstime).
server_cpu() {
    local ticks
    ticks=$(getconf CLK_TCK)
    {
        awk '{print $14 + $15 + $16 + $17}' "/proc/$postmaster/stat"
        for c in $(pgrep -P "$postmaster"); do
            awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null || true
        done
    } | awk -v t="$ticks" '{s += $1} END {printf "%.2f", s / t}'
}

# One measured `inlet validate` of $task: measure LABEL EXPECTED_EXIT_CODE.
measure() {
    local label=$1 expect=$2
    q -d "$db" -c "SELECT pg_stat_statements_reset()" >/dev/null
    sampler_out="$dir/validate-$label.activity"
    : >"$sampler_out"
    (
        # pid, seconds its transaction has been open, and whether it holds a lock on lineitem.
        while :; do
            q -d "$db" -F ' ' -c "SELECT a.pid, extract(epoch FROM clock_timestamp() - a.xact_start),
                    EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.granted
                            AND l.relation = 'public.lineitem'::regclass)
                FROM pg_stat_activity a
                WHERE a.xact_start IS NOT NULL AND a.pid <> pg_backend_pid()
                  AND a.backend_type = 'client backend'" >>"$sampler_out" 2>/dev/null || true
            sleep 0.2
        done
    ) &
    sampler=$!
    cpu0=$(server_cpu)
    echo "bench-validate: $inlet validate -c $task ${VALIDATE_ARGS:-}"
    set +e
    # shellcheck disable=SC2086 # VALIDATE_ARGS is a list of words
    /usr/bin/time -v -o "$dir/validate-$label.time" "$inlet" validate -c "$task" --json ${VALIDATE_ARGS:-} \
        >"$dir/validate-$label.json"
    code=$?
    set -e
    # The backends exit once inlet closes its connections: their CPU counts once the server
    # has reaped them (an exited, unreaped one shows none).
    sleep 2
    cpu1=$(server_cpu)
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    [ "$code" = "$expect" ] || fail "inlet validate exited $code, not $expect: $(cat "$dir/validate-$label.json")"
    read -r ranges ranges_differing rows_by_inlet < <("$py" -c '
import json, sys
t = json.load(open(sys.argv[1]))["tables"][0]
print(*(t.get(k, "-") for k in ("ranges_compared", "ranges_differing", "rows_read_from_source")))
' "$dir/validate-$label.json")

    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$dir/validate-$label.time" \
        | awk -F: '{ if (NF == 3) print $1 * 3600 + $2 * 60 + $3; else print $1 * 60 + $2 }')
    rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$dir/validate-$label.time")
    user=$(awk -F': ' '/User time/ {print $2}' "$dir/validate-$label.time")
    sys=$(awk -F': ' '/System time/ {print $2}' "$dir/validate-$label.time")
    stats=$(q -d "$db" -F ' ' -c "SELECT coalesce(sum(rows), 0), coalesce(sum(shared_blks_read), 0),
                coalesce(sum(shared_blks_hit), 0), count(*)
            FROM pg_stat_statements WHERE query ILIKE '%lineitem%' AND query NOT ILIKE '%pg_stat_activity%'")
    read -r rows_read blks_read blks_hit statements <<<"$stats"
    longest_xact=$(awk '{ if ($2 > m) m = $2 } END { printf "%.1f", m }' "$sampler_out")
    longest_lock=$(awk '$3 == "t" { if ($2 > m) m = $2 } END { printf "%.1f", m }' "$sampler_out")
    echo "bench-validate: statements on lineitem (pg_stat_statements, top 5 by time):"
    q -d "$db" -F ' | ' -c "SELECT calls, rows, round(total_exec_time::numeric / 1000, 1) || ' s',
                left(regexp_replace(query, '\s+', ' ', 'g'), 110)
            FROM pg_stat_statements WHERE query ILIKE '%lineitem%' AND query NOT ILIKE '%pg_stat_activity%'
            ORDER BY total_exec_time DESC LIMIT 5"
    echo "bench: validate-$label rows=$rows wall_s=$wall peak_rss_mb=$((rss_kb / 1024))" \
        "inlet_cpu_s=$(echo "$user + $sys" | bc) server_cpu_s=$(echo "$cpu1 - $cpu0" | bc)" \
        "rows_read=$rows_read blocks_read=$blks_read blocks_hit=$blks_hit" \
        "longest_xact_s=$longest_xact longest_lock_s=$longest_lock" \
        "ranges=$ranges ranges_differing=$ranges_differing rows_read_by_inlet=$rows_by_inlet"
}

for kind in "${kinds[@]}"; do
    out="$(cd "$dir" && pwd)/validate-$kind"
    task="$dir/validate-$kind.toml"
    case "$kind" in
    parquet) target="kind = \"parquet\"
url = \"$out\"" ;;
    iceberg) target="kind = \"iceberg\"
warehouse = \"$out\"" ;;
    *) fail "unknown target kind $kind (parquet or iceberg)" ;;
    esac
    cat >"$task" <<EOF
# generated by scripts/bench-validate.sh
[task]
name = "validate-$kind"
mode = "full-load"

[source]
kind = "postgres"
url = "postgres://postgres@127.0.0.1:$port/$db"
tls = "disable"

[target]
$target

[tables]
include = ["public.lineitem"]

[full_load]
workers = 2
EOF
    rm -rf "$out"
    echo "bench-validate: $inlet full-load -c $task"
    /usr/bin/time -f "full-load wall_s=%e peak_rss_kb=%M" "$inlet" full-load -c "$task" \
        || fail "inlet full-load exited non-zero"

    measure "$kind" 0
    if [ "$kind" = parquet ] && [ "${BENCH_VALIDATE_CHANGE:-1}" = 1 ]; then
        # One value changed in the target: its one key range is read, the rest is not.
        "$py" -c '
import glob, os, sys
import pyarrow as pa, pyarrow.parquet as pq
f = sorted(glob.glob(os.path.join(sys.argv[1], "public", "lineitem", "LOAD*.parquet")))[0]
t = pq.read_table(f)
comment = t.column("l_comment").to_pylist()
comment[1000] = "changed by bench-validate"
t = t.set_column(t.schema.get_field_index("l_comment"), "l_comment", pa.array(comment, t.schema.field("l_comment").type))
pq.write_table(t, f + ".tmp")
os.replace(f + ".tmp", f)
' "$out"
        measure "$kind-1-changed" 1
    fi
done
