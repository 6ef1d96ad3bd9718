#!/usr/bin/env python3
"""MySQL/MariaDB side of `make bench` (run with the project venv's python), against the sandbox
MariaDB of scripts/mariadb-sandbox.sh (user root over TCP, no password).

    bench-mysql.py load   --port P [--db bench] [--sf 1] [--tmp DIR]
        make sure DB.lineitem holds TPC-H lineitem at scale factor SF: generated with DuckDB's
        tpch extension, written to a tab-separated file in DIR and loaded with
        LOAD DATA LOCAL INFILE (binary log off for the load), unless already there
    bench-mysql.py peer   --port P [--db bench] --out FILE
        the peer: DuckDB + its mysql extension, COPY DB.lineitem to one zstd Parquet file
    bench-mysql.py report --rows N --bytes N --peer JSON [--inlet JSON]
        print the human lines and the machine line
            bench: mysql-fullload-parquet inlet_rows_per_s=N peer_rows_per_s=N ratio=R inlet_peak_rss_mb=N
    bench-mysql.py cdc    --port P --inlet BIN [--dir .bench/mysql-cdc] [--rate 1000] ...
        binlog change capture -> Parquet change files with `inlet run` (mode cdc):

        1. Apply rate. With inlet stopped, a backlog of transactions (each updates 500 rows,
           inserts 250, deletes 250) accumulates in the binary log; inlet is started and timed
           until its checkpoint (<out>/_inlet/<task>/checkpoint, JSON `position`: (binlog file
           number << 32) | offset) reaches SHOW MASTER STATUS. changes_per_s = change rows
           written / catch-up time. Peak RSS is inlet's VmHWM at the end.
        2. Lag. Clients (mariadb command-line clients, --clients of them, paced to --rate
           transactions/s in all) run a mixed transaction for --seconds with inlet running: it
           updates a random account, inserts a history row and deletes the history row inserted
           200 transactions earlier (3 changes). For every change row written, lag = the change file's write
           time - the transaction's commit time. MariaDB's binlog stamps events in whole
           seconds, so `_inlet_commit_ts` is the commit second; the rows the clients write also
           carry NOW(6) in microseconds (column mtime_us), so a transaction's commit time is
           taken as max(_inlet_commit_ts, the largest mtime_us of its rows), both lower bounds
           of the true commit time (so the lag is never under-reported). p50 and p99 over all
           rows; the lag from `_inlet_commit_ts` alone is printed too.

        Ends with the machine line
            bench: mysql-cdc-parquet changes_per_s=N lag_p50_ms=N lag_p99_ms=N peak_rss_mb=N

Row counts of Parquet output: scripts/bench-tpch.py count PATH_OR_GLOB.
"""

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from benchlib import free_port, peak_rss_mb, report_full_load

TABLE = "lineitem"

# TPC-H lineitem with the spec's types (keys as BIGINT so larger scale factors fit), the same
# as the PostgreSQL benchmark's table.
LINEITEM_DDL = """
CREATE TABLE {db}.lineitem (
    l_orderkey      BIGINT        NOT NULL,
    l_partkey       BIGINT        NOT NULL,
    l_suppkey       BIGINT        NOT NULL,
    l_linenumber    INT           NOT NULL,
    l_quantity      DECIMAL(15,2) NOT NULL,
    l_extendedprice DECIMAL(15,2) NOT NULL,
    l_discount      DECIMAL(15,2) NOT NULL,
    l_tax           DECIMAL(15,2) NOT NULL,
    l_returnflag    CHAR(1)       NOT NULL,
    l_linestatus    CHAR(1)       NOT NULL,
    l_shipdate      DATE          NOT NULL,
    l_commitdate    DATE          NOT NULL,
    l_receiptdate   DATE          NOT NULL,
    l_shipinstruct  CHAR(25)      NOT NULL,
    l_shipmode      CHAR(10)      NOT NULL,
    l_comment       VARCHAR(44)   NOT NULL,
    PRIMARY KEY (l_orderkey, l_linenumber)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='{comment}'
"""

