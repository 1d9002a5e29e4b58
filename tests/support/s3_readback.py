"""Reads shipped audit objects back with boto3, as an auditor's tooling would.

Usage: s3_readback.py ENDPOINT BUCKET PREFIX
Prints one JSON object: for every object under PREFIX, its versions, Object Lock mode and
retain-until date, the SHA-256 checksum S3 stored and the SHA-256 of its bytes; and what S3
answered to a create-only overwrite and to deleting the locked version.
"""

import base64
import hashlib
import json
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


def main() -> None:
    endpoint, bucket, prefix = sys.argv[1:4]
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIDREADBACK",
        aws_secret_access_key="readback-secret",
        config=Config(s3={"addressing_style": "path"}),
    )
    objects = {}
    versions = s3.list_object_versions(Bucket=bucket, Prefix=prefix).get("Versions", [])
    for version in versions:
        key = version["Key"]
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        entry = objects.setdefault(key, {"versions": 0})
        entry["versions"] += 1
        entry["lock_mode"] = head.get("ObjectLockMode")
        entry["retain_until"] = head["ObjectLockRetainUntilDate"].isoformat() if head.get(
            "ObjectLockRetainUntilDate") else None
        entry["stored_sha256"] = head.get("ChecksumSHA256")
        entry["body_sha256"] = base64.b64encode(hashlib.sha256(body).digest()).decode()
    probe = {}
    if versions:
        first = versions[0]
        try:
            s3.put_object(Bucket=bucket, Key=first["Key"], Body=b"forged", IfNoneMatch="*")
            probe["overwrite"] = "accepted"
        except ClientError as err:
            probe["overwrite"] = err.response["Error"]["Code"]
        try:
            s3.delete_object(Bucket=bucket, Key=first["Key"], VersionId=first["VersionId"])
            probe["delete_version"] = "accepted"
        except ClientError as err:
            probe["delete_version"] = err.response["Error"]["Code"]
    print(json.dumps({"objects": objects, "probe": probe}))


if __name__ == "__main__":
    main()
