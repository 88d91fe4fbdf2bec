"""S10: what the control plane costs at 1k, 100k and 1M videos, on a synthetic catalog and partition set.

Each size gets a fresh SQLite instance holding one dynamic partition per video and a SQLite catalog holding
one row per video (bulk inserts: no video is encoded). Then, per size:

- the upload sensor's evaluation with 10 new uploads in a folder inbox (median of 3, fresh uploads each),
  beside what its old first step cost (reading every partition key, ``get_dynamic_partitions``);
- the gallery's first page and a search page through ``vidpipe serve``'s app over HTTP (median of 5);
- the UI's asset-partitions query (``PartitionHealthQuery``, as the asset page sends it) against a real
  ``dagster-webserver``, with the live partition set;
- the catalog's bytes per video.

On S3, the requests of a sensor tick with one new upload in an S3 inbox, with 1k and with ``s3_max``
stored videos (one object per video folder, which is what a listing of folders pays for).
"""

from __future__ import annotations

import importlib
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from types import ModuleType

import dagster as dg

from vidpipe.catalog import State, Video, migrate, open_catalog
from vidpipe.definitions import build_definitions
from vidpipe.defs.catalog import CatalogResource
from vidpipe.defs.partitions import VIDEOS
from vidpipe.defs.resources import FolderInbox, InboxResource, S3Inbox
from vidpipe.loopback import start_s3_server

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SIZES = (1_000, 100_000, 1_000_000)
LIVE_PARTITIONS = 300_000
"""The live partition set of a platform taking 10,000 uploads a day with ``VIDPIPE_RETIRE_AFTER_DAYS`` at its
default, 30."""
NEW_UPLOADS = 10
WORDS = [
    f"{a}{b}"
    for a in ("beach", "city", "cat", "dog", "trip", "party", "game", "talk", "demo", "walk")
    for b in ("", "s", "side", "day", "night", "time", "cam", "clip", "vlog", "film")
]
PARTITION_HEALTH_QUERY = """
query PartitionHealthQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      id
      partitionKeysByDimension { name type partitionKeys }
      assetPartitionStatuses {
        ... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions }
      }
    }
  }
}
"""


def synthetic_rows(count: int, live: int, seed: int = 0) -> Iterator[Video]:
    """Videos with names of three words from a vocabulary of 100 (each word in ~3% of names) and a number,
    one every 10 s; a tenth refused; the ready ones older than the newest ``live`` retired."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1)
    for i in range(count):
        content = f"{i:012x}"
        at = start + timedelta(seconds=10 * i)
        name = f"{rng.choice(WORDS)} {rng.choice(WORDS)} {rng.choice(WORDS)} {i}.mp4"
        if i % 10 == 0:
            yield Video(f"v-{content}", name, "rejected", at, at, sha256=content * 5 + "0000", reason="not a video")
        else:
            state: State = "retired" if i < count - live else "ready"
            yield Video(
                f"v-{content}", name, state, at, at, sha256=content * 5 + "0000", duration=30.0,
                size=20_000_000, thumbnail="thumbnails/first_frame_320w.jpg", manifest="manifest.json",
            )  # fmt: skip


@contextmanager
def world(size: int, live: int) -> Iterator[tuple[dg.DagsterInstance, str, Path, Callable[[], None]]]:
    """A catalog of ``size`` rows and an instance with the newest ``live`` of them as video partitions (the
    others retired): (instance, catalog URL, folder, a function that adds the retired ones as partitions too)."""
    folder = Path(tempfile.mkdtemp(prefix=f"vidpipe-s10-{size}-"))
    home = folder / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(REPO / "dagster.yaml")
    url = f"sqlite:///{folder / 'catalog.sqlite'}"
    migrate(url)
    open_catalog(url).replace_all(synthetic_rows(size, live))
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with dg.DagsterInstance.get() as instance:
            keys = [f"v-{i:012x}" for i in range(size)]

            def add(first: int, end: int) -> None:
                for start in range(first, end, 10_000):
                    instance.add_dynamic_partitions(VIDEOS, keys[start : min(end, start + 10_000)])

            add(size - live, size)
            yield instance, url, folder, partial(add, 0, size - live)
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous
        shutil.rmtree(folder, ignore_errors=True)


def sensor_tick(instance: dg.DagsterInstance, inbox: InboxResource, catalog_url: str) -> tuple[float, dg.SensorResult]:
    sensor = build_definitions().resolve_sensor_def("upload_sensor")
    resources = {"inbox": inbox, "catalog": CatalogResource(url=catalog_url)}
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        started = time.perf_counter()
        result = sensor(context)
        elapsed = time.perf_counter() - started
    assert isinstance(result, dg.SensorResult), result
    return elapsed, result


def sensor_seconds(instance: dg.DagsterInstance, catalog_url: str, folder: Path, repeat: int = 3) -> float:
    times = []
    for attempt in range(repeat):
        inbox = folder / f"inbox-{attempt}"
        inbox.mkdir()
        for i in range(NEW_UPLOADS):
            (inbox / f"new upload {attempt}-{i}.mp4").write_bytes(os.urandom(64 * 1024))
        elapsed, result = sensor_tick(instance, FolderInbox(path=str(inbox), settle_seconds=0), catalog_url)
        assert len(result.run_requests or []) == NEW_UPLOADS, result
        times.append(elapsed)
    return statistics.median(times)


def timed(action: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def gallery_seconds(catalog_url: str, folder: Path) -> dict[str, float]:
    """The gallery's first page, a search page and the JSON API over HTTP, through the real app."""
    from vidpipe.defs.storage import LocalVideoStorage
    from vidpipe.web.app import build_app

    app = build_app(LocalVideoStorage(root=str(folder / "storage")), open_catalog(catalog_url), folder)
    with test_helpers().served(app) as base:

        def get(path: str) -> Callable[[], None]:
            def fetch() -> None:
                with urllib.request.urlopen(base + path, timeout=30) as response:
                    assert response.status == 200
                    response.read()

            return fetch

        get("/")()  # the templates compiled once
        return {
            "first page": timed(get("/"), 5),
            "search page": timed(get("/?q=beachside"), 5),
            "search of two words": timed(get("/?q=beachside+catnight"), 5),
            "refused, second page": timed(get(_second_page(base, "/api/videos?state=rejected")), 5),
        }


