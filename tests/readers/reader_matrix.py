"""The reader matrix (issue 14): reads one table inlet wrote with every engine installed here and
prints, per engine, the rows in one canonical text form, so the Rust test can compare each
engine's values with the source's.

    python reader_matrix.py parquet TABLE_DIR COLUMNS_JSON
    python reader_matrix.py iceberg TABLE_DIR COLUMNS_JSON

COLUMNS_JSON: the source columns to read (a JSON list); other columns (DMS's Op, inlet's
`_inlet_*`) are left out. Parquet: every file of the folder (LOAD and change files), each read on
its own, rows concatenated. Iceberg: the table's current snapshot.

Output: {"<engine>": {"rows": [[...], ...]}} or {"<engine>": {"error": "..."}}.

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
        return str(v)
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


def hyper_rows(query):
    """Rows of a Hyper query as canonical text (Hyper has no Arrow export)."""
    import tempfile

    from tableauhyperapi import Connection, Date, HyperProcess, Telemetry, Timestamp

    with tempfile.TemporaryDirectory() as logs:
        with HyperProcess(
            telemetry=Telemetry.DO_NOT_SEND_USAGE_DATA_TO_TABLEAU, parameters={"log_dir": logs}
        ) as hyper:
            with Connection(hyper.endpoint) as con:
                with con.execute_query(query) as result:
                    types = [c.type for c in result.schema.columns]
                    out = []
                    for row in result:
                        vals = []
                        for v, t in zip(row, types):
                            scale = getattr(t, "scale", None)
                            if isinstance(v, decimal.Decimal) and scale is not None:
                                v = v.quantize(decimal.Decimal(1).scaleb(-scale))
                            if isinstance(v, Timestamp):
                                v = v.to_datetime()
                                import datetime

                                base = datetime.datetime(
                                    1970, 1, 1, tzinfo=v.tzinfo
                                )
                                v = (v - base) // datetime.timedelta(microseconds=1)
                            elif isinstance(v, Date):
                                v = v.to_date().isoformat()
                            elif hasattr(v, "hour") and hasattr(v, "microsecond"):
                                v = time_text(
                                    ((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000
                                    + v.microsecond
                                )
                            vals.append(canon(v))
                        out.append(vals)
                    return out


def pq_hyper(table_dir, columns):
    rows = []
    for f in parquet_files(table_dir):
        rows.extend(hyper_rows(f"SELECT {quoted(columns)} FROM external('{f}')"))
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


def ice_chdb(table_dir, columns):
    # chDB reads local files only below its working directory.
    os.chdir(os.path.dirname(table_dir))
    q = f"SELECT {quoted(columns)} FROM icebergLocal('{os.path.basename(table_dir)}')"
    import pyarrow.parquet as pq

    reference = pq.read_schema(parquet_files(os.path.join(table_dir, "data"))[0])
    return arrow_rows(chdb_table(q, reference), columns)


def ice_hyper(table_dir, columns):
    return hyper_rows(f"SELECT {quoted(columns)} FROM external('{table_dir}', FORMAT => 'iceberg')")


SPARK = None


def spark_session():
    """One local Spark session for every file the script reads (it takes ~8 s to start). The
    Iceberg runtime jar (PyPI snowpark-connect-deps-iceberg) is on its class path for a Spark
    3.5 session; Spark 4.0 reads Parquet only here."""
    global SPARK
    if SPARK is None:
        import snowpark_connect_deps_iceberg as deps
        from pyspark.sql import SparkSession

        jars = glob.glob(
            os.path.join(os.path.dirname(deps.__file__), "jars", "iceberg-spark-runtime-3.5_2.13-*.jar")
        )
        SPARK = (
            SparkSession.builder.master("local[1]")
            .config("spark.jars", ",".join(jars))
            .config("spark.ui.enabled", "false")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.driver.extraJavaOptions", "-Dlog4j.rootLogger=ERROR")
            .getOrCreate()
        )
        SPARK.sparkContext.setLogLevel("OFF")
    return SPARK


def pq_spark(table_dir, columns):
    # All files in one read (LOAD and change files differ only in their extra columns).
    files = parquet_files(table_dir)
    reader = spark_session().read.option("mergeSchema", "true")
    frame = reader.parquet(*files).select(*[f"`{c}`" for c in columns])
    return arrow_rows(frame.toArrow(), columns)


def ice_spark35(table_dir, columns):
    """Spark 3.5 in its own venv (.venv-spark35, made once by scripts/setup-venv.sh from
    requirements-spark35.txt; a no-op when it is up to date)."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    venv = os.path.join(root, ".venv-spark35")
    setup = [os.path.join(root, "scripts/setup-venv.sh"), venv, "requirements-spark35.txt"]
    subprocess.run(setup, check=True, cwd=root, stdout=subprocess.DEVNULL)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spark35_iceberg.py")
    done = subprocess.run(
        [os.path.join(venv, "bin/python"), script, metadata_file(table_dir), json.dumps(columns)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"spark35_iceberg.py printed nothing: {done.stderr[-300:]}")
    out = json.loads(lines[-1])
    if "error" in out:
        raise RuntimeError(out["error"])
    return out["rows"]


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
        "spark-4.0": pq_spark,
    },
    "iceberg": {
        "pyiceberg": ice_pyiceberg,
        "duckdb": ice_duckdb,
        "polars-native": ice_polars_native,
        "polars-pyiceberg": ice_polars_pyiceberg,
        "daft": ice_daft,
        "chdb": ice_chdb,
        "hyper": ice_hyper,
        "pandas": ice_pandas,
        # Spark 3.5: the PyPI jar is Iceberg's runtime for Spark 3.5, which Spark 4.0 cannot load
        # (NoSuchMethodError SQLContext.conf), and pyspark 3.5 cannot share the venv with 4.0.
        "spark-3.5": ice_spark35,
    },
}


def main():
    kind, table_dir, columns = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    out = {}
    for name, read in ENGINES[kind].items():
        try:
            out[name] = {"rows": read(table_dir, columns)}
        except BaseException as e:  # reported in the matrix
            msg = " / ".join(f"{type(e).__name__}: {e}".split("\n"))
            out[name] = {"error": msg[:400]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
    # End now: interpreter shutdown can abort in native extension destructors.
    sys.stdout.flush()
    os._exit(0)
