#!/usr/bin/env python3
"""Sizing figures for the README's Scaling section: the resident memory (RSS) and CPU of one
`inlet run` task, idle and under a steady stream of row changes, into Parquet and into Iceberg.

    scripts/pg-sandbox.sh start .bench/scale 54349
    PATH=/usr/lib/postgresql/15/bin:$PATH \\
        scripts/measure-scaling.py --port 54349 --inlet target/release/inlet \\
        [--rates 1000,5000,20000] [--seconds 90] [--idle-seconds 30] [--targets parquet,iceberg] \\
        [--flush-ms MS] [--tasks 8]
    scripts/pg-sandbox.sh stop .bench/scale

For each target a fresh database gets `accounts` (200,000 rows) and `history`; one task (mode
cdc, the default flush policy, every 10 s, unless --flush-ms) follows it into a local folder. inlet's RSS
(/proc/PID/status VmRSS) and CPU (utime + stime from /proc/PID/stat, in % of one core) are
sampled every second:

- idle: the task streams with no change arriving, for --idle-seconds;
- at each rate: pgbench clients run, rate-limited to rate / 3 transactions/s, a transaction of
  3 row changes (UPDATE one account, INSERT one history row, UPDATE another account), for
  --seconds; then the script waits until the slot confirms the last change (catch-up).

Also the idle RSS of one daemon running --tasks tasks (one small database each), to tell the
cost of one more task in a daemon.

Prints one machine line per phase:
    scale: target=parquet phase=idle rate=0 achieved=0 rss_mb_median=N rss_mb_max=N cpu_pct_mean=N cpu_pct_p95=N catchup_s=0
    scale: tasks=N idle_rss_mb=N
"""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

ROWS = 200_000
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"measure-scaling: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(port, sql, db="postgres"):
    out = subprocess.run(
        ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
         "-d", db, "-c", sql],
        capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"measure-scaling: psql failed: {out.stderr.strip()}")
    return out.stdout.strip()


class Sampler(threading.Thread):
    """(RSS MiB, CPU % of one core over the last second) of a process, every second."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.samples = []
        self.stop_event = threading.Event()

    def cpu_ticks(self):
        with open(f"/proc/{self.pid}/stat") as f:
            # The command name may hold spaces: fields are counted after its closing ')'.
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime

    def rss_mb(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def run(self):
        last_t, last_ticks = time.monotonic(), self.cpu_ticks()
        while not self.stop_event.wait(1.0):
            try:
                now, ticks = time.monotonic(), self.cpu_ticks()
                rss = self.rss_mb()
            except (FileNotFoundError, ProcessLookupError):
                return
            cpu = (ticks - last_ticks) / CLK_TCK / (now - last_t) * 100
            self.samples.append((rss, cpu))
            last_t, last_ticks = now, ticks

    def finish(self):
        self.stop_event.set()
        self.join()
        return self.samples


def summary(samples):
    rss = [s[0] for s in samples]
    cpu = sorted(s[1] for s in samples)
    return {
        "rss_mb_median": statistics.median(rss),
        "rss_mb_max": max(rss),
        "cpu_pct_mean": statistics.fmean(cpu),
        "cpu_pct_p95": cpu[min(len(cpu) - 1, int(len(cpu) * 0.95))],
    }


def start_inlet(inlet, task_path, workdir):
    log_file = open(os.path.join(workdir, "inlet.log"), "ab")
    return subprocess.Popen([inlet, "run", "-c", task_path, "--listen", f"127.0.0.1:{free_port()}"],
                            stdout=log_file, stderr=log_file, env={**os.environ, "RUST_LOG": "warn"})


def stop_inlet(proc):
    proc.send_signal(signal.SIGTERM)
    if proc.wait(timeout=120) != 0:
        sys.exit(f"measure-scaling: inlet exited with {proc.returncode} on SIGTERM")


def wait_caught_up(port, proc, slots, timeout=900):
    """Seconds until every slot confirms the WAL written before the call."""
    target = psql(port, "SELECT pg_current_wal_insert_lsn()")
    names = ",".join(f"'{s}'" for s in slots)
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            sys.exit(f"measure-scaling: inlet exited with {proc.returncode}")
        behind = psql(port, f"SELECT count(*) FROM pg_replication_slots WHERE slot_name IN ({names}) "
                            f"AND (confirmed_flush_lsn IS NULL OR confirmed_flush_lsn < '{target}'::pg_lsn)")
        have = psql(port, f"SELECT count(*) FROM pg_replication_slots WHERE slot_name IN ({names})")
        if behind == "0" and int(have) == len(slots):
            return time.monotonic() - start
        time.sleep(0.2)
    sys.exit("measure-scaling: inlet did not catch up")


def task_toml(name, port, db, target, out, flush_ms=None):
    cdc = f"[cdc]\nflush_interval_ms = {flush_ms}\n" if flush_ms else ""
    tgt = f'kind = "iceberg"\nwarehouse = "{out}"' if target == "iceberg" else f'kind = "parquet"\nurl = "{out}"'
    return f"""[task]
