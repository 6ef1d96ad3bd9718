#!/usr/bin/env python3
"""DuckDB side of `make bench` (run with the project venv's python).

    bench-tpch.py load   --dsn DSN [--sf 1]   make sure public.lineitem holds TPC-H lineitem at
                                              scale factor SF (generate with DuckDB's tpch
                                              extension and load it, unless already there)
    bench-tpch.py peer   --dsn DSN --out FILE the peer: DuckDB + postgres extension, COPY the
                                              table to one zstd Parquet file
    bench-tpch.py count  PATH_OR_GLOB         print the row count of Parquet file(s)
    bench-tpch.py report --rows N --bytes N --peer JSON [--inlet JSON]
                                              print the human lines and the machine line

DSN is a libpq key/value string, e.g. "host=127.0.0.1 port=54339 user=postgres dbname=bench".
"""

import argparse
import sys
import time

import duckdb
import duckdb_extensions

from benchlib import report_full_load

TABLE = "public.lineitem"

# TPC-H lineitem with the spec's types (keys as bigint so larger scale factors fit).
LINEITEM_DDL = """
CREATE TABLE public.lineitem (
    l_orderkey      bigint        NOT NULL,
    l_partkey       bigint        NOT NULL,
    l_suppkey       bigint        NOT NULL,
    l_linenumber    integer       NOT NULL,
    l_quantity      numeric(15,2) NOT NULL,
    l_extendedprice numeric(15,2) NOT NULL,
    l_discount      numeric(15,2) NOT NULL,
    l_tax           numeric(15,2) NOT NULL,
    l_returnflag    char(1)       NOT NULL,
    l_linestatus    char(1)       NOT NULL,
    l_shipdate      date          NOT NULL,
    l_commitdate    date          NOT NULL,
    l_receiptdate   date          NOT NULL,
    l_shipinstruct  char(25)      NOT NULL,
    l_shipmode      char(10)      NOT NULL,
    l_comment       varchar(44)   NOT NULL
)
"""

COLUMNS = [
    "l_orderkey", "l_partkey", "l_suppkey", "l_linenumber", "l_quantity", "l_extendedprice",
    "l_discount", "l_tax", "l_returnflag", "l_linestatus", "l_shipdate", "l_commitdate",
    "l_receiptdate", "l_shipinstruct", "l_shipmode", "l_comment",
]


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def connect(*extensions):
    con = duckdb.connect()
    for name in extensions:
        duckdb_extensions.import_extension(name, con=con)
        con.sql(f"LOAD {name}")
    return con


def sql_str(s):
    return "'" + s.replace("'", "''") + "'"


def pg_exec(con, sql):
    con.execute(f"CALL postgres_execute('pg', {sql_str(sql)})")


def pg_scalar(con, sql):
    row = con.execute(f"SELECT * FROM postgres_query('pg', {sql_str(sql)})").fetchone()
    return row[0] if row else None


def marker(sf, rows):
    return f"inlet-bench tpch sf={sf} rows={rows}"


