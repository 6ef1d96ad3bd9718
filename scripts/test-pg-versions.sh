#!/usr/bin/env bash
# Run the PostgreSQL end-to-end suites against the other major versions (14, 16, 17, 18; the
# default `cargo nextest run --workspace` of `make test` covers 15 from Debian), one version
# after another, each against the server binaries scripts/setup-pg-versions.sh cached.
#
#   scripts/test-pg-versions.sh             14 16 17 18
#   scripts/test-pg-versions.sh 17 18       just these (15 too: Debian's, all its PostgreSQL suites)
#
# Every version runs even when an earlier one failed, so the log shows every failure; the exit
# code is 1 when any version failed. Each run starts and ends with a "=== PostgreSQL N" line and
# the summary at the end names each version's result.
#
# The heaviest tests (the soaks, the 5M-row transaction, the millions-row loads, the long
# kill/restart workloads, the table swap under load, and three that exercise inlet rather than
# the server: another engine's Iceberg commits, an idle-connection flood, a failing S3 load) run
# on 15 (the default run) and 18 (the newest) only: on 14, 16 and 17 they would add ~2.5
# minutes each to CI. The kill/restart tests of pg_cdc
# and the service suite's restarts still run on every version.
set -uo pipefail

CARGO=${CARGO:-cargo}
VERSIONS=("$@")
[ ${#VERSIONS[@]} -eq 0 ] && VERSIONS=(14 16 17 18)

# The suites that start a PostgreSQL server of PG_BIN (testkit's PgServer::start). pg_versions
# is not one: it starts the majors it tests itself, in the default run.
SUITES=(pg_full_load pg_cdc pg_iceberg pg_safety pg_source_events faults service column_names)
# Versions that run the heavy tests too (15 is the default run of make test).
FULL_VERSIONS=" 15 18 "
HEAVY=(
    soak_random_events
    a_five_million_row_transaction_is_written_in_parts
    parallel_load_of_millions_matches_source_checksum
    a_joining_table_loads_while_the_others_stream
    iceberg_tables_equal_the_source_across_sigkills
    iceberg_tables_equal_the_source_through_restarts_identity_changes_and_kills
    restarts_identity_changes_and_kills_keep_every_change_exactly_once
    a_table_swapped_by_an_online_schema_change_is_loaded_again
    commits_of_another_engine_between_inlet_commits_are_kept
    idle_connection_flood_leaves_health_and_streaming_alone
    full_load_failing_in_one_table_on_s3_leaves_no_partial_table
    a_killed_full_load_resumes_into_parquet
    a_killed_full_load_resumes_into_iceberg
    a_table_written_after_a_killed_load_resumes_by_key_ranges
    a_page_ranged_table_written_after_a_killed_load_is_loaded_from_its_start
    a_page_ranged_load_analyzed_before_its_restart_resumes_in_page_ranges
    a_fleet_of_three_daemons_keeps_one_writer_per_task_through_a_kill_and_a_pause
    two_daemons_on_one_mariadb_task_run_it_once_and_a_sigkill_hands_it_over
    a_paused_owner_writes_nothing_once_another_daemon_took_its_task
    a_paused_owners_initial_load_is_finished_by_the_daemon_that_takes_the_task
    a_paused_owners_mariadb_initial_load_is_finished_by_the_daemon_that_takes_the_task
    a_daemon_with_a_shorter_lease_waits_by_the_owners_lease
    a_lone_daemon_stalled_past_its_fence_runs_its_task_again
    max_tasks_spreads_the_tasks_and_a_stopped_daemon_hands_its_task_over_at_once
    a_full_load_task_runs_once_in_a_fleet_and_again_in_a_daemon_started_later
)

cache=$(dirname "$0")/setup-pg-versions.sh
cache=$("$cache" --dir)

suites_expr=""
for s in "${SUITES[@]}"; do
    suites_expr+="${suites_expr:+ | }binary(=$s)"
done
heavy_expr=""
for t in "${HEAVY[@]}"; do
    heavy_expr+="${heavy_expr:+ | }test(=$t)"
done

nt_flags=(--workspace --no-fail-fast)
if $CARGO nextest run --help 2>/dev/null | grep -q -- '--no-tests'; then nt_flags+=(--no-tests=warn); fi

results=()
failed=0
for v in "${VERSIONS[@]}"; do
    bin=$cache/$v/bin
    [ "$v" = 15 ] && bin=${PG15_BIN:-/usr/lib/postgresql/15/bin}
    if [[ "$FULL_VERSIONS" == *" $v "* ]]; then
        expr="($suites_expr)"
        scope="all PostgreSQL suites"
    else
        expr="($suites_expr) & not ($heavy_expr)"
        scope="PostgreSQL suites without the heavy tests"
    fi
    echo
    echo "=== PostgreSQL $v ($("$bin/postgres" --version 2>/dev/null || echo 'not installed')): $scope, PG_BIN=$bin"
    start=$(date +%s)
    if [ ! -x "$bin/postgres" ]; then
        echo "=== PostgreSQL $v: no server in $bin (run make setup)"
        rc=1
    else
        PG_BIN=$bin $CARGO nextest run "${nt_flags[@]}" -E "$expr"
        rc=$?
    fi
    secs=$(($(date +%s) - start))
    if [ $rc -eq 0 ]; then
        results+=("PostgreSQL $v: passed (${secs} s)")
    else
        results+=("PostgreSQL $v: FAILED, exit $rc (${secs} s)")
        failed=1
    fi
    echo "=== PostgreSQL $v: ${results[-1]#*: }"
done

echo
echo "=== PostgreSQL versions summary"
printf '    %s\n' "${results[@]}"
exit $failed