name = "{name}"
mode = "cdc"
[source]
kind = "postgres"
url = "postgres://postgres@127.0.0.1:{port}/{db}"
tls = "disable"
[target]
{tgt}
[tables]
include = ["public.*"]
{cdc}"""


def fresh_database(port, db, slot):
    psql(port, f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{slot}'")
    psql(port, f"DROP DATABASE IF EXISTS {db}")
    psql(port, f"CREATE DATABASE {db}")


def one_target(a, target):
    db, task, slot = f"scale_{target}", f"scale-{target}", f"inlet_scale_{target}"
    workdir = os.path.abspath(os.path.join(a.dir, target))
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    fresh_database(a.port, db, slot)
    psql(a.port, f"""
        CREATE TABLE accounts (aid bigint PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL, filler char(84));
        CREATE TABLE history (hid bigserial PRIMARY KEY, aid bigint NOT NULL, delta int NOT NULL, mtime timestamptz NOT NULL);
        INSERT INTO accounts SELECT g, g % 10, 0, '' FROM generate_series(1, {ROWS}) g;""", db=db)
    psql(a.port, "VACUUM ANALYZE accounts", db=db)
    task_path = os.path.join(workdir, "task.toml")
    with open(task_path, "w") as f:
        f.write(task_toml(task, a.port, db, target, os.path.join(workdir, "out"), a.flush_ms))
    mix = os.path.join(workdir, "mix.sql")
    with open(mix, "w") as f:
        f.write(f"""\\set a1 random(1, {ROWS})
