"""Copies every object under a prefix of an S3 bucket (moto in tests) into a local folder, so
the test can replay what inlet wrote to S3 with the same reader as for a local target.

usage: s3_download.py ENDPOINT BUCKET PREFIX DEST
"""
import os
import sys

import boto3
from botocore.config import Config

endpoint, bucket, prefix, dest = sys.argv[1:5]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
    region_name="us-east-1",
    config=Config(retries={"max_attempts": 10, "mode": "standard"}),
)
count = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
    for obj in page.get("Contents", []):
        key = obj["Key"]
        local = os.path.join(dest, os.path.relpath(key, prefix))
        os.makedirs(os.path.dirname(local), exist_ok=True)
        s3.download_file(bucket, key, local)
        count += 1
print(count)
