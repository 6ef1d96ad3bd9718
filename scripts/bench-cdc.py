#!/usr/bin/env python3
"""CDC benchmark: PostgreSQL -> Parquet change files, or -> Iceberg tables, with `inlet run`
(mode cdc).

    scripts/bench-cdc.py --port 54339 --inlet target/release/inlet [--target iceberg]

Two measurements on the sandbox PostgreSQL (scripts/pg-sandbox.sh must have started it):

1. Apply rate. With inlet stopped, a backlog of changes (updates, inserts, deletes in
   transactions of 1000 rows) accumulates in the task's slot; inlet is started and timed until
   the slot confirms the last of them. changes_per_s = backlog / catch-up time. Peak RSS is
   inlet's VmHWM at the end.
2. Lag. pgbench-style clients (pgbench, 4 connections, at --rate transactions/s, default 1000)
   run a mixed update/insert/delete transaction for a while with inlet running; for every change row written, lag is the change
   file's write time minus the transaction's commit time (from `_inlet_commit_ts`). p50 and p99
   over all rows. For Iceberg, the source's WAL insert position is sampled with its clock every
   100 ms during the load; a sample's lag is the time until the first table snapshot whose
   `inlet.position` covers it (snapshot `timestamp-ms`), i.e. source commit to visible snapshot.

3. Memory whatever the transaction size (Parquet only). A fresh inlet follows one transaction
   of --small-txn-rows inserts, then another fresh one a transaction of --large-txn-rows; each
   reports its peak RSS. Bounded memory means rss_ratio (large / small) stays near 1 although
   the transaction is 10 times larger. The server streams the large one while in progress
   (past its logical_decoding_work_mem); server_spill_mb is what it spilled to its own disk.

Ends with machine lines:
    bench: pg-cdc-parquet changes_per_s=N lag_p50_ms=N lag_p99_ms=N peak_rss_mb=N
    bench: pg-cdc-large-txn rows=N apply_rows_per_s=N peak_rss_mb=N small_rows=N small_peak_rss_mb=N rss_ratio=R server_spill_mb=N streamed_txns=N
    bench: pg-cdc-iceberg changes_per_s=N lag_p50_ms=N lag_p99_ms=N peak_rss_mb=N index_bytes_per_row=N
"""

import argparse
import glob
import json
import os
import threading
import urllib.request
import shutil
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq

from benchlib import free_port, peak_rss_mb

DB = "cdcbench"
TASK = "bench-cdc"
SLOT = "inlet_bench_cdc"
ROWS = 200_000


def log(msg):
    print(f"bench-cdc: {msg}", file=sys.stderr, flush=True)