\\set a2 random(1, {ROWS})
\\set delta random(-5000, 5000)
BEGIN;
UPDATE accounts SET abalance = abalance + :delta WHERE aid = :a1;
INSERT INTO history (aid, delta, mtime) VALUES (:a1, :delta, CURRENT_TIMESTAMP);
UPDATE accounts SET abalance = abalance - :delta WHERE aid = :a2;
END;
""")

    proc = start_inlet(a.inlet, task_path, workdir)
    try:
        # The first run creates the slot; changes start from there.
        wait_caught_up(a.port, proc, [slot])
        # A first small batch of changes, so the idle phase is a task that has written before.
        psql(a.port, "UPDATE accounts SET abalance = abalance + 1 WHERE aid <= 100", db=db)
        wait_caught_up(a.port, proc, [slot])
        log(f"{target}: idle for {a.idle_seconds} s")
        sampler = Sampler(proc.pid)
        sampler.start()
        time.sleep(a.idle_seconds)
        report(target, "idle", 0, 0, sampler.finish(), 0.0)
        pgbench = shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench"
        for rate in a.rates:
            tps = max(1, round(rate / 3))
            clients = 2 if rate <= 2000 else 8
            log(f"{target}: {rate} changes/s ({tps} transactions/s, {clients} clients) for {a.seconds} s")
            sampler = Sampler(proc.pid)
            sampler.start()
            run = subprocess.run([pgbench, "-n", "-R", str(tps), "-c", str(clients), "-j", "2", "-T", str(a.seconds),
                                  "-f", mix, "-h", "127.0.0.1", "-p", str(a.port), "-U", "postgres", db],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                sys.exit(f"measure-scaling: pgbench failed: {run.stderr.strip()}")
            m = re.search(r"tps = ([0-9.]+)", run.stdout)
            achieved = float(m.group(1)) * 3 if m else float("nan")
            catchup = wait_caught_up(a.port, proc, [slot])
            report(target, f"rate{rate}", rate, achieved, sampler.finish(), catchup)
    finally:
        stop_inlet(proc)


def report(target, phase, rate, achieved, samples, catchup):
    s = summary(samples)
    print(f"scale: target={target} phase={phase} rate={rate} achieved={achieved:.0f} "
          f"rss_mb_median={s['rss_mb_median']:.0f} rss_mb_max={s['rss_mb_max']:.0f} "
          f"cpu_pct_mean={s['cpu_pct_mean']:.1f} cpu_pct_p95={s['cpu_pct_p95']:.1f} catchup_s={catchup:.1f}",
          flush=True)


def many_tasks(a):
    """Idle RSS of one daemon running a.tasks tasks (one small database each, Parquet)."""
    workdir = os.path.abspath(os.path.join(a.dir, "tasks"))
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(os.path.join(workdir, "tasks"))
    slots = []
    for i in range(a.tasks):
        db, task, slot = f"scale_t{i}", f"scale-t{i}", f"inlet_scale_t{i}"
        fresh_database(a.port, db, slot)
        psql(a.port, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'x' FROM generate_series(1, 1000) g", db=db)
        with open(os.path.join(workdir, "tasks", f"{task}.toml"), "w") as f:
            f.write(task_toml(task, a.port, db, "parquet", os.path.join(workdir, "out")))
        slots.append(slot)
    proc = start_inlet(a.inlet, os.path.join(workdir, "tasks"), workdir)
    try:
        wait_caught_up(a.port, proc, slots)
        for i in range(a.tasks):
            psql(a.port, "UPDATE t SET v = 'y' WHERE id <= 10", db=f"scale_t{i}")
        wait_caught_up(a.port, proc, slots)
        sampler = Sampler(proc.pid)
        sampler.start()
        time.sleep(a.idle_seconds)
        s = summary(sampler.finish())
        print(f"scale: tasks={a.tasks} idle_rss_mb={s['rss_mb_median']:.0f} cpu_pct_mean={s['cpu_pct_mean']:.1f}", flush=True)
    finally:
        stop_inlet(proc)
    for i in range(a.tasks):
        psql(a.port, f"SELECT pg_drop_replication_slot('inlet_scale_t{i}')")
        psql(a.port, f"DROP DATABASE scale_t{i}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=54349)
    ap.add_argument("--inlet", default="target/release/inlet")
    ap.add_argument("--dir", default=".bench/scale")
    ap.add_argument("--rates", default="1000,5000,20000")
    ap.add_argument("--seconds", type=int, default=90)
    ap.add_argument("--idle-seconds", type=int, default=30)
    ap.add_argument("--targets", default="parquet,iceberg")
    ap.add_argument("--flush-ms", type=int, help="cdc.flush_interval_ms of the measured task (default: inlet's, 10 s)")
    ap.add_argument("--tasks", type=int, default=8, help="tasks of the many-tasks phase; 0 = skip it")
    a = ap.parse_args()
    a.rates = [int(r) for r in a.rates.split(",") if r]
    a.inlet = os.path.abspath(a.inlet)
    for target in [t for t in a.targets.split(",") if t]:
        one_target(a, target)
    if a.tasks > 0:
        many_tasks(a)


if __name__ == "__main__":
    main()
