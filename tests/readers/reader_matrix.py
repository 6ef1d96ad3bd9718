"""The reader matrix (issue 14): reads the tables inlet wrote with every engine installed here
and prints, per table and engine, the rows in one canonical text form, so the Rust test can
compare each engine's values with the source's.

    python reader_matrix.py JOBS_JSON

JOBS_JSON: a list of {"name": ..., "kind": "parquet" | "iceberg", "dir": TABLE_DIR, "columns":
[...]}; `columns` are the source columns to read (other columns, DMS's Op and inlet's
`_inlet_*`, are left out). Parquet: every file of the folder (LOAD and change files), each read
on its own, rows concatenated (Spark: all in one read). Iceberg: the table's current snapshot.

Output: {"<name>": {"<engine>": {"rows": [[...], ...], "seconds": S}}}, or "error" for "rows".

The JVM engines run beside the others, each in a process of its own started first: Spark 4.0
(this script with --spark-4.0, Parquet) and Spark 3.5 (.venv-spark35, spark35.py: Parquet and
Iceberg); each starts its JVM once for every table. Hyper runs one server for every table.

Canonical text (the Rust test builds the same from PostgreSQL): null; integers and decimals as
their exact text; floats by repr; booleans "true"/"false"; dates as ISO year-month-day (years past
9999 as they are); times as HH:MM:SS[.ffffff] (24:00:00 kept); timestamps as microseconds since
the epoch; bytes as hex; UUIDs as their 36-character text; lists as JSON lists of canonical values.
Values are taken from Arrow (each engine's own Arrow export), with dates, times and timestamps
cast to integers first, so a value Python's datetime cannot hold is still compared.
"""

import decimal
import glob
import json
import os
import sys
import uuid


def civil(days):
    """Proleptic Gregorian (year, month, day) of days since 1970-01-01 (Howard Hinnant's)."""
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y, m, d)


def date_text(days):
    y, m, d = civil(days)
    return f"{y:04d}-{m:02d}-{d:02d}"


def time_text(micros):
    s, us = divmod(micros, 1_000_000)
    h, s = divmod(s, 3600)
    mi, s = divmod(s, 60)
    text = f"{h:02d}:{mi:02d}:{s:02d}"
    return text + (f".{us:06d}".rstrip("0") if us else "")


def canon(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, decimal.Decimal):
        return format(v, "f")  # 0 at scale 10 is 0.0000000000, not 0E-10
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (list, tuple)):
        return json.dumps([canon(x) for x in v])
    if isinstance(v, dict):
        return json.dumps({k: canon(x) for k, x in v.items()})
    return str(v)


