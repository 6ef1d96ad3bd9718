#!/usr/bin/env bash
# A throw-away MariaDB server (Debian's mariadb-server, 10.11) in a folder of its own, for the
# benchmarks.
#
#   scripts/mariadb-sandbox.sh start DIR PORT   mariadb-install-db DIR/data if missing, then
#                                               start (no-op if already running on PORT)
#   scripts/mariadb-sandbox.sh stop DIR         stop if running (no-op otherwise)
#   scripts/mariadb-sandbox.sh status DIR       exit 0 if running, 3 if not
#
# The server listens on 127.0.0.1:PORT only, with the binary log in the form inlet requires
# (log_bin, binlog_format=ROW, binlog_row_image=FULL, binlog_row_metadata=FULL, server_id=1).
# User root has no password and every privilege (REPLICATION SLAVE/CLIENT included), over TCP
# (root@127.0.0.1) and over the unix socket DIR/mariadbd.sock:
#
#   mariadb -h 127.0.0.1 -P PORT -u root
#
# Durability is off (innodb_flush_log_at_trx_commit=0, sync_binlog=0, no doublewrite): never
# put data you care about in it.
#
# mariadbd refuses to run as root without --user: when run as root, DIR is handed to the
# `mysql` system user and the server drops to it.
#
# MARIADB_BUFFER_POOL sets innodb_buffer_pool_size (default 2G, so the benchmark's tables stay
# cached); MARIADB_BIN the folder of mariadbd (default: found in /usr/sbin, /usr/bin).
set -euo pipefail

usage() {
    echo "usage: $0 start DIR PORT | stop DIR | status DIR" >&2
    exit 2
}

die() {
    echo "mariadb-sandbox: $*" >&2
    exit 1
}

