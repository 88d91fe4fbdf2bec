"""A real ``vidpipe-cluster`` (PostgreSQL, Redis, SeaweedFS, ``dagster dev``, two Celery workers on loopback),
started as ``./dev.sh cluster`` starts it, for ``test_cluster.py`` and the cluster benchmarks."""

import json
import os
import shlex
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import pytest

from vidpipe.cluster import BUCKET, WORKERS
from vidpipe_tests.harness import BIN_DIR, REPO_ROOT, code_location_loaded, free_port, processes_with, wait_until

STARTUP_TIMEOUT = 120


def exported(env_file: Path) -> dict[str, str]:
    """The variables ``source data/cluster/env`` sets."""
    pairs = (shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in env_file.read_text().splitlines())
    return dict(pairs)


def cluster_processes(data: Path, *also: str) -> list[tuple[int, list[bytes]]]:
    """Every live process started for this cluster (they all run with its data folder in their environment)
    that also has each ``NAME=value`` of ``also`` there: (pid, command line)."""
    return processes_with(f"VIDPIPE_DATA={data}", *also)


@dataclass
class Cluster:
    process: subprocess.Popen[bytes]
    url: str
    env: dict[str, str]
    """What ``source data/cluster/env`` sets."""
    data: Path
    s3: Any

    def upload(self, *files: Path) -> list[str]:
        argv = [str(BIN_DIR / "vidpipe"), "upload", *map(str, files)]
        done = subprocess.run(argv, env={**os.environ, **self.env}, capture_output=True, text=True, check=True)
        return done.stdout.splitlines()

    def objects(self, prefix: str = "videos/") -> dict[str, dict]:
        """Key → listing entry (size, ETag, LastModified) of every object under ``prefix``."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return {item["Key"]: item for page in pages for item in page.get("Contents", [])}

    def stored(self, suffix: str) -> list[str]:
        return sorted(key for key in self.objects() if key.endswith(suffix))

    def manifest(self, key: str) -> dict:
        return json.loads(self.s3.get_object(Bucket=BUCKET, Key=f"videos/{key}/manifest.json")["Body"].read())

    def complete(self) -> list[str]:
        """The keys of the videos whose manifest says they are complete (not only playable)."""
        keys = [name.split("/")[1] for name in self.stored("/manifest.json")]
        return [key for key in keys if self.manifest(key).get("state") == "complete"]

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        wait_until(condition, timeout, what, on_poll=lambda: self.process.poll() is None or pytest.fail("it stopped"))

    @contextmanager
    def instance(self) -> Iterator[dg.DagsterInstance]:
        """The cluster's Dagster instance (on its PostgreSQL)."""
        with pytest.MonkeyPatch.context() as patch:
            for name, value in self.env.items():
                if name.startswith(("VIDPIPE_PG_", "DAGSTER_HOME")):
                    patch.setenv(name, value)
            with dg.DagsterInstance.get() as instance:
                yield instance


@contextmanager
def running_cluster(tmp_path: Path, ffmpeg_pool: int | None = None) -> Iterator[Cluster]:
    """``vidpipe-cluster`` with its data under ``tmp_path``, once its webserver has loaded vidpipe; the
    ``ffmpeg`` pool's limit set to ``ffmpeg_pool`` if given. Stopped afterwards; the tails of its logs are
    printed if the block fails."""
    data = tmp_path / "data"
    port = free_port()
    env = {**os.environ, "VIDPIPE_DATA": str(data), "VIDPIPE_PORT": str(port)}
    log = tmp_path / "cluster.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(BIN_DIR / "vidpipe-cluster")], env=env, cwd=REPO_ROOT, stdout=out, stderr=out, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: code_location_loaded(url),
            STARTUP_TIMEOUT,
            "the cluster's webserver and code",
            on_poll=lambda: process.poll() is None or pytest.fail(log.read_text()[-5000:]),
        )
        exports = exported(data / "cluster" / "env")
        s3 = boto3.client(
            "s3",
            endpoint_url=exports["AWS_ENDPOINT_URL"],
            aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"],
            region_name=exports["AWS_REGION"],
        )
        if ffmpeg_pool is not None:
            pool = [str(BIN_DIR / "dagster"), "instance", "concurrency", "set", "ffmpeg", str(ffmpeg_pool)]
            subprocess.run(pool, env={**env, **exports}, check=True, capture_output=True)
        yield Cluster(process, url, exports, data, s3)
    except BaseException:
        for name in ("cluster.log", "data/cluster/main.log", *(f"data/cluster/{w}.log" for w in WORKERS)):
            path = tmp_path / name
            if path.exists():
                print(f"----- {name} -----", *path.read_text(errors="replace").splitlines()[-80:], sep="\n")
        raise
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