def psql(port, sql, db=DB):
    out = subprocess.run(
        ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", db, "-c", sql],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        sys.exit(f"bench-cdc: psql failed: {out.stderr.strip()}")
    return out.stdout.strip()


def wait_caught_up(port, proc, timeout=600):
    target = psql(port, "SELECT pg_current_wal_insert_lsn()")
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            sys.exit(f"bench-cdc: inlet exited with {proc.returncode}")
        ok = psql(port, f"SELECT confirmed_flush_lsn >= '{target}'::pg_lsn FROM pg_replication_slots WHERE slot_name = '{SLOT}'")
        if ok == "t":
            return time.monotonic() - start
        time.sleep(0.02)
    sys.exit("bench-cdc: inlet did not catch up")


LISTEN = f"127.0.0.1:{free_port()}"


def start_inlet(inlet, task_file):
    return subprocess.Popen([inlet, "run", "-c", task_file, "--listen", LISTEN], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            env={**os.environ, "RUST_LOG": "warn"})


def metric(name):
    """A sample from the running daemon's /metrics, or None."""
    with urllib.request.urlopen(f"http://{LISTEN}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    return None


def lsn_int(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


class WalSampler(threading.Thread):
    """(WAL insert position, server clock) every 100 ms, over one psql session."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.samples = []
        self.stop = threading.Event()
        self.psql = subprocess.Popen(
            ["psql", "-X", "-q", "-At", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", DB],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def run(self):
        while not self.stop.is_set():
            self.psql.stdin.write("SELECT pg_current_wal_insert_lsn() || ' ' || extract(epoch FROM clock_timestamp());\n")
            self.psql.stdin.flush()
            lsn, t = self.psql.stdout.readline().split()
            self.samples.append((lsn_int(lsn), float(t)))
            time.sleep(0.1)

    def finish(self):
        self.stop.set()
        self.join()
        self.psql.stdin.close()
        self.psql.wait()


def iceberg_snapshots(table_dir):
    """(inlet.position, commit time in s) of every snapshot of an Iceberg table."""
    metas = glob.glob(f"{table_dir}/metadata/v*.metadata.json")
    latest = max(metas, key=lambda p: int(os.path.basename(p)[1:].split(".")[0]))
    with open(latest) as f:
        meta = json.load(f)
    out = []
    for snap in meta.get("snapshots", []):
        pos = snap.get("summary", {}).get("inlet.position")
        if pos:
            out.append((int(pos, 16), snap["timestamp-ms"] / 1000))
    return sorted(out, key=lambda x: x[1])


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    if proc.wait(timeout=60) != 0:
        sys.exit(f"bench-cdc: inlet exited with {proc.returncode} on SIGTERM")


def count_rows(paths):
    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=54339)
    ap.add_argument("--inlet", default="target/release/inlet")
    ap.add_argument("--dir", default=".bench/cdc")
    ap.add_argument("--backlog-txns", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--flush-ms", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--target", choices=["parquet", "iceberg"], default="parquet")
    ap.add_argument("--small-txn-rows", type=int, default=200_000)
    ap.add_argument("--large-txn-rows", type=int, default=2_000_000)
    ap.add_argument("--rate", type=int, default=1000, help="pgbench transactions/s in the lag phase; 0 = unlimited")
    a = ap.parse_args()
    iceberg = a.target == "iceberg"

    port = a.port
    # A fresh database, slot and output for every run.
    psql(port, f"SELECT pg_drop_replication_slot('{SLOT}') FROM pg_replication_slots WHERE slot_name = '{SLOT}'", db="postgres")
    psql(port, f"DROP DATABASE IF EXISTS {DB}", db="postgres")
    psql(port, f"CREATE DATABASE {DB}", db="postgres")
    psql(port, f"""
        CREATE TABLE accounts (aid bigint PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL, filler char(84));
        CREATE TABLE history (hid bigserial PRIMARY KEY, aid bigint NOT NULL, delta int NOT NULL, mtime timestamptz NOT NULL);
        INSERT INTO accounts SELECT g, g % 10, 0, '' FROM generate_series(1, {ROWS}) g;""")
    psql(port, "VACUUM ANALYZE accounts")
    shutil.rmtree(a.dir, ignore_errors=True)
    os.makedirs(a.dir)
    out = os.path.abspath(os.path.join(a.dir, "out"))
    target = f'kind = "iceberg"\nwarehouse = "{out}"' if iceberg else f'kind = "parquet"\nurl = "{out}"'
    task_file = os.path.join(a.dir, "task.toml")
    with open(task_file, "w") as f:
        f.write(f"""[task]
name = "{TASK}"
mode = "cdc"
[source]
kind = "postgres"
url = "postgres://postgres@127.0.0.1:{port}/{DB}"
tls = "disable"
[target]
{target}
[tables]
include = ["public.*"]
[cdc]
flush_interval_ms = {a.flush_ms}
flush_rows = 500000
""")
    inlet = a.inlet

    # The slot starts at the first run.
    proc = start_inlet(inlet, task_file)
    wait_caught_up(port, proc)
    stop(proc)

    # 1. Backlog while inlet is stopped: each transaction updates 500 rows, inserts 250, deletes 250.
    log(f"building a backlog of {a.backlog_txns} transactions")
    script = os.path.join(a.dir, "backlog.sql")
    with open(script, "w") as f:
        for i in range(a.backlog_txns):
            lo = (i * 500) % ROWS + 1
            f.write(
                f"BEGIN; UPDATE accounts SET abalance = abalance + 1 WHERE aid BETWEEN {lo} AND {lo + 499};"
                f" INSERT INTO history (aid, delta, mtime) SELECT g, 1, now() FROM generate_series({lo}, {lo + 249}) g;"
                f" DELETE FROM history WHERE hid <= {(i + 1) * 250} AND hid > {(i + 1) * 250 - 250}; COMMIT;\n"
            )
    subprocess.run(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", DB, "-f", script],
                   check=True, stdout=subprocess.DEVNULL)
    before = set(glob.glob(f"{out}/public/*/*.parquet"))
    proc = start_inlet(inlet, task_file)
    took = wait_caught_up(port, proc)
    rss = peak_rss_mb(proc.pid)
    stop(proc)
    backlog_files = set(glob.glob(f"{out}/public/*/*.parquet")) - before
    # Iceberg tables hold current state, not a change log: count what the backlog generated
    # (500 updates, 250 inserts, 250 deletes per transaction).
    changes = a.backlog_txns * 1000 if iceberg else count_rows(backlog_files)
    rate = changes / took
    log(f"apply: {changes} changes in {took:.2f} s = {rate:,.0f} changes/s, peak RSS {rss} MB")

    # 2. Lag under steady load from pgbench clients.
    pgb = os.path.join(a.dir, "mix.sql")
    with open(pgb, "w") as f:
        f.write(f"""\\set aid random(1, {ROWS})
\\set delta random(-5000, 5000)
BEGIN;
UPDATE accounts SET abalance = abalance + :delta WHERE aid = :aid;
INSERT INTO history (aid, delta, mtime) VALUES (:aid, :delta, CURRENT_TIMESTAMP);
DELETE FROM history WHERE hid = :aid;
END;
""")
    before = set(glob.glob(f"{out}/public/*/*.parquet"))
    proc = start_inlet(inlet, task_file)
    wait_caught_up(port, proc)
    sampler = WalSampler(port)
    sampler.start()
    pgbench = shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench"
    # A sustained rate the 2-core machine can serve with room to spare, so the lag measures the
    # pipeline (source commit -> durable file), not CPU queueing of an overloaded box; 0 = as
    # fast as the clients can go.
    rate_args = ["--rate", str(a.rate)] if a.rate > 0 else []
    log(f"pgbench: {a.clients} clients for {a.seconds} s at {a.rate or 'unlimited'} tps (3 changes per transaction)")
    subprocess.run([pgbench, "-n", *rate_args, "-c", str(a.clients), "-j", str(min(a.clients, 2)), "-T", str(a.seconds), "-f", pgb, "-h", "127.0.0.1", "-p", str(port),
                    "-U", "postgres", DB], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sampler.finish()
    wait_caught_up(port, proc)
    rss = max(rss, peak_rss_mb(proc.pid))
    index = metric('inlet_pk_index_bytes_per_row{task="bench-cdc",table="public.accounts"}') if iceberg else None
    stop(proc)
    lags = []
    steady = 0
    if iceberg:
        snaps = iceberg_snapshots(f"{out}/public/accounts")
        for lsn, t in sampler.samples:
            visible = [ts for pos, ts in snaps if pos >= lsn]
            if visible:
                lags.append((min(visible) - t) * 1000)
                steady += 1
        src = int(psql(port, "SELECT count(*) FROM accounts"))
        log(f"iceberg: {len(snaps)} snapshots of public.accounts; source has {src} rows")
    for path in ([] if iceberg else set(glob.glob(f"{out}/public/*/*.parquet")) - before):
        written_us = int(os.stat(path).st_mtime_ns // 1000)
        t = pq.read_table(path, columns=["_inlet_commit_ts"])
        commits = t.column(0).cast("int64").to_pylist()
        steady += len(commits)
        lags.extend((written_us - c) / 1000 for c in commits)
    lags.sort()
    if not lags:
        sys.exit("bench-cdc: no changes captured under load")
    p50 = lags[len(lags) // 2]
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    what = "position samples" if iceberg else "changes"
    log(f"lag under load: {steady} {what}, p50 {p50:.0f} ms, p99 {p99:.0f} ms (flush interval {a.flush_ms} ms)")
    if iceberg:
        print(f"bench: pg-cdc-iceberg changes_per_s={rate:.0f} lag_p50_ms={p50:.0f} lag_p99_ms={p99:.0f} "
              f"peak_rss_mb={rss} index_bytes_per_row={index if index is not None else 'n/a'}")
    else:
        print(f"bench: pg-cdc-parquet changes_per_s={rate:.0f} lag_p50_ms={p50:.0f} lag_p99_ms={p99:.0f} peak_rss_mb={rss}")
        large_transactions(a, port, inlet, task_file)


def slot_stats(port):
    row = psql(port, f"SELECT spill_bytes, stream_txns FROM pg_stat_replication_slots WHERE slot_name = '{SLOT}'")
    spill, streamed = (int(v) for v in row.split("|")) if row else (0, 0)
    return spill, streamed


def large_transactions(a, port, inlet, task_file):
    """Peak RSS of a fresh inlet following one transaction of each size."""
    results = []
    first_id = 10_000_000
    for rows in (a.small_txn_rows, a.large_txn_rows):
        proc = start_inlet(inlet, task_file)
        wait_caught_up(port, proc)
        spill0, streamed0 = slot_stats(port)
        log(f"one transaction of {rows} inserts")
        psql(port, f"INSERT INTO history (hid, aid, delta, mtime) SELECT g, g % {ROWS} + 1, 1, now() "
                   f"FROM generate_series({first_id}, {first_id + rows - 1}) g")
        first_id += rows
        took = wait_caught_up(port, proc)
        rss = peak_rss_mb(proc.pid)
        stop(proc)
        spill, streamed = slot_stats(port)
        results.append((rows, rows / took, rss, (spill - spill0) / 2**20, streamed - streamed0))
        log(f"  applied in {took:.2f} s after its commit, peak RSS {rss} MB, server spilled "
            f"{(spill - spill0) / 2**20:.0f} MB, streamed transactions {streamed - streamed0}")
    (small, _, small_rss, _, _), (large, large_rate, large_rss, spill_mb, streamed) = results
    print(f"bench: pg-cdc-large-txn rows={large} apply_rows_per_s={large_rate:.0f} peak_rss_mb={large_rss} "
          f"small_rows={small} small_peak_rss_mb={small_rss} rss_ratio={large_rss / small_rss:.2f} "
          f"server_spill_mb={spill_mb:.0f} streamed_txns={streamed}")


if __name__ == "__main__":
    main()
