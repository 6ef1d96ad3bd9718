"""Reads an Iceberg table with pyiceberg and with DuckDB's iceberg extension and prints, as one
JSON object per reader, the column names, each reader's column types, and every row with its
values in a canonical text form (so a Rust test can compare them with its model exactly):

    python read_table.py <path or s3:// URI of vN.metadata.json>

For s3:// tables the endpoint and credentials come from INLET_S3_ENDPOINT (http://host:port),
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION.

With INLET_GLUE_TABLE=namespace.table (and INLET_GLUE_ENDPOINT), pyiceberg loads the table
through its Glue catalog instead of the metadata path (and reports the metadata location it
found); DuckDB still reads the metadata path.

With INLET_REST_URI and INLET_REST_TABLE=namespace.table, pyiceberg loads the table through its
REST catalog client (RestCatalog) and reports the metadata location the catalog names; DuckDB
still reads the metadata path given. Catalog settings: INLET_REST_WAREHOUSE, and for
authentication INLET_REST_TOKEN (bearer token), or INLET_REST_CREDENTIAL (client_id:secret, with
INLET_REST_OAUTH_URI and optionally INLET_REST_SCOPE), or INLET_REST_SIGV4_NAME (SigV4 signing name; region and keys from
AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).

With INLET_FILTER (a pyiceberg row filter) and INLET_FILTER_SQL (the same as a DuckDB WHERE
clause), both readers scan with the filter: a data file whose partition value is wrong is then
pruned and its rows go missing.

With INLET_POLARS=1, polars reads the table too, with its native Iceberg reader
(`scan_iceberg(..., reader_override="native")`), reported as "polars".

With INLET_HYPER=1, Tableau Hyper (pip tableauhyperapi) reads the table's folder too, reported as
"hyper" (a local table only).

Canonical values: null; integers and decimals as their exact text; floats by repr; booleans as
"true"/"false"; dates ISO; timestamps as microseconds since the Unix epoch (UTC); bytes as hex;
lists as JSON lists of canonical values.
"""

import datetime
import decimal
import json
import sys
import uuid

EPOCH = datetime.datetime(1970, 1, 1)
EPOCH_TZ = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


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
    if isinstance(v, datetime.datetime):
        base = EPOCH_TZ if v.tzinfo is not None else EPOCH
        return str((v - base) // datetime.timedelta(microseconds=1))
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, datetime.time):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, uuid.UUID):
        return v.bytes.hex()
    if isinstance(v, (list, tuple)):
        return json.dumps([canon(x) for x in v])
    if isinstance(v, str):
        return v
    return str(v)


def sort_rows(rows):
    return sorted(rows, key=lambda r: json.dumps(r))


def s3_settings():
    import os

    endpoint = os.environ.get("INLET_S3_ENDPOINT")
    if not endpoint:
        return None
    return {
        "endpoint": endpoint,
        "key": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        "secret": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        "region": os.environ.get("AWS_REGION", "us-east-1"),
    }


def rest_catalog(props):
    import os

    from pyiceberg.catalog.rest import RestCatalog

    conf = {"uri": os.environ["INLET_REST_URI"], **props}
    if os.environ.get("INLET_REST_WAREHOUSE"):
        conf["warehouse"] = os.environ["INLET_REST_WAREHOUSE"]
    if os.environ.get("INLET_REST_TOKEN"):
        conf["token"] = os.environ["INLET_REST_TOKEN"]
    if os.environ.get("INLET_REST_CREDENTIAL"):
        conf["credential"] = os.environ["INLET_REST_CREDENTIAL"]
        conf["oauth2-server-uri"] = os.environ["INLET_REST_OAUTH_URI"]
        if os.environ.get("INLET_REST_SCOPE"):
            conf["scope"] = os.environ["INLET_REST_SCOPE"]
    if os.environ.get("INLET_REST_SIGV4_NAME"):
        conf["rest.sigv4-enabled"] = "true"
        conf["rest.signing-name"] = os.environ["INLET_REST_SIGV4_NAME"]
        conf["rest.signing-region"] = os.environ.get("AWS_REGION", "us-east-1")
    return RestCatalog("rest", **conf)


def read_pyiceberg(metadata):
    import os

    from pyiceberg.table import StaticTable

    s3 = s3_settings()
    props = {}
    if s3:
        props = {
            "s3.endpoint": s3["endpoint"],
            "s3.access-key-id": s3["key"],
            "s3.secret-access-key": s3["secret"],
            "s3.region": s3["region"],
        }
    glue_table = os.environ.get("INLET_GLUE_TABLE")
    rest_table = os.environ.get("INLET_REST_TABLE")
    if rest_table:
        table = rest_catalog(props).load_table(rest_table)
    elif glue_table:
        from pyiceberg.catalog import load_catalog

        catalog = load_catalog(
            "glue",
            **{
                "type": "glue",
                "glue.endpoint": os.environ["INLET_GLUE_ENDPOINT"],
                "glue.region": os.environ.get("AWS_REGION", "us-east-1"),
                "glue.access-key-id": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
                "glue.secret-access-key": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
                **props,
            },
        )
        table = catalog.load_table(glue_table)
    else:
        table = StaticTable.from_metadata(metadata, properties=props)
    row_filter = os.environ.get("INLET_FILTER")
    scan = table.scan(row_filter=row_filter) if row_filter else table.scan()
    arrow = scan.to_arrow()
    schema = table.schema()
    fields = [
        {
            "id": f.field_id,
            "name": f.name,
            "type": str(f.field_type),
            "required": f.required,
            "doc": f.doc,
        }
        for f in schema.fields
    ]
    snapshot = table.current_snapshot()
    summary = dict(snapshot.summary.additional_properties) if snapshot else {}
    if snapshot:
        summary["operation"] = str(snapshot.summary.operation.value)
    rows = [[canon(v) for v in row.values()] for row in arrow.to_pylist()]
    return {
        "columns": arrow.column_names,
        "types": [str(t) for t in arrow.schema.types],
        "rows": sort_rows(rows),
        "fields": fields,
        "identifier_field_ids": sorted(schema.identifier_field_ids),
        "summary": summary,
        "format_version": table.metadata.format_version,
        "metadata_location": table.metadata_location,
        "partition_spec": str(table.spec()),
        "snapshots": len(table.metadata.snapshots),
        "files": [
            {
                "content": f["content"],
                "path": f["file_path"],
                "partition": json.dumps(f["partition"], default=str, sort_keys=True),
                "records": f["record_count"],
            }
            for f in table.inspect.files().to_pylist()
        ],
    }