def column_values(col):
    """Canonical values of one Arrow column (a ChunkedArray)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = col.type
    if isinstance(t, pa.ExtensionType):
        col = pa.chunked_array([c.storage for c in col.chunks], type=t.storage_type)
        t = col.type
    if pa.types.is_fixed_size_binary(t) and t.byte_width == 16:
        # UUIDs (no other 16-byte column in the zoo): their 36-character text
        return [None if v is None else str(uuid.UUID(bytes=v)) for v in col.to_pylist()]
    if pa.types.is_date32(t):
        return [None if v is None else date_text(v) for v in col.cast(pa.int32()).to_pylist()]
    if pa.types.is_date64(t):
        ints = col.cast(pa.int64()).to_pylist()
        return [None if v is None else date_text(v // 86_400_000) for v in ints]
    if pa.types.is_time(t):
        unit = {"s": 1_000_000, "ms": 1000, "us": 1, "ns": 0.001}[t.unit]
        ints = col.cast(pa.int64() if t.bit_width == 64 else pa.int32()).to_pylist()
        return [None if v is None else time_text(int(v * unit)) for v in ints]
    if pa.types.is_timestamp(t):
        unit = {"s": 1_000_000, "ms": 1000, "us": 1, "ns": 0.001}[t.unit]
        ints = pc.cast(col, pa.timestamp(t.unit)).cast(pa.int64()).to_pylist()
        return [None if v is None else str(int(v * unit)) for v in ints]
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = t.value_type
        if pa.types.is_date32(inner) or pa.types.is_time(inner) or pa.types.is_timestamp(inner):
            out = []
            for chunk in col.chunks:
                flat = column_values(pa.chunked_array([chunk.flatten()], type=inner))
                offsets = chunk.offsets.to_pylist()
                for i in range(len(chunk)):
                    if not chunk[i].is_valid:
                        out.append(None)
                    else:
                        out.append(json.dumps(flat[offsets[i] : offsets[i + 1]]))
            return out
    return [canon(v) for v in col.to_pylist()]


def arrow_rows(table, columns):
    cols = [column_values(table.column(c)) for c in columns]
    return [list(r) for r in zip(*cols)] if cols else []


# ------------------------------------------------------------------------------------ Parquet


def parquet_files(table_dir):
    return sorted(glob.glob(os.path.join(table_dir, "**", "*.parquet"), recursive=True))


def per_file(read):
    def run(table_dir, columns):
        rows = []
        for f in parquet_files(table_dir):
            rows.extend(arrow_rows(read(f, columns), columns))
        return rows

    return run


def quoted(columns):
    return ", ".join('"' + c.replace('"', '""') + '"' for c in columns)


def pq_pyarrow(f, columns):
    import pyarrow.parquet as pq

    return pq.read_table(f, columns=columns)


def pq_duckdb(f, columns):
    import duckdb

    return duckdb.sql(f"SELECT {quoted(columns)} FROM read_parquet('{f}')").arrow().read_all()


def pq_polars(f, columns):
    import polars as pl

    return pl.scan_parquet(f).select(columns).collect().to_arrow()


def pq_daft(f, columns):
    import daft

    return daft.read_parquet(f).select(*columns).to_arrow()


def pq_datafusion(f, columns):
    from datafusion import SessionContext

    ctx = SessionContext()
    return ctx.read_parquet(f).select(*[f'"{c}"' for c in columns]).to_arrow_table()


def chdb_table(query, reference):
    """chDB's answer as Arrow. ClickHouse has one String type for text and bytes and exports it
    as Arrow strings, invalid UTF-8 included; asked for binary instead, the columns the Parquet
    schema `reference` says are text are turned back into text."""
    import chdb
    import pyarrow as pa

    table = chdb.query(
        query + " SETTINGS output_format_arrow_string_as_string = 0", "ArrowTable"
    )
    cols = []
    for name, col in zip(table.column_names, table.columns):
        want = reference.field(name).type
        if pa.types.is_binary(col.type) and not pa.types.is_binary(want):
            col = col.cast(pa.string())
        elif pa.types.is_list(col.type) and pa.types.is_binary(col.type.value_type):
            if not pa.types.is_binary(want.value_type):
                col = col.cast(pa.list_(pa.string()))
        cols.append(col)
    return pa.table(cols, names=table.column_names)


def pandas_rows(frame, columns, reference):
    """Canonical rows of a pandas DataFrame (pandas' own conversion from Arrow, with its
    defaults: dates as Python dates, timestamps as pandas Timestamps, lists as numpy arrays).
    `reference` (the Arrow schema the file holds) tells an integer column that pandas turned into
    floats because it holds NULLs."""
    import math

    import pandas as pd
    import pyarrow as pa

    def value(v, t):
        if v is None or v is pd.NaT:
            return None
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, pd.Timestamp):
            epoch = pd.Timestamp(0, tz=v.tz).as_unit("us")
            return str((v.as_unit("us") - epoch) // pd.Timedelta(1, "us"))
        if hasattr(v, "tolist") and not isinstance(v, (bytes, str)):
            v = v.tolist()  # numpy scalars and arrays
        if isinstance(v, list):
            listed = t is not None and (pa.types.is_list(t) or pa.types.is_large_list(t))
            inner = t.value_type if listed else None
            return json.dumps([value(x, inner) for x in v])
        if isinstance(v, float) and t is not None and pa.types.is_integer(t):
            return str(int(v))
        if hasattr(v, "isoformat") and not hasattr(v, "hour"):
            return v.isoformat()
        return canon(v)

    cols = []
    for c in columns:
        t = reference.field(c).type
        cols.append([value(v, t) for v in frame[c].tolist()])
    return [list(r) for r in zip(*cols)] if cols else []


def pq_pandas(table_dir, columns):
    import pandas as pd
    import pyarrow.parquet as pq

    rows = []
    for f in parquet_files(table_dir):
        rows.extend(pandas_rows(pd.read_parquet(f, columns=columns), columns, pq.read_schema(f)))
    return rows


def pq_chdb(f, columns):
    import pyarrow.parquet as pq

    q = f"SELECT {quoted(columns)} FROM file('{f}', Parquet)"
    return chdb_table(q, pq.read_schema(f))


HYPER = None


def hyper_connection():
    """One Hyper server and connection for every table the script reads (a server takes ~0.1 s
    to start); closed by main."""
    global HYPER
    if HYPER is None:
        import tempfile

        from tableauhyperapi import Connection, HyperProcess, Telemetry

        logs = tempfile.mkdtemp()
        hyper = HyperProcess(
            telemetry=Telemetry.DO_NOT_SEND_USAGE_DATA_TO_TABLEAU, parameters={"log_dir": logs}
        )
        HYPER = (hyper, Connection(hyper.endpoint))
    return HYPER[1]


def hyper_array(text):
    """Elements of Hyper's text form of an array (`[1,NULL,3]`, `["a,b",NULL,""]`: strings
    quoted with JSON's escapes, NULL bare), each as its text."""
    decoder = json.JSONDecoder()
    inner, out, i = text[1:-1], [], 0
    while i < len(inner):
        if inner[i] == '"':
            value, i = decoder.raw_decode(inner, i)
        else:
            j = inner.find(",", i)
            j = len(inner) if j < 0 else j
            value, i = inner[i:j], j
            value = None if value == "NULL" else value
        out.append(value)
        i += 1  # the comma
    return out


