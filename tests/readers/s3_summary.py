"""Independent read of what inlet wrote to S3 (moto in tests): boto3 lists and fetches the
objects, pyarrow reads them.

usage: s3_summary.py ENDPOINT BUCKET PREFIX

Prints JSON: {"keys": [sorted object keys], "rows": total rows, "id_sum": sum of column id}.
"""
import io
import json
import os
import sys

import boto3
from botocore.config import Config
import pyarrow.compute as pc
import pyarrow.parquet as pq

endpoint, bucket, prefix = sys.argv[1:4]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
    region_name="us-east-1",
    # A loaded CI machine can make moto slow to answer; retry rather than fail the test.
    config=Config(retries={"max_attempts": 10, "mode": "standard"}),
)
keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))
rows = 0
id_sum = 0
for key in keys:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    table = pq.read_table(io.BytesIO(body))
    rows += table.num_rows
    id_sum += pc.sum(table["id"]).as_py() or 0
print(json.dumps({"keys": keys, "rows": rows, "id_sum": id_sum}))

# The answer is printed; end now. Interpreter shutdown can abort in native extension
# destructors ("terminate called without an active exception", seen once in CI with pyarrow and
# boto3 threads), which would turn a correct answer into a failed test.
sys.stdout.flush()
os._exit(0)