def _second_page(base: str, path: str) -> str:
    with urllib.request.urlopen(base + path, timeout=30) as response:
        return str(json.loads(response.read())["next"])


def partition_query_seconds(folder: Path, catalog_url: str) -> float:
    """``PartitionHealthQuery`` for the source asset, as the UI's asset page sends it, on a real webserver."""
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(folder / "dagster_home"),
        "VIDPIPE_CATALOG": catalog_url,
        "VIDPIPE_STORAGE": str(folder / "storage"),
        "VIDPIPE_INBOX": str(folder / "inbox-ui"),
    }
    argv = [str(BIN / "dagster-webserver"), "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    body = json.dumps({"query": PARTITION_HEALTH_QUERY, "variables": {"assetKey": {"path": ["source_video"]}}})
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=body.encode(), headers={"Content-Type": "application/json"}
    )

    def ask() -> None:
        with urllib.request.urlopen(request, timeout=600) as response:
            answer = json.loads(response.read())
        assert "errors" not in answer and answer["data"]["assetNodeOrError"].get("id"), str(answer)[:500]

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                ask()
                break
            except (OSError, AssertionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        return timed(ask, 3)
    finally:
        server.terminate()
        server.wait(timeout=30)


def catalog_bytes_per_video(catalog_url: str, size: int) -> float:
    path = catalog_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return os.path.getsize(path) / size


def scale_rows(sizes: tuple[int, ...] = SIZES) -> tuple[dict[int, dict[str, float]], list[str]]:
    """Per size: every figure of S10 but the S3 requests."""
    figures: dict[int, dict[str, float]] = {}
    for size in sizes:
        with world(size, min(size, LIVE_PARTITIONS)) as (instance, url, folder, add_retired):
            print(f"S10: {size:,} videos built", file=sys.stderr, flush=True)
            found = {
                "sensor, 10 new uploads": sensor_seconds(instance, url, folder),
                **{f"gallery {what}": seconds for what, seconds in gallery_seconds(url, folder).items()},
                "UI partitions query, live partitions": partition_query_seconds(folder, url),
                "catalog bytes per video": catalog_bytes_per_video(url, size),
            }
            add_retired()
            found |= {
                "UI partitions query, every video a partition": partition_query_seconds(folder, url),
                "reading every partition key (the sensor before)": timed(
                    partial(instance.get_dynamic_partitions, VIDEOS)
                ),
            }
            figures[size] = found
            print(f"S10: {size:,}: {found}", file=sys.stderr, flush=True)
    return figures, [f"{size:,}" for size in sizes]


def s3_requests(sizes: tuple[int, int]) -> dict[int, list[str]]:
    """The S3 requests of one sensor tick that finds one new upload in an S3 inbox, beside each of ``sizes``
    stored videos in the same bucket."""
    folder = Path(tempfile.mkdtemp(prefix="vidpipe-s10-s3-"))
    server = start_s3_server(folder / "s3", "s10", "s10-key", uuid.uuid4().hex, log=folder / "weed.log")
    client = server.client()
    found: dict[int, list[str]] = {}
    stored = 0
    try:
        for os_name, value in server.environment().items():
            os.environ[os_name] = value
        with dg.instance_for_test() as instance:
            url = f"sqlite:///{folder / 'catalog.sqlite'}"
            migrate(url)
            with ThreadPoolExecutor(16) as pool:
                for size in sorted(sizes):

                    def put(i: int) -> None:
                        body = json.dumps({"file": "source.mp4", "name": f"v{i}.mp4", "sha256": f"{i:064x}"})
                        client.put_object(Bucket="s10", Key=f"videos/v-{i:012x}/source.json", Body=body.encode())

                    list(pool.map(put, range(stored, size)))
                    stored = size
                    print(f"S10: {size:,} videos stored in S3", file=sys.stderr, flush=True)
                    client.put_object(Bucket="s10", Key=f"inbox/new-{size}.mp4", Body=os.urandom(64 * 1024))
                    from dagster_aws.s3 import S3Resource

                    inbox = S3Inbox(
                        s3=S3Resource(),
                        bucket="s10",
                        prefix="inbox/",
                        scratch=str(folder / "scratch"),
                        settle_seconds=0,
                    )
                    with test_helpers().counted_s3_requests() as calls:
                        _elapsed, result = sensor_tick(instance, inbox, url)
                    assert result.run_requests, result
                    client.delete_object(Bucket="s10", Key=f"inbox/new-{size}.mp4")
                    found[size] = list(calls)
    finally:
        server.terminate()
        server.wait_stopped(timeout=2)  # nothing in it to keep
        shutil.rmtree(folder, ignore_errors=True)
    return found


def test_helpers() -> ModuleType:
    """The tests' counting helpers (``vidpipe_tests/catalogs.py``, in the repository, not installed)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module("vidpipe_tests.catalogs")


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scenario_catalog_scale(sizes: tuple[int, ...] = SIZES, s3_max: int = 100_000) -> list[dict]:
    """S10's rows: the figures at each size, judged at the largest against the issue's targets."""
    figures, _labels = scale_rows(sizes)
    small, large = figures[min(sizes)], figures[max(sizes)]
    at = f"at {max(sizes):,} videos"
    requests = s3_requests((1_000, s3_max))
    rows = [
        _row("sensor evaluation, 10 new uploads, " + at, large["sensor, 10 new uploads"], "s", "≤", 0.5),
        _row(
            f"sensor evaluation {at} / at {min(sizes):,}",
            large["sensor, 10 new uploads"] / small["sensor, 10 new uploads"], "ratio", "≤", 1.2,
        ),
        _row("gallery first page " + at, large["gallery first page"] * 1000, "ms", "≤", 100),
        _row("gallery search page " + at, large["gallery search page"] * 1000, "ms", "≤", 100),
        _row(
            f"UI asset partitions query, {min(max(sizes), LIVE_PARTITIONS):,} live partitions, " + at,
            large["UI partitions query, live partitions"], "s", "≤", 2.0,
        ),
        _row(
            "UI asset partitions query, every video a partition (no retirement), " + at,
            large["UI partitions query, every video a partition"], "s", "", None,
        ),
        _row("catalog bytes per video " + at, large["catalog bytes per video"], "bytes", "", None),
        {
            "scenario": "S10", "what": f"S3 requests of a tick with one new upload, {s3_max:,} stored videos vs 1,000",
            "value": len(requests[s3_max]), "baseline": len(requests[1_000]), "target": "equal",
            "met": requests[s3_max] == requests[1_000], "requests": requests[s3_max],
        },
    ]  # fmt: skip
    for size, found in figures.items():
        for what, value in found.items():
            rows.append(_row(f"{what}, at {size:,} videos", value, "bytes" if "bytes" in what else "s", "", None))
    return rows


def _row(what: str, value: float, unit: str, sense: str, target: float | None) -> dict:
    met = True if target is None else (value <= target if sense == "≤" else value >= target)
    return {
        "scenario": "S10", "what": what, "value": round(value, 4), "unit": unit,
        "target": f"{sense} {target} {unit}" if target is not None else "reported", "met": met,
    }  # fmt: skip