COLUMNS = [
    "l_orderkey", "l_partkey", "l_suppkey", "l_linenumber", "l_quantity", "l_extendedprice",
    "l_discount", "l_tax", "l_returnflag", "l_linestatus", "l_shipdate", "l_commitdate",
    "l_receiptdate", "l_shipinstruct", "l_shipmode", "l_comment",
]


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def sql_str(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "''") + "'"


def client_args(port, db=None):
    args = ["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(port), "-u", "root",
            "--batch", "--skip-column-names"]
    if db:
        args += ["-D", db]
    return args


def my(port, sql, db=None, extra=()):
    """Runs SQL with the mariadb client; returns the output rows (tab-separated), or exits."""
    out = subprocess.run([*client_args(port, db), *extra, "-e", sql], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench: mariadb -e {sql[:200]!r} failed: {out.stderr.strip()}")
    return out.stdout.strip()


def marker(sf, rows):
    return f"inlet-bench tpch sf={sf} rows={rows}"


def cmd_load(args):
    db = args.db
    my(args.port, f"CREATE DATABASE IF NOT EXISTS {db}")
    comment = my(args.port, "SELECT table_comment FROM information_schema.tables "
                 f"WHERE table_schema = '{db}' AND table_name = '{TABLE}'")
    if comment.startswith(f"inlet-bench tpch sf={args.sf} rows="):
        want = int(comment.rsplit("=", 1)[1])
        have = int(my(args.port, f"SELECT count(*) FROM {db}.{TABLE}"))
        if have == want:
            log(f"{db}.{TABLE} already loaded (sf={args.sf}, {have} rows)")
            return 0
        log(f"{db}.{TABLE} has {have} rows, expected {want}: reloading")

    import duckdb
    import duckdb_extensions

    t0 = time.perf_counter()
    log(f"generating TPC-H sf={args.sf} with DuckDB's tpch extension")
    con = duckdb.connect()
    duckdb_extensions.import_extension("tpch", con=con)
    con.sql("LOAD tpch")
    con.execute(f"CALL dbgen(sf={args.sf})")
    rows = con.execute("SELECT count(*) FROM lineitem").fetchone()[0]
    os.makedirs(args.tmp, exist_ok=True)
    tsv = os.path.abspath(os.path.join(args.tmp, "lineitem.tsv"))
    cols = ", ".join(COLUMNS)
    # In primary-key order, so InnoDB appends to its clustered index. TPC-H text has no tabs,
    # newlines or backslashes: plain tab-separated text is what LOAD DATA reads by default.
    con.execute(f"COPY (SELECT {cols} FROM lineitem ORDER BY l_orderkey, l_linenumber) TO {sql_str(tsv)} "
                "(FORMAT csv, DELIMITER '\t', HEADER false, QUOTE '', ESCAPE '')")
    con.close()
    t1 = time.perf_counter()
    log(f"generated {rows} lineitem rows in {t1 - t0:.1f}s; loading into MariaDB")

    my(args.port, f"DROP TABLE IF EXISTS {db}.{TABLE}")
    my(args.port, LINEITEM_DDL.format(db=db, comment="loading"))
    my(args.port,
       "SET sql_log_bin = 0; SET unique_checks = 0; "
       f"LOAD DATA LOCAL INFILE {sql_str(tsv)} INTO TABLE {db}.{TABLE} ({cols})",
       extra=["--local-infile=1"])
    os.unlink(tsv)
    t2 = time.perf_counter()
    log(f"LOAD DATA in {t2 - t1:.1f}s; ANALYZE TABLE")
    my(args.port, f"ANALYZE TABLE {db}.{TABLE}")

    have = int(my(args.port, f"SELECT count(*) FROM {db}.{TABLE}"))
    if have != rows:
        log(f"FAILED: loaded {have} rows, generated {rows}")
        return 1
    my(args.port, f"SET sql_log_bin = 0; ALTER TABLE {db}.{TABLE} COMMENT = {sql_str(marker(args.sf, rows))}")
    log(f"loaded {db}.{TABLE}: {rows} rows in {time.perf_counter() - t0:.1f}s total")
    return 0


def cmd_peer(args):
    import duckdb
    import duckdb_extensions

    con = duckdb.connect()
    duckdb_extensions.import_extension("mysql", con=con)
    con.sql("LOAD mysql")
    con.execute(f"ATTACH 'host=127.0.0.1 port={args.port} user=root database={args.db}' AS my (TYPE mysql, READ_ONLY)")
    con.execute(
        f"COPY (SELECT * FROM my.{args.db}.{TABLE}) TO {sql_str(args.out)} (FORMAT parquet, COMPRESSION zstd)"
    )
    return 0


def cmd_report(args):
    return report_full_load(
        args.case, args.rows, args.bytes, args.table, "InnoDB data_length", args.inlet, args.peer
    )


# --- change data capture --------------------------------------------------------------------

CDC_DB = "cdcbench"
CDC_TASK = "bench-mysql-cdc"
ACCOUNTS = 200_000
LAG_DELETE = 200
NOW_US = "CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)"


def clog(msg):
    print(f"bench-mysql-cdc: {msg}", file=sys.stderr, flush=True)


def master_position(port):
    """SHOW MASTER STATUS as an inlet position: (binlog file number << 32) | offset."""
    row = my(port, "SHOW MASTER STATUS").split("\t")
    name, offset = row[0], int(row[1])
    return (int(name.rsplit(".", 1)[1]) << 32) | offset


def checkpoint_position(path):
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    if text.lstrip().startswith("{"):
        # The JSON form: "position" is 16 hex digits.
        return int(json.loads(text)["position"], 16)
    for line in text.splitlines():
        # The text form of versions before the typed checkpoint.
        if line.startswith("position="):
            return int(line.split("=", 1)[1].strip(), 16)
    return None


class Inlet:
    def __init__(self, binary, task_file, checkpoint, log_path):
        self.binary, self.task_file, self.checkpoint, self.log_path = binary, task_file, checkpoint, log_path
        self.proc = None

    def start(self):
        logf = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [self.binary, "run", "-c", self.task_file, "--listen", f"127.0.0.1:{free_port()}"],
            stdout=logf, stderr=logf, env={**os.environ, "RUST_LOG": "warn"})
        logf.close()

    def wait_caught_up(self, port, timeout=900):
        """Seconds from now until the checkpoint reaches the server's current binlog position."""
        target = master_position(port)
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                self.fail(f"inlet exited with {self.proc.returncode}")
            pos = checkpoint_position(self.checkpoint)
            if pos is not None and pos >= target:
                return time.monotonic() - start
            time.sleep(0.02)
        self.fail(f"inlet did not reach binlog position {target:016X} in {timeout} s "
                  f"(checkpoint {checkpoint_position(self.checkpoint)})")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        if self.proc.wait(timeout=60) != 0:
            self.fail(f"inlet exited with {self.proc.returncode} on SIGTERM")

    def fail(self, msg):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        try:
            with open(self.log_path) as f:
                tail = f.read()[-4000:]
        except OSError:
            tail = ""
        sys.exit(f"bench-mysql-cdc: {msg}\n--- {self.log_path} (tail) ---\n{tail}")