def hyper_rows(source, columns):
    """Rows of `columns` of a Hyper `external(...)` source as canonical text (Hyper has no Arrow
    export). Hyper's Python API hands arrays over as undecoded bytes, so array columns are read
    as Hyper's text form of them and parsed."""
    import datetime

    from tableauhyperapi import Date, Timestamp, TypeTag

    con = hyper_connection()
    with con.execute_query(f"SELECT {quoted(columns)} FROM {source} LIMIT 0") as result:
        arrays = [c.type.tag == TypeTag.UNSUPPORTED for c in result.schema.columns]
    exprs = [
        f'CAST("{c}" AS text)' if array else quoted([c]) for c, array in zip(columns, arrays)
    ]
    with con.execute_query(f"SELECT {', '.join(exprs)} FROM {source}") as result:
        types = [c.type for c in result.schema.columns]
        out = []
        for row in result:
            vals = []
            for v, t, array in zip(row, types, arrays):
                scale = getattr(t, "scale", None)
                if array and v is not None:
                    v = hyper_array(v)
                elif isinstance(v, decimal.Decimal) and scale is not None:
                    # 38 digits: beyond the default context's 28
                    v = v.quantize(decimal.Decimal(1).scaleb(-scale), context=decimal.Context(prec=76))
                elif isinstance(v, Timestamp):
                    v = v.to_datetime()
                    base = datetime.datetime(1970, 1, 1, tzinfo=v.tzinfo)
                    v = (v - base) // datetime.timedelta(microseconds=1)
                elif isinstance(v, Date):
                    v = v.to_date().isoformat()
                elif hasattr(v, "hour") and hasattr(v, "microsecond"):
                    v = time_text(
                        ((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond
                    )
                vals.append(canon(v))
            out.append(vals)
        return out


def pq_hyper(table_dir, columns):
    rows = []
    for f in parquet_files(table_dir):
        rows.extend(hyper_rows(f"external('{f}')", columns))
    return rows


# ------------------------------------------------------------------------------------ Iceberg


def metadata_file(table_dir):
    meta = os.path.join(table_dir, "metadata")
    best = max(
        (int(n[1 : -len(".metadata.json")]), n)
        for n in os.listdir(meta)
        if n.startswith("v") and n.endswith(".metadata.json")
    )
    return os.path.join(meta, best[1])


def ice_pyiceberg(table_dir, columns):
    from pyiceberg.table import StaticTable

    t = StaticTable.from_metadata(metadata_file(table_dir))
    return arrow_rows(t.scan(selected_fields=tuple(columns)).to_arrow(), columns)


def ice_pandas(table_dir, columns):
    from pyiceberg.table import StaticTable

    scan = StaticTable.from_metadata(metadata_file(table_dir)).scan(selected_fields=tuple(columns))
    return pandas_rows(scan.to_pandas(), columns, scan.projection().as_arrow())


def ice_duckdb(table_dir, columns):
    import duckdb
    import duckdb_extensions

    con = duckdb.connect()
    duckdb_extensions.import_extension("avro", con=con)
    duckdb_extensions.import_extension("iceberg", con=con)
    con.sql("LOAD avro")
    con.sql("LOAD iceberg")
    q = f"SELECT {quoted(columns)} FROM iceberg_scan('{metadata_file(table_dir)}')"
    return arrow_rows(con.sql(q).arrow().read_all(), columns)


def ice_polars_native(table_dir, columns):
    import polars as pl

    frame = pl.scan_iceberg(metadata_file(table_dir), reader_override="native")
    return arrow_rows(frame.select(columns).collect().to_arrow(), columns)


def ice_polars_pyiceberg(table_dir, columns):
    import polars as pl

    frame = pl.scan_iceberg(metadata_file(table_dir), reader_override="pyiceberg")
    return arrow_rows(frame.select(columns).collect().to_arrow(), columns)


def ice_daft(table_dir, columns):
    import daft
    from pyiceberg.table import StaticTable

    t = StaticTable.from_metadata(metadata_file(table_dir))
    return arrow_rows(daft.read_iceberg(t).select(*columns).to_arrow(), columns)


def ice_datafusion(table_dir, columns):
    """DataFusion through pyiceberg-core's table provider (iceberg-rust; pyiceberg's Table hands
    it to `register_table`). The provider parses the metadata location as a URL: a bare path is
    refused ("relative URL without a base"), so it is given as file://."""
    from datafusion import SessionContext
    from pyiceberg.table import StaticTable

    t = StaticTable.from_metadata("file://" + metadata_file(table_dir))
    ctx = SessionContext()
    ctx.register_table("t", t)
    return arrow_rows(ctx.sql(f"SELECT {quoted(columns)} FROM t").to_arrow_table(), columns)


def ice_chdb(table_dir, columns):
    # chDB reads local files only below its working directory.
    os.chdir(os.path.dirname(table_dir))
    q = f"SELECT {quoted(columns)} FROM icebergLocal('{os.path.basename(table_dir)}')"
    import pyarrow.parquet as pq

    reference = pq.read_schema(parquet_files(os.path.join(table_dir, "data"))[0])
    return arrow_rows(chdb_table(q, reference), columns)


def ice_hyper(table_dir, columns):
    return hyper_rows(f"external('{table_dir}', FORMAT => 'iceberg')", columns)


# The JVM compiles with C1 only and collects with one thread: the reads are short, and a JVM's
# start (most of a Spark read here) took half as long so (11 s instead of 21 s on 2 busy cores).
JVM_OPTIONS = "-Dlog4j.rootLogger=ERROR -XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def spark40_rows(jobs):
    """Spark 4.0 (pyspark from requirements-dev.txt, run here with --spark-4.0): every Parquet
    table, all its files in one read (LOAD and change files differ only in their extra columns),
    one session for all. Spark 4.0 reads no Iceberg here: the Iceberg runtime jar on PyPI
    (snowpark-connect-deps-iceberg) is built for Spark 3.5 and fails in 4.0 (NoSuchMethodError
    SQLContext.conf)."""
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[1]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.extraJavaOptions", JVM_OPTIONS)
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("OFF")
    out = {}
    for job in jobs:
        columns = job["columns"]
        out[job["name"]] = timed(
            lambda: arrow_rows(
                spark.read.option("mergeSchema", "true")
                .parquet(*parquet_files(job["dir"]))
                .select(*[f"`{c}`" for c in columns])
                .toArrow(),
                columns,
            )
        )
    return out


def spark40_start(jobs):
    jobs = [j for j in jobs if j["kind"] == "parquet"]
    return [sys.executable, os.path.abspath(__file__), "--spark-4.0", json.dumps(jobs)]


def spark35_start(jobs):
    """Spark 3.5 in its own venv (.venv-spark35, made once by scripts/setup-venv.sh from
    requirements-spark35.txt; a no-op when it is up to date): Parquet and Iceberg, with the
    Iceberg runtime jar from PyPI (spark35.py)."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    venv = os.path.join(root, ".venv-spark35")
    setup = [os.path.join(root, "scripts/setup-venv.sh"), venv, "requirements-spark35.txt"]
    subprocess.run(setup, check=True, cwd=root, stdout=subprocess.DEVNULL)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spark35.py")
    return [os.path.join(venv, "bin/python"), script, json.dumps(jobs)]


# Engines run in a process of their own, beside the others: name, the jobs' kinds it reads, and
# its command line (the process prints {"<job name>": {"rows" | "error", "seconds"}} as its last
# line).
JVM_ENGINES = [
    ("spark-4.0", {"parquet"}, spark40_start),
    ("spark-3.5", {"parquet", "iceberg"}, spark35_start),
]

ENGINES = {
    "parquet": {
        "pyarrow": per_file(pq_pyarrow),
        "duckdb": per_file(pq_duckdb),
        "polars": per_file(pq_polars),
        "daft": per_file(pq_daft),
        "datafusion": per_file(pq_datafusion),
        "chdb": per_file(pq_chdb),
        "hyper": pq_hyper,
        "pandas": pq_pandas,
    },
    "iceberg": {
        "pyiceberg": ice_pyiceberg,
        "duckdb": ice_duckdb,
        "polars-native": ice_polars_native,
        "polars-pyiceberg": ice_polars_pyiceberg,
        "daft": ice_daft,
        "datafusion": ice_datafusion,
        "chdb": ice_chdb,
        "hyper": ice_hyper,
        "pandas": ice_pandas,
    },
}


def timed(read):
    """{"rows": ...} or {"error": "..."}, with the seconds the read took."""
    import time

    start = time.monotonic()
    try:
        out = {"rows": read()}
    except BaseException as e:  # reported in the matrix
        msg = " / ".join(f"{type(e).__name__}: {e}".split("\n"))
        out = {"error": msg[:400]}
    out["seconds"] = round(time.monotonic() - start, 2)
    return out


def main():
    import subprocess

    if sys.argv[1] == "--spark-4.0":
        print("\n" + json.dumps(spark40_rows(json.loads(sys.argv[2]))))
        return
    jobs = json.loads(sys.argv[1])
    cwd = os.getcwd()
    out = {job["name"]: {} for job in jobs}
    started = []
    for engine, kinds, command in JVM_ENGINES:
        mine = [j for j in jobs if j["kind"] in kinds]
        try:
            proc = subprocess.Popen(
                command(mine), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        except BaseException as e:  # reported in the matrix
            proc = e
        started.append((engine, mine, proc))
    for job in jobs:
        for engine, read in ENGINES[job["kind"]].items():
            out[job["name"]][engine] = timed(lambda: read(job["dir"], job["columns"]))
            os.chdir(cwd)  # chDB's Iceberg reader moves
    if HYPER is not None:
        HYPER[1].close()
        HYPER[0].close()
    for engine, mine, proc in started:
        try:
            if isinstance(proc, BaseException):
                raise proc
            stdout, stderr = proc.communicate(timeout=300)
            lines = stdout.strip().splitlines()
            if not lines:
                raise RuntimeError(f"{engine} printed nothing: {stderr[-300:]}")
            got = json.loads(lines[-1])
        except BaseException as e:  # reported in the matrix, for each of its tables
            err = {"error": " / ".join(f"{type(e).__name__}: {e}".split("\n"))[:400]}
            got = {j["name"]: err for j in mine}
        for job in mine:
            out[job["name"]][engine] = got[job["name"]]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
    # End now: interpreter shutdown can abort in native extension destructors.
    sys.stdout.flush()
    os._exit(0)
