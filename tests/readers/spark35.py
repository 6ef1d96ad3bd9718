"""Spark 3.5's reader for the reader matrix (run by reader_matrix.py with the interpreter of
.venv-spark35, see requirements-spark35.txt): reads Parquet tables (all files of a folder in one
read) and Iceberg tables (by their metadata file, with the Iceberg runtime jar of the PyPI
package snowpark-connect-deps-iceberg), all in one session, and prints
{"<job name>": {"rows": [...], "seconds": S}} (or "error" for "rows") in reader_matrix.py's
canonical text.

    python spark35.py JOBS_JSON     (reader_matrix.py's jobs)

Spark 3.5 has no Arrow export without pandas, so each column is made canonical in Spark SQL by
its type (timestamps as unix_micros, bytes as hex, arrays as JSON) and finished here.
"""

import decimal
import glob
import json
import os
import sys


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
    if isinstance(v, list):
        return json.dumps([canon(x) for x in v])
    return str(v)


JACKSON_FROM = (b"com/fasterxml/jackson/", b"com.fasterxml.jackson.")
JACKSON_TO = (b"org/apache/iceberg/shaded/com/fasterxml/jackson/", b"org.apache.iceberg.shaded.com.fasterxml.jackson.")


def relocate_class(data):
    """A class file with Jackson's package names in its constant pool moved under Iceberg's
    shaded prefix (the rest of the file is index-based and copied as it is)."""
    out = bytearray(data[:10])
    count = int.from_bytes(data[8:10], "big")
    i, n = 10, 1
    while n < count:
        tag = data[i]
        if tag == 1:
            length = int.from_bytes(data[i + 1 : i + 3], "big")
            text = bytes(data[i + 3 : i + 3 + length])
            for a, b in zip(JACKSON_FROM, JACKSON_TO):
                text = text.replace(a, b)
            out += bytes([1]) + len(text).to_bytes(2, "big") + text
            i += 3 + length
        else:
            size = {3: 4, 4: 4, 5: 8, 6: 8, 7: 2, 8: 2, 16: 2, 19: 2, 20: 2, 9: 4, 10: 4, 11: 4,
                    12: 4, 17: 4, 18: 4, 15: 3}[tag]
            out += data[i : i + 1 + size]
            i += 1 + size
            if tag in (5, 6):
                n += 1  # longs and doubles take two slots
        n += 1
    out += data[i:]
    return bytes(out)


def relocated_jackson(pyspark_jars, cache):
    """Jackson (core, databind, annotations, from pyspark's jars) relocated to the package the
    Iceberg runtime jar expects but does not contain (org.apache.iceberg.shaded...), built once
    and kept in the venv."""
    import zipfile

    if os.path.exists(cache):
        return cache
    tmp = cache + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
        for name in ("jackson-core-", "jackson-databind-", "jackson-annotations-"):
            (jar,) = glob.glob(os.path.join(pyspark_jars, name + "2*.jar"))
            with zipfile.ZipFile(jar) as src:
                for entry in src.namelist():
                    if not entry.startswith("com/fasterxml/jackson/") or entry.endswith("/"):
                        continue
                    data = src.read(entry)
                    if entry.endswith(".class"):
                        data = relocate_class(data)
                    out.writestr("org/apache/iceberg/shaded/" + entry, data)
    os.replace(tmp, cache)
    return cache


def metadata_file(table_dir):
    meta = os.path.join(table_dir, "metadata")
    best = max(
        (int(n[1 : -len(".metadata.json")]), n)
        for n in os.listdir(meta)
        if n.startswith("v") and n.endswith(".metadata.json")
    )
    return os.path.join(meta, best[1])


def canonical_rows(frame, columns):
    from pyspark.sql import types as T

    exprs, arrays = [], set()
    for c in columns:
        q = f"`{c}`"
        t = frame.schema[c].dataType
        if isinstance(t, (T.TimestampType, T.TimestampNTZType)):
            exprs.append(f"cast(unix_micros(cast({q} as timestamp)) as string)")
        elif isinstance(t, T.BinaryType):
            exprs.append(f"lower(hex({q}))")
        elif isinstance(t, T.DateType):
            exprs.append(f"cast({q} as string)")
        elif isinstance(t, T.ArrayType):
            exprs.append(f"to_json({q})")
            arrays.add(c)
        else:
            exprs.append(q)
    rows = []
    for r in frame.selectExpr(*exprs).collect():
        row = []
        for c, v in zip(columns, r):
            if c in arrays and v is not None:
                v = json.loads(v, parse_float=decimal.Decimal)
            if isinstance(v, str) and isinstance(frame.schema[c].dataType, T.DateType):
                v = v.lstrip("+")  # Spark writes years past 9999 as +5874897-12-31
            row.append(canon(v))
        rows.append(row)
    return rows


def error(e):
    return {"error": " / ".join(f"{type(e).__name__}: {e}".split("\n"))[:400]}


def main():
    import time

    jobs = json.loads(sys.argv[1])
    out = {}
    try:
        import snowpark_connect_deps_iceberg as deps
        from pyspark.sql import SparkSession

        jars = glob.glob(
            os.path.join(os.path.dirname(deps.__file__), "jars", "iceberg-spark-runtime-3.5_2.12-*.jar")
        )
        import pyspark

        pyspark_jars = os.path.join(os.path.dirname(pyspark.__file__), "jars")
        cache = os.path.join(sys.prefix, "iceberg-shaded-jackson.jar")
        jars.append(relocated_jackson(pyspark_jars, cache))
        spark = (
            SparkSession.builder.master("local[1]")
            .config("spark.jars", ",".join(jars))
            .config("spark.ui.enabled", "false")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.ui.showConsoleProgress", "false")
            # As reader_matrix.py's JVM_OPTIONS: a short-lived JVM starts faster so.
            .config(
                "spark.driver.extraJavaOptions",
                "-Dlog4j.rootLogger=ERROR -XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
            )
            .getOrCreate()
        )
        spark.sparkContext.setLogLevel("OFF")
    except BaseException as e:  # reported in the matrix, for each table
        print("\n" + json.dumps({job["name"]: error(e) for job in jobs}))
        return
    for job in jobs:
        start = time.monotonic()
        try:
            if job["kind"] == "iceberg":
                frame = spark.read.format("iceberg").load(metadata_file(job["dir"]))
            else:
                # All files in one read (LOAD and change files differ only in their extra columns).
                files = sorted(glob.glob(os.path.join(job["dir"], "**", "*.parquet"), recursive=True))
                frame = spark.read.option("mergeSchema", "true").parquet(*files)
            out[job["name"]] = {"rows": canonical_rows(frame, job["columns"])}
        except BaseException as e:  # reported in the matrix
            out[job["name"]] = error(e)
        out[job["name"]]["seconds"] = round(time.monotonic() - start, 2)
    print("\n" + json.dumps(out))


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)
