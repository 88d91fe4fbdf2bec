"""``vidpipe-cluster`` (``./dev.sh cluster``): the many-machine deployment, tried on one machine.

It starts, on loopback with their data under ``data/cluster/``: PostgreSQL (Dagster's
instance) with PgBouncer in front of it, Redis (Celery's broker), an S3 server (SeaweedFS) with the bucket ``vidpipe``; then
``dagster dev`` (webserver and daemon) on that instance, and two Celery workers, each with a
scratch folder of its own (run as root, each worker sees the other parts' scratch folders and the local
storage folder empty, as on machines of their own). A worker that stops is not restarted: the others carry on, and the steps
it was running are run again on them. Uploads go to ``s3://vidpipe/inbox/``, outputs to
``s3://vidpipe/videos/``; no process reads another's folder or a local storage folder.

``data/cluster/env`` holds the ``export`` lines that point ``vidpipe upload``, the Dagster
CLI and boto3 at the cluster (``source data/cluster/env``). Ctrl-C or SIGTERM stops
everything it started; each part runs under ``vidpipe-service``, which stops its whole tree.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from vidpipe import settings
from vidpipe.loopback import CATALOG_DATABASE, Server, start_pgbouncer, start_postgres, start_redis, start_s3_server

BUCKET = "vidpipe"
WORKERS = ("worker-1", "worker-2")
STOP_SECONDS = 30
INSTANCE_HEADER = """\
# Written by vidpipe-cluster from the project's dagster.yaml, with the instance on PostgreSQL;
# the VIDPIPE_PG_* variables say where (data/cluster/env).
"""


def cluster_dir() -> Path:
    return settings.data_dir() / "cluster"


def instance_yaml() -> str:
    """The project's ``dagster.yaml`` with Dagster's storage in PostgreSQL (SQLAlchemy 2.1 needs the
    psycopg2 scheme named: a bare ``postgresql://`` means psycopg 3)."""
    config = yaml.safe_load((settings.project_dir() / "dagster.yaml").read_text())
    config["storage"] = {
        "postgres": {
            "postgres_db": {
                "hostname": {"env": "VIDPIPE_PG_HOST"},
                "port": {"env": "VIDPIPE_PG_PORT"},
                "username": {"env": "VIDPIPE_PG_USER"},
                "db_name": {"env": "VIDPIPE_PG_DB"},
                "scheme": "postgresql+psycopg2",
            }
        }
    }
    return INSTANCE_HEADER + yaml.safe_dump(config, sort_keys=False)


def s3_credentials(root: Path) -> tuple[str, str]:
    """The S3 server's access key and secret, made once and kept in ``root`` (readable by its owner only)."""
    kept = root / "s3-credentials.json"
    if not kept.exists():
        kept.touch(mode=0o600)
        kept.write_text(json.dumps({"access_key": "vidpipe", "secret_key": secrets.token_hex(20)}))
    credentials = json.loads(kept.read_text())
    return credentials["access_key"], credentials["secret_key"]


def main() -> None:
    root = cluster_dir()
    root.mkdir(parents=True, exist_ok=True)
    stop = _stop_on_signals()
    servers: list[Server] = []
    parts: list[subprocess.Popen[bytes]] = []
    try:
        print("starting PostgreSQL (with PgBouncer), Redis and the S3 server on loopback…", flush=True)
        postgres = start_postgres(root / "postgres", log=root / "postgres.log")
        servers.append(postgres)
        pgbouncer = start_pgbouncer(postgres, root / "pgbouncer", log=root / "pgbouncer.log")
        servers.append(pgbouncer)
        redis = start_redis(root / "redis", log=root / "redis.log")
        servers.append(redis)
        s3 = start_s3_server(root / "s3", BUCKET, *s3_credentials(root), log=root / "s3.log")
        servers.append(s3)
        home = root / "dagster_home"
        home.mkdir(exist_ok=True)
        (home / "dagster.yaml").write_text(instance_yaml())
        environment = {
            "DAGSTER_HOME": str(home),
            **pgbouncer.environment(),
            **s3.environment(),
            "VIDPIPE_CELERY_BROKER": redis.url,
            "VIDPIPE_INBOX": f"s3://{BUCKET}/inbox/",
            "VIDPIPE_STORAGE": f"s3://{BUCKET}/videos/",
            "VIDPIPE_CATALOG": pgbouncer.url(CATALOG_DATABASE),
        }
        vidpipe = str(Path(sys.executable).with_name("vidpipe"))
        subprocess.run([vidpipe, "catalog", "migrate"], env={**os.environ, **environment}, check=True)
        env_file = root / "env"
        env_file.touch(mode=0o600)
        env_file.write_text("".join(f"export {name}={shlex.quote(value)}\n" for name, value in environment.items()))
        service = str(Path(sys.executable).with_name("vidpipe-service"))
        parts.append(_start([service, "dev"], environment, root, "main"))
        # Each worker as if on a machine of its own: the other parts' scratch folders and a local storage
        # folder show empty to it.
        private = {name: _scratch(root, name) for name in ("main", *WORKERS)}
        local_storage = settings.data_dir() / "storage"
        local_storage.mkdir(parents=True, exist_ok=True)
        for worker in WORKERS:
            hidden = [local_storage, *(folder for name, folder in private.items() if name != worker)]
            argv = _walled_off([service, "worker"], hidden)
            parts.append(_start(argv, {**environment, "VIDPIPE_WORKER": worker}, root, worker))
        print(f"vidpipe UI:     http://{settings.ui_host()}:{settings.ui_port()}")
        print(f"S3 endpoint:    {s3.endpoint}   (bucket {BUCKET})")
        print(f"upload inbox:   {environment['VIDPIPE_INBOX']}   (source {env_file}, then: vidpipe upload FILE)")
        print(f"outputs:        {environment['VIDPIPE_STORAGE']}")
        print(f"workers:        {', '.join(WORKERS)} (Celery, broker {redis.url}); logs in {root}", flush=True)
        main_part, workers = parts[0], dict(zip(WORKERS, parts[1:], strict=True))
        while not stop and main_part.poll() is None:
            for name, process in list(workers.items()):
                if process.poll() is not None:
                    # A lost worker machine: the others carry on, and its step is run again on one of them.
                    print(f"vidpipe-cluster: {name} stopped (exit {process.returncode}); the others carry on",
                          file=sys.stderr, flush=True)  # fmt: skip
                    del workers[name]
            time.sleep(0.5)
        if not stop:
            print(
                "vidpipe-cluster: the UI and daemon stopped on their own; stopping the rest",
                file=sys.stderr,
                flush=True,
            )
    finally:
        for part in parts:
            if part.poll() is None:
                part.send_signal(signal.SIGTERM)
        for part in parts:
            try:
                part.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                part.kill()
                part.wait()
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait_stopped()
    sys.exit(128 + stop[0] if stop else 1)


def _scratch(root: Path, name: str) -> Path:
    scratch = root / "scratch" / name
    scratch.mkdir(parents=True, exist_ok=True)
    return scratch


def _walled_off(argv: list[str], hidden: list[Path]) -> list[str]:
    """``argv`` in a mount namespace of its own in which each folder of ``hidden`` shows an empty, unwritable
    file system in place of what it holds. Needs root (``unshare``, ``mount``); for anyone else, ``argv`` as
    it is (the parts then share what the user can read)."""
    if os.geteuid() != 0:
        return argv
    mount_each = 'while [ "$1" != -- ]; do mount -t tmpfs -o ro,size=4k,mode=0 walled-off "$1" || exit 1; shift; done'
    script = f'{mount_each}; shift; exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *map(str, hidden), "--", *argv]


def _start(argv: list[str], environment: dict[str, str], root: Path, name: str) -> subprocess.Popen[bytes]:
    """One part under ``vidpipe-service``, with its own scratch folder, its output in ``<name>.log``."""
    env = {**os.environ, **environment, "VIDPIPE_SCRATCH": str(_scratch(root, name))}
    with open(root / f"{name}.log", "ab") as log:
        return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)


def _stop_on_signals() -> list[int]:
    """A list that gets the number of the first SIGTERM, SIGINT or SIGHUP received."""
    received: list[int] = []

    def note(signum: int, _frame: object) -> None:
        if not received:
            received.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, note)
    return received


if __name__ == "__main__":
    main()
