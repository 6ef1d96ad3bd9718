"""Independent read of a table folder inlet wrote: DuckDB and pyarrow, neither written here.

usage: parquet_summary.py TABLE_DIR

Prints JSON: {"duckdb": {"rows": N, "checksum": "N"}, "pyarrow": {"rows": N, "id_sum": N}}.
The checksum is order-independent: the sum over rows of the first 60 bits of
md5(concat_ws('|', "id", "k", "amount", "label", epoch_us("at"))), the same expression the Rust test
computes in PostgreSQL.
"""
import json
import os
import sys

import duckdb
import pyarrow.compute as pc
import pyarrow.dataset as ds

table_dir = sys.argv[1]
glob = f"{table_dir}/*.parquet"
con = duckdb.connect()
rows, checksum = con.execute(
    f"""
    SELECT count(*),
           sum(('0x' || substr(md5(concat_ws('|', "id", "k", "amount", "label", epoch_us("at"))), 1, 15))::BIGINT)::HUGEINT
    FROM read_parquet('{glob}')
    """
).fetchone()
table = ds.dataset(table_dir, format="parquet").to_table()
print(
    json.dumps(
        {
            "duckdb": {"rows": rows, "checksum": str(checksum)},
            "pyarrow": {"rows": table.num_rows, "id_sum": pc.sum(table["id"]).as_py()},
        }
    )
)

# The answer is printed; end now. Interpreter shutdown can abort in native extension
# destructors ("terminate called without an active exception", seen once in CI with pyarrow and
# boto3 threads), which would turn a correct answer into a failed test.
sys.stdout.flush()
os._exit(0)