def cmd_load(args):
    con = connect("postgres", "tpch")
    con.execute(f"ATTACH {sql_str(args.dsn)} AS pg (TYPE postgres)")

    comment = pg_scalar(
        con,
        "SELECT coalesce(obj_description(to_regclass('public.lineitem'), 'pg_class'), '')",
    )
    if comment and comment.startswith(f"inlet-bench tpch sf={args.sf} rows="):
        want = int(comment.rsplit("=", 1)[1])
        have = pg_scalar(con, "SELECT count(*) FROM public.lineitem")
        if have == want:
            log(f"{TABLE} already loaded (sf={args.sf}, {have} rows)")
            return 0
        log(f"{TABLE} has {have} rows, expected {want}: reloading")

    t0 = time.perf_counter()
    log(f"generating TPC-H sf={args.sf} with DuckDB's tpch extension")
    con.execute(f"CALL dbgen(sf={args.sf})")
    rows = con.execute("SELECT count(*) FROM lineitem").fetchone()[0]
    t1 = time.perf_counter()
    log(f"generated {rows} lineitem rows in {t1 - t0:.1f}s; loading into PostgreSQL")

    pg_exec(con, "DROP TABLE IF EXISTS public.lineitem")
    pg_exec(con, LINEITEM_DDL)
    con.execute("SELECT * FROM pg_clear_cache()")
    cols = ", ".join(COLUMNS)
    con.execute(f"INSERT INTO pg.public.lineitem ({cols}) SELECT {cols} FROM lineitem")
    t2 = time.perf_counter()
    log(f"copied into PostgreSQL in {t2 - t1:.1f}s; adding the primary key")
    con.execute("DROP TABLE lineitem")  # free DuckDB's copy before the slow part

    pg_exec(con, "ALTER TABLE public.lineitem ADD PRIMARY KEY (l_orderkey, l_linenumber)")
    t3 = time.perf_counter()
    log(f"primary key in {t3 - t2:.1f}s")
    con.execute("DETACH pg")
    con.close()

    # VACUUM cannot run inside a transaction block: run it through psql.
    vacuum(args.dsn)
    t4 = time.perf_counter()
    log(f"VACUUM (FREEZE, ANALYZE) in {t4 - t3:.1f}s")

    con = connect("postgres")
    con.execute(f"ATTACH {sql_str(args.dsn)} AS pg (TYPE postgres)")
    have = pg_scalar(con, "SELECT count(*) FROM public.lineitem")
    if have != rows:
        log(f"FAILED: loaded {have} rows, generated {rows}")
        return 1
    pg_exec(con, f"COMMENT ON TABLE public.lineitem IS {sql_str(marker(args.sf, rows))}")
    log(f"loaded {TABLE}: {rows} rows in {time.perf_counter() - t0:.1f}s total")
    return 0


def vacuum(dsn):
    import subprocess

    kv = dict(part.split("=", 1) for part in dsn.split())
    cmd = [
        "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
        "-h", kv.get("host", "127.0.0.1"), "-p", kv.get("port", "5432"),
        "-U", kv.get("user", "postgres"), "-d", kv.get("dbname", "postgres"),
        "-c", "VACUUM (FREEZE, ANALYZE) public.lineitem",
    ]
    subprocess.run(cmd, check=True)


def cmd_peer(args):
    con = connect("postgres")
    con.execute(f"ATTACH {sql_str(args.dsn)} AS pg (TYPE postgres, READ_ONLY)")
    con.execute(
        f"COPY (SELECT * FROM pg.{TABLE}) TO {sql_str(args.out)} (FORMAT parquet, COMPRESSION zstd)"
    )
    return 0


def cmd_count(args):
    con = duckdb.connect()
    n = con.execute(f"SELECT count(*) FROM read_parquet({sql_str(args.path)})").fetchone()[0]
    print(n)
    return 0


def cmd_count_iceberg(args):
    """Rows of an Iceberg table, counted by DuckDB's iceberg extension (not by inlet)."""
    con = duckdb.connect()
    duckdb_extensions.import_extension("avro", con=con)
    duckdb_extensions.import_extension("iceberg", con=con)
    con.execute("LOAD avro")
    con.execute("LOAD iceberg")
    n = con.execute(f"SELECT count(*) FROM iceberg_scan({sql_str(args.metadata)})").fetchone()[0]
    print(n)
    return 0


def cmd_report(args):
    return report_full_load(
        args.case, args.rows, args.bytes, TABLE, "pg_table_size", args.inlet, args.peer
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("load")
    s.add_argument("--dsn", required=True)
    s.add_argument("--sf", default="1")
    s = sub.add_parser("peer")
    s.add_argument("--dsn", required=True)
    s.add_argument("--out", required=True)
    s = sub.add_parser("count")
    s.add_argument("path")
    s = sub.add_parser("report")
    s.add_argument("--rows", type=int, required=True)
    s.add_argument("--bytes", type=int, required=True)
    s.add_argument("--peer", required=True)
    s.add_argument("--inlet")
    s.add_argument("--case", default="pg-fullload-parquet")
    s = sub.add_parser("count-iceberg")
    s.add_argument("metadata")
    args = p.parse_args()
    return {"load": cmd_load, "peer": cmd_peer, "count": cmd_count, "report": cmd_report,
            "count-iceberg": cmd_count_iceberg}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