def change_files(out):
    return set(glob.glob(f"{out}/{CDC_DB}/*/*.parquet"))


def count_rows(paths):
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def run_clients(port, clients, rate, seconds):
    """`clients` mariadb clients, fed transactions round-robin at `rate` transactions/s in all
    (0 = as fast as the pipes take them) for `seconds`. Returns the transactions sent."""
    import random

    procs = [subprocess.Popen([*client_args(port, CDC_DB)], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(clients)]
    rng = random.Random(42)
    # The clients choose the history keys, so that each transaction can delete a row inserted
    # LAG_DELETE transactions earlier (committed by then at any rate the server keeps up with).
    hid0 = 1_000_000_000
    sent = 0
    start = time.monotonic()
    end = start + seconds
    interval = 1.0 / rate if rate > 0 else 0.0
    next_t = start
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if interval and now < next_t:
            time.sleep(next_t - now)
            continue
        aid = rng.randint(1, ACCOUNTS)
        delta = rng.randint(-5000, 5000)
        txn = (f"BEGIN; UPDATE accounts SET abalance = abalance + {delta}, mtime_us = {NOW_US} WHERE aid = {aid}; "
               f"INSERT INTO history (hid, aid, delta, mtime_us) VALUES ({hid0 + sent}, {aid}, {delta}, {NOW_US}); "
               f"DELETE FROM history WHERE hid = {hid0 + sent - LAG_DELETE}; COMMIT;\n")
        p = procs[sent % clients]
        p.stdin.write(txn)
        p.stdin.flush()
        sent += 1
        next_t += interval
    behind = 0
    for p in procs:
        p.stdin.close()
    for p in procs:
        t0 = time.monotonic()
        err = p.stderr.read()
        if p.wait() != 0:
            sys.exit(f"bench-mysql-cdc: a client failed: {err.strip()}")
        behind = max(behind, time.monotonic() - t0)
    took = time.monotonic() - start
    return sent, took, behind


def lag_figures(paths):
    """(lags from max(commit second, rows' NOW(6)), lags from _inlet_commit_ts alone), in ms."""
    import pyarrow.parquet as pq

    files = []
    txn_time = {}
    for path in paths:
        written_us = os.stat(path).st_mtime_ns // 1000
        t = pq.read_table(path, columns=["_inlet_commit_ts", "_inlet_lsn", "mtime_us"])
        commits = t.column("_inlet_commit_ts").cast("int64").to_pylist()
        lsns = t.column("_inlet_lsn").to_pylist()
        mtimes = t.column("mtime_us").to_pylist()
        for lsn, m in zip(lsns, mtimes):
            if m is not None and m > txn_time.get(lsn, 0):
                txn_time[lsn] = m
        files.append((written_us, commits, lsns))
    refined, raw = [], []
    for written_us, commits, lsns in files:
        for c, lsn in zip(commits, lsns):
            raw.append((written_us - c) / 1000)
            refined.append((written_us - max(c, txn_time.get(lsn, 0))) / 1000)
    refined.sort()
    raw.sort()
    return refined, raw


def pct(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


def cmd_cdc(a):
    port = a.port
    # A fresh database and output for every run; inlet (mode cdc) starts at the binlog's end.
    my(port, f"DROP DATABASE IF EXISTS {CDC_DB}")
    my(port, f"CREATE DATABASE {CDC_DB}")
    my(port, f"""
        CREATE TABLE accounts (aid BIGINT PRIMARY KEY, bid INT NOT NULL, abalance INT NOT NULL,
                               filler CHAR(84), mtime_us BIGINT NOT NULL DEFAULT 0);
        CREATE TABLE history (hid BIGINT AUTO_INCREMENT PRIMARY KEY, aid BIGINT NOT NULL,
                              delta INT NOT NULL, mtime_us BIGINT NOT NULL);
        INSERT INTO accounts SELECT seq, seq % 10, 0, '', 0 FROM seq_1_to_{ACCOUNTS};""", db=CDC_DB)
    shutil.rmtree(a.dir, ignore_errors=True)
    os.makedirs(a.dir)
    out = os.path.abspath(os.path.join(a.dir, "out"))
    task_file = os.path.join(a.dir, "task.toml")
    with open(task_file, "w") as f:
        f.write(f"""# generated by scripts/bench-mysql.py
[task]
name = "{CDC_TASK}"
mode = "cdc"
[source]
kind = "mysql"
url = "mysql://root@127.0.0.1:{port}/{CDC_DB}"
tls = "disable"
heartbeat_seconds = 1
[target]
kind = "parquet"
url = "{out}"
[tables]
include = ["{CDC_DB}.*"]
[cdc]
flush_interval_ms = {a.flush_ms}
flush_rows = 500000
""")
    inlet = Inlet(a.inlet, task_file, os.path.join(out, "_inlet", CDC_TASK, "checkpoint"),
                  os.path.join(a.dir, "inlet.log"))

    # The first run fixes the starting position.
    inlet.start()
    inlet.wait_caught_up(port)
    inlet.stop()

    # 1. Backlog while inlet is stopped.
    clog(f"building a backlog of {a.backlog_txns} transactions (500 updates, 250 inserts, 250 deletes each)")
    script = os.path.join(a.dir, "backlog.sql")
    with open(script, "w") as f:
        for i in range(a.backlog_txns):
            lo = (i * 500) % ACCOUNTS + 1
            h = i * 250
            f.write(
                f"BEGIN; UPDATE accounts SET abalance = abalance + 1 WHERE aid BETWEEN {lo} AND {lo + 499};"
                f" INSERT INTO history (hid, aid, delta, mtime_us) SELECT {h} + seq, {lo - 1} + seq, 1, 0 FROM seq_1_to_250;"
                f" DELETE FROM history WHERE hid > {h} AND hid <= {h + 250}; COMMIT;\n"
            )
    t0 = time.monotonic()
    with open(script) as f:
        subprocess.run(client_args(port, CDC_DB), stdin=f, check=True, stdout=subprocess.DEVNULL)
    clog(f"backlog written in {time.monotonic() - t0:.1f} s; starting inlet")
    before = change_files(out)
    inlet.start()
    took = inlet.wait_caught_up(port)
    rss = peak_rss_mb(inlet.proc.pid)
    # The checkpoint is committed with the data: what it covers is in files already.
    changes = count_rows(change_files(out) - before)
    inlet.stop()
    expected = a.backlog_txns * 1000
    if changes != expected:
        sys.exit(f"bench-mysql-cdc: FAILED: when the checkpoint reached the end of the binlog, the backlog's "
                 f"change files held {changes} rows, expected {expected}")
    rate = changes / took
    clog(f"apply: {changes} changes in {took:.2f} s = {rate:,.0f} changes/s, peak RSS {rss} MB")

    # 2. Lag under a steady client load.
    before = change_files(out)
    inlet.start()
    inlet.wait_caught_up(port)
    clog(f"load: {a.clients} clients for {a.seconds} s at {a.rate or 'unlimited'} transactions/s "
         "(an update, an insert and a delete each)")
    sent, load_s, drain_s = run_clients(port, a.clients, a.rate, a.seconds)
    clog(f"load: {sent} transactions in {load_s:.1f} s ({sent / load_s:,.0f}/s; "
         f"the clients finished {drain_s:.2f} s after the last was sent)")
    inlet.wait_caught_up(port)
    rss = max(rss, peak_rss_mb(inlet.proc.pid))
    inlet.stop()
    lags, raw = lag_figures(change_files(out) - before)
    expected = 3 * sent - min(sent, LAG_DELETE)
    if len(lags) != expected:
        sys.exit(f"bench-mysql-cdc: FAILED: the change files of the load hold {len(lags)} rows, expected {expected}")
    if not lags:
        sys.exit("bench-mysql-cdc: no changes captured under load")
    p50, p99 = pct(lags, 0.5), pct(lags, 0.99)
    clog(f"lag under load: {len(lags)} changes, p50 {p50:.0f} ms, p99 {p99:.0f} ms "
         f"(from _inlet_commit_ts alone, whole seconds: p50 {pct(raw, 0.5):.0f} ms, p99 {pct(raw, 0.99):.0f} ms; "
         f"flush interval {a.flush_ms} ms)")
    print(f"bench: mysql-cdc-parquet changes_per_s={rate:.0f} lag_p50_ms={p50:.0f} lag_p99_ms={p99:.0f} peak_rss_mb={rss}")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("load")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--db", default="bench")
    s.add_argument("--sf", default="1")
    s.add_argument("--tmp", default=".bench")
    s = sub.add_parser("peer")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--db", default="bench")
    s.add_argument("--out", required=True)
    s = sub.add_parser("report")
    s.add_argument("--rows", type=int, required=True)
    s.add_argument("--bytes", type=int, required=True)
    s.add_argument("--peer", required=True)
    s.add_argument("--inlet")
    s.add_argument("--table", default="bench.lineitem")
    s.add_argument("--case", default="mysql-fullload-parquet")
    s = sub.add_parser("cdc")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--inlet", default="target/release/inlet")
    s.add_argument("--dir", default=".bench/mysql-cdc")
    s.add_argument("--backlog-txns", type=int, default=1000)
    s.add_argument("--seconds", type=int, default=15)
    s.add_argument("--flush-ms", type=int, default=1000)
    s.add_argument("--clients", type=int, default=4)
    s.add_argument("--rate", type=int, default=1000, help="transactions/s in the lag phase; 0 = unlimited")
    args = p.parse_args()
    return {"load": cmd_load, "peer": cmd_peer, "report": cmd_report, "cdc": cmd_cdc}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