def read_duckdb(metadata):
    import duckdb
    import duckdb_extensions

    con = duckdb.connect()
    # avro before iceberg, or iceberg tries to download avro.
    duckdb_extensions.import_extension("avro", con=con)
    duckdb_extensions.import_extension("iceberg", con=con)
    con.sql("LOAD avro")
    con.sql("LOAD iceberg")
    s3 = s3_settings()
    if s3:
        duckdb_extensions.import_extension("httpfs", con=con)
        con.sql("LOAD httpfs")
        host = s3["endpoint"].split("://", 1)[1]
        con.sql(
            f"CREATE SECRET s3 (TYPE s3, KEY_ID '{s3['key']}', SECRET '{s3['secret']}', "
            f"REGION '{s3['region']}', ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false)"
        )
    import os

    where = os.environ.get("INLET_FILTER_SQL")
    query = f"SELECT * FROM iceberg_scan('{metadata}')"
    if where:
        query += f" WHERE {where}"
    rel = con.sql(query)
    columns = rel.columns
    types = [str(t) for t in rel.types]
    # Through Arrow: fetchall() would need pytz for TIMESTAMP WITH TIME ZONE.
    rows = [[canon(v) for v in row.values()] for row in rel.arrow().read_all().to_pylist()]
    return {"columns": columns, "types": types, "rows": sort_rows(rows)}


def read_polars(metadata):
    import polars as pl

    frame = pl.scan_iceberg(metadata, reader_override="native").collect()
    rows = [[canon(v) for v in row.values()] for row in frame.to_arrow().to_pylist()]
    return {"columns": frame.columns, "rows": sort_rows(rows)}


def hyper_value(v, scale):
    """Hyper's own date and timestamp classes as Python's, decimals at the column's scale."""
    from tableauhyperapi import Date, Timestamp

    if isinstance(v, decimal.Decimal) and scale is not None:
        return v.quantize(decimal.Decimal(1).scaleb(-scale))
    if isinstance(v, Timestamp):
        return v.to_datetime()
    if isinstance(v, Date):
        return v.to_date()
    return v


def read_hyper(metadata):
    """Tableau Hyper's Iceberg reader (`external(..., FORMAT => 'iceberg')` on the table's
    folder): local tables only."""
    import os
    import tempfile

    from tableauhyperapi import Connection, HyperProcess, Telemetry

    table_dir = os.path.dirname(os.path.dirname(os.path.abspath(metadata)))
    with tempfile.TemporaryDirectory() as logs:
        params = {"log_dir": logs}
        with HyperProcess(
            telemetry=Telemetry.DO_NOT_SEND_USAGE_DATA_TO_TABLEAU, parameters=params
        ) as hyper:
            with Connection(hyper.endpoint) as con:
                escaped = table_dir.replace("'", "''")
                query = f"SELECT * FROM external('{escaped}', FORMAT => 'iceberg')"
                with con.execute_query(query) as result:
                    columns = [str(c.name).strip('"') for c in result.schema.columns]
                    types = [str(c.type) for c in result.schema.columns]
                    # Hyper's Decimal drops trailing zeros; the column's scale puts them back.
                    scales = [getattr(c.type, "scale", None) for c in result.schema.columns]
                    rows = [
                        [canon(hyper_value(v, scale)) for v, scale in zip(row, scales)]
                        for row in result
                    ]
    return {"columns": columns, "types": types, "rows": sort_rows(rows)}


def main():
    import os

    metadata = sys.argv[1]
    out = {}
    readers = [("pyiceberg", read_pyiceberg), ("duckdb", read_duckdb)]
    if os.environ.get("INLET_POLARS") == "1":
        readers.append(("polars", read_polars))
    if os.environ.get("INLET_HYPER") == "1":
        readers.append(("hyper", read_hyper))
    for name, reader in readers:
        try:
            out[name] = reader(metadata)
        except Exception as e:  # reported to the test, which fails with the message
            out[name] = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
    # The answer is printed; end now. Interpreter shutdown can abort in native extension
    # destructors ("terminate called without an active exception"), which would turn a correct
    # answer into a failed test.
    sys.stdout.flush()
    import os

    os._exit(0)