[ $# -ge 2 ] || usage
cmd=$1
dir_arg=$2

find_bin() {
    local d
    for d in ${MARIADB_BIN:-} /usr/sbin /usr/bin; do
        if [ -x "$d/$1" ]; then
            echo "$d/$1"
            return 0
        fi
    done
    return 1
}

mariadbd=$(find_bin mariadbd) || die "no mariadbd (install mariadb-server: scripts/setup-system.sh mariadb-server, or set MARIADB_BIN)"
install_db=$(find_bin mariadb-install-db) || die "no mariadb-install-db (install mariadb-server)"
client=$(find_bin mariadb) || die "no mariadb client (install mariadb-client)"

is_root() { [ "$(id -u)" -eq 0 ]; }

abs_dir() {
    mkdir -p "$1"
    (cd "$1" && pwd -P)
}

# The pid of the server running in $1, or nothing.
server_pid() {
    local pid
    pid=$(cat "$1/mariadbd.pid" 2>/dev/null || true)
    [ -n "$pid" ] || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--datadir=$1/data" || return 1
    echo "$pid"
}

admin() {
    "$client" --no-defaults --socket="$1/mariadbd.sock" -uroot --batch --skip-column-names -e "$2"
}

case "$cmd" in
start)
    [ $# -eq 3 ] || usage
    port=$3
    [[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
    dir=$(abs_dir "$dir_arg")
    # unix socket paths are limited to 107 bytes
    [ ${#dir} -le 90 ] || die "DIR path too long for a unix socket: $dir"

    if pid=$(server_pid "$dir"); then
        running_port=$(cat "$dir/port" 2>/dev/null || true)
        if [ -n "$running_port" ] && [ "$running_port" != "$port" ]; then
            die "already running in $dir on port $running_port, not $port: stop it first"
        fi
        echo "mariadb-sandbox: already running in $dir on port $port (pid $pid)"
        exit 0
    fi

    user_args=()
    if is_root; then
        id mysql >/dev/null 2>&1 || die "running as root but there is no 'mysql' user"
        user_args=(--user=mysql)
    fi
    mkdir -p "$dir/tmp"
    if is_root; then
        chown -R mysql:mysql "$dir"
        runuser -u mysql -- test -x "$dir" -a -w "$dir" \
            || die "user mysql cannot enter $dir (a parent folder is not world-searchable?)"
    fi

    if [ ! -d "$dir/data/mysql" ]; then
        rm -rf "$dir/data"
        echo "mariadb-sandbox: mariadb-install-db $dir/data"
        "$install_db" --no-defaults --datadir="$dir/data" --tmpdir="$dir/tmp" \
            --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
            "${user_args[@]}" >"$dir/install.log" 2>&1 \
            || { cat "$dir/install.log" >&2; die "mariadb-install-db failed"; }
    fi

    rm -f "$dir/mariadbd.sock" "$dir/mariadbd.pid"
    : >"$dir/error.log"
    if is_root; then chown mysql:mysql "$dir/error.log"; fi
    echo "$port" >"$dir/port"
    setsid "$mariadbd" --no-defaults \
        --datadir="$dir/data" \
        --tmpdir="$dir/tmp" \
        --socket="$dir/mariadbd.sock" \
        --pid-file="$dir/mariadbd.pid" \
        --log-error="$dir/error.log" \
        --port="$port" \
        --bind-address=127.0.0.1 \
        --skip-name-resolve \
        --server-id=1 \
        --log-bin=mariadb-bin \
        --binlog-format=ROW \
        --binlog-row-image=FULL \
        --binlog-row-metadata=FULL \
        --binlog-expire-logs-seconds=604800 \
        --max-binlog-size=1G \
        --character-set-server=utf8mb4 \
        --collation-server=utf8mb4_general_ci \
        --innodb-buffer-pool-size="${MARIADB_BUFFER_POOL:-2G}" \
        --innodb-log-file-size=512M \
        --innodb-flush-log-at-trx-commit=0 \
        --innodb-doublewrite=0 \
        --sync-binlog=0 \
        --max-connections=200 \
        --local-infile=1 \
        "${user_args[@]}" </dev/null >/dev/null 2>&1 &

    ok=0
    for _ in $(seq 600); do
        if ! kill -0 $! 2>/dev/null; then
            break
        fi
        if [ -S "$dir/mariadbd.sock" ] && admin "$dir" "SELECT 1" >/dev/null 2>&1; then
            ok=1
            break
        fi
        sleep 0.1
    done
    if [ "$ok" != 1 ]; then
        tail -n 20 "$dir/error.log" >&2 || true
        die "could not start MariaDB in $dir on port $port"
    fi
    # Root over TCP: install-db only creates root@localhost (the unix socket).
    admin "$dir" "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
                  GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" \
        || die "could not grant root@127.0.0.1"
    echo "mariadb-sandbox: running in $dir on 127.0.0.1:$port (mariadb -h 127.0.0.1 -P $port -u root)"
    ;;
stop)
    [ $# -eq 2 ] || usage
    [ -d "$dir_arg" ] || { echo "mariadb-sandbox: nothing in $dir_arg"; exit 0; }
    dir=$(abs_dir "$dir_arg")
    if pid=$(server_pid "$dir"); then
        kill -TERM "$pid"
        for _ in $(seq 600); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            die "MariaDB (pid $pid) did not stop within 60 s"
        fi
        echo "mariadb-sandbox: stopped $dir"
    else
        echo "mariadb-sandbox: not running in $dir"
    fi
    ;;
status)
    [ $# -eq 2 ] || usage
    [ -d "$dir_arg" ] || exit 3
    dir=$(abs_dir "$dir_arg")
    if pid=$(server_pid "$dir"); then
        echo "mariadb-sandbox: running in $dir on port $(cat "$dir/port" 2>/dev/null || echo '?') (pid $pid)"
    else
        echo "mariadb-sandbox: not running in $dir"
        exit 3
    fi
    ;;
*)
    usage
    ;;
esac
