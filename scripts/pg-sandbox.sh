#!/usr/bin/env bash
# A throw-away PostgreSQL 15 server in a folder of its own, for the demo and the benchmarks.
#
#   scripts/pg-sandbox.sh start DIR PORT   initdb DIR/data if missing, then start (no-op if running)
#   scripts/pg-sandbox.sh stop DIR         stop if running (no-op otherwise)
#   scripts/pg-sandbox.sh status DIR       exit 0 if running, 3 if not
#
# The server listens on 127.0.0.1:PORT only, trusts every local connection (user postgres,
# no password), has wal_level=logical, and keeps its unix socket in DIR. Durability is off
# (fsync=off): never put data you care about in it.
#
# PostgreSQL refuses to run as root, so when run as root the server runs as the `postgres`
# system user (runuser) and DIR is handed over to that user.
#
# PG_BIN overrides where the server binaries are (default /usr/lib/postgresql/15/bin).
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

usage() {
    echo "usage: $0 start DIR PORT | stop DIR | status DIR" >&2
    exit 2
}

die() {
    echo "pg-sandbox: $*" >&2
    exit 1
}

[ $# -ge 2 ] || usage
cmd=$1
dir_arg=$2

[ -x "$PG_BIN/postgres" ] || die "no PostgreSQL server at $PG_BIN (install postgresql-15, or set PG_BIN)"

as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

abs_dir() {
    mkdir -p "$1"
    (cd "$1" && pwd -P)
}

is_running() {
    # pg_ctl status: 0 running, 3 not running, 4 no data folder
    [ -f "$1/data/PG_VERSION" ] || return 1
    as_pg "$PG_BIN/pg_ctl" -D "$1/data" status >/dev/null 2>&1
}

case "$cmd" in
start)
    [ $# -eq 3 ] || usage
    port=$3
    [[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
    dir=$(abs_dir "$dir_arg")
    # unix socket paths are limited to 107 bytes
    [ ${#dir} -le 90 ] || die "DIR path too long for a unix socket: $dir"

    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user"
        chown postgres: "$dir"
        if [ -d "$dir/data" ]; then chown -R postgres: "$dir/data"; fi
        runuser -u postgres -- test -x "$dir" -a -w "$dir" \
            || die "user postgres cannot enter $dir (a parent folder is not world-searchable?)"
    fi

    if is_running "$dir"; then
        running_port=$(sed -n 4p "$dir/data/postmaster.pid" 2>/dev/null || true)
        if [ -n "$running_port" ] && [ "$running_port" != "$port" ]; then
            die "already running in $dir on port $running_port, not $port: stop it first"
        fi
        echo "pg-sandbox: already running in $dir on port $port"
        exit 0
    fi

    if [ ! -f "$dir/data/PG_VERSION" ]; then
        rm -rf "$dir/data"
        echo "pg-sandbox: initdb $dir/data"
        as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust \
            --encoding=UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
        echo "include_if_exists = 'sandbox.conf'" >>"$dir/data/postgresql.conf"
    fi

    # Rewritten on every start so a changed PORT takes effect.
    cat >"$dir/data/sandbox.conf" <<EOF
# written by scripts/pg-sandbox.sh
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
max_connections = 100
shared_buffers = 256MB
maintenance_work_mem = 256MB
max_wal_size = 4GB
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
EOF
    : >"$dir/postgres.log"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir/data/sandbox.conf" "$dir/postgres.log"
    fi

    if ! as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null; then
        tail -n 20 "$dir/postgres.log" >&2 || true
        die "could not start PostgreSQL in $dir on port $port"
    fi
    echo "pg-sandbox: running in $dir on 127.0.0.1:$port (psql -h 127.0.0.1 -p $port -U postgres)"
    ;;
stop)
    [ $# -eq 2 ] || usage
    [ -d "$dir_arg" ] || { echo "pg-sandbox: nothing in $dir_arg"; exit 0; }
    dir=$(abs_dir "$dir_arg")
    if is_running "$dir"; then
        as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
        echo "pg-sandbox: stopped $dir"
    else
        echo "pg-sandbox: not running in $dir"
    fi
    ;;
status)
    [ $# -eq 2 ] || usage
    [ -d "$dir_arg" ] || exit 3
    dir=$(abs_dir "$dir_arg")
    if is_running "$dir"; then
        echo "pg-sandbox: running in $dir on port $(sed -n 4p "$dir/data/postmaster.pid")"
    else
        echo "pg-sandbox: not running in $dir"
        exit 3
    fi
    ;;
*)
    usage
    ;;
esac
