"""Starts the real `datashare-gateway emulator` binary for boto3 tests.

The binary is `$DATASHARE_GATEWAY_BIN`, or `<repo>/target/debug/datashare-gateway` (build it
with `cargo build` first). Each test gets a fresh emulator on free ports, killed at teardown.
"""

import json
import os
import pathlib
import subprocess
import tempfile
import urllib.request

import boto3
import pytest
from botocore.config import Config

REPO = pathlib.Path(__file__).resolve().parents[2]
REGION = "us-east-1"
PRODUCER_KEY = ("AKIAI44QH8DHBEXAMPLE", "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY")
CONSUMER_KEY = ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")


class Emulator:
    """A running emulator: its URLs, boto3 clients, and admin API helpers."""

    def __init__(self, api, admin):
        self.api = api
        self.admin = admin
        self.endpoint_url = f"http://{api}"

    def client(self, key, total_max_attempts=1, mode="standard"):
        # botocore's `max_attempts` counts retries; `total_max_attempts` counts every attempt,
        # so 1 means no retry at all.
        return boto3.client(
            "redshift",
            region_name=REGION,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=key[0],
            aws_secret_access_key=key[1],
            config=Config(retries={"total_max_attempts": total_max_attempts, "mode": mode}),
        )

    def cloudtrail(self, key, total_max_attempts=1):
        """A boto3 CloudTrail client; by default without retries, so a throttle is seen."""
        return boto3.client(
            "cloudtrail",
            region_name=REGION,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=key[0],
            aws_secret_access_key=key[1],
            config=Config(retries={"total_max_attempts": total_max_attempts, "mode": "standard"}),
        )

    def admin_call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://{self.admin}{path}",
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as res:
            return json.loads(res.read())

    def counters(self, operation):
        return self.admin_call("GET", "/counters")["operations"].get(operation, {})

    def inject_fault(self, **spec):
        return self.admin_call("POST", "/faults", spec)


@pytest.fixture
def emulator():
    binary = os.environ.get(
        "DATASHARE_GATEWAY_BIN", str(REPO / "target" / "debug" / "datashare-gateway")
    )
    fixtures = REPO / "examples" / "emulator-fixtures.toml"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [binary, "emulator", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
             "--fixtures", str(fixtures)],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        try:
            line = proc.stdout.readline()
            if not line:
                log.seek(0)
                raise RuntimeError(f"emulator exited before it was ready: {log.read().decode()}")
            ready = json.loads(line)
            assert ready["event"] == "emulator_listening"
            yield Emulator(ready["api"], ready["admin"])
        finally:
            proc.kill()
            proc.wait(timeout=10)
            proc.stdout.close()


@pytest.fixture
def consumer(emulator):
    return emulator.client(CONSUMER_KEY)


@pytest.fixture
def producer(emulator):
    return emulator.client(PRODUCER_KEY)
