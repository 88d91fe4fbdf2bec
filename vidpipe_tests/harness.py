"""Helpers shared by the test modules.

vidpipe's sensor and asset graph run in-process against a real (temporary) instance (``Pipeline``,
``SensorHarness``); the daemon stack, a real ``dagster-daemon`` and ``dagster-webserver`` run as
processes against one (``DagsterStack``, started by the ``dagster_stack`` fixture in conftest.py).
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import dagster as dg
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunRecord, RunsFilter
from dagster_aws.s3 import S3Resource

from vidpipe.catalog import migrate
from vidpipe.definitions import build_assets, build_definitions
from vidpipe.defs.catalog import CatalogResource
from vidpipe.defs.partitions import VIDEOS, failure_reason, upload_tags
from vidpipe.defs.resources import FFmpegResource, FolderInbox, InboxResource, step_values
from vidpipe.defs.sensors import failed_video_runs
from vidpipe.defs.storage import LocalVideoStorage
from vidpipe.media.encoder import build_encode_command, run_encode
from vidpipe.media.files import sha256_file
from vidpipe.media.keys import partition_key
from vidpipe.media.ladder import plan_ladder
from vidpipe.media.validate import validate_upload
from vidpipe.processes import process_start_time

T = TypeVar("T")
BUCKET = "vidpipe-test"
"""The bucket of the ``s3_server`` fixture (conftest.py)."""
RUN_KEY_TAG, SENSOR_NAME_TAG = "dagster/run_key", "dagster/sensor_name"


@contextmanager
def processed(upload, storage_root):
    """``upload`` processed as the sensor's run would, in a fresh instance: (pipeline, key, result)."""
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(instance, storage_root)
        key = pipeline.add(upload)
        yield pipeline, key, pipeline.materialize(key, upload=upload)


def catalog_beside(storage_root: Path) -> CatalogResource:
    """The catalog of the storage at ``storage_root`` (a folder, or any name for an S3 prefix's): a SQLite file
    beside it, made on first use."""
    url = f"sqlite:///{storage_root.parent / (storage_root.name + '.catalog.sqlite')}"
    migrate(url)
    return CatalogResource(url=url)


class Pipeline:
    def __init__(self, instance, storage_root):
        self.instance = instance
        self.storage_root = storage_root
        # Steps hand values on as in a deployment: kept in the video's storage (``StepValues``).
        self.resources = {
            "storage": LocalVideoStorage(root=str(storage_root)),
            "catalog": catalog_beside(storage_root),
            "ffmpeg": FFmpegResource(),
            "io_manager": step_values,
        }

    def add(self, clip) -> str:
        key = partition_key(clip.name, sha256_file(clip))
        self.instance.add_dynamic_partitions(VIDEOS, [key])
        return key

    def materialize(self, key, *, upload=None, inbox=None, assets=None, selection=None, tags=None, raise_on_error=True):
        """A run as the sensor requests it for ``upload`` (its folder serves as the inbox, unless ``inbox``
        is a folder or an inbox resource), or a backfill."""
        inbox = inbox or (upload.parent if upload else self.storage_root / "empty-inbox")
        if not isinstance(inbox, InboxResource):
            inbox = FolderInbox(path=str(inbox))
        return dg.materialize(
            assets or build_assets(),
            selection=selection,
            instance=self.instance,
            partition_key=key,
            resources={**self.resources, "inbox": inbox},
            tags={**(upload_tags(upload.name) if upload else {}), **(tags or {})},
            raise_on_error=raise_on_error,
        )

    def latest_metadata(self, asset_key, key) -> dict:
        event = self.instance.get_latest_materialization_event(asset_key)
        assert event.asset_materialization.partition == key
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def step_failures(result) -> dict[str, str]:
    """Failed step → the description of its ``Failure`` (what the UI shows)."""
    return {event.step_key: failure_reason(event) for event in result.all_events if event.is_step_failure}


class SensorHarness:
    """Evaluates the sensor the way the daemon does: cursor carried over, partition requests applied,
    and a (not yet started) run created for each request whose run key has none yet."""

    def __init__(self, instance, inbox, settle_seconds, **inbox_settings):
        self.instance = instance
        self.sensor = build_definitions().resolve_sensor_def("upload_sensor")
        self.resources = {
            "inbox": FolderInbox(path=str(inbox), settle_seconds=settle_seconds, **inbox_settings),
            "catalog": catalog_beside(inbox.parent / "storage"),
        }
        self.cursor = None

    def tick(self, *, create_runs=True) -> dg.SensorResult:
        """One evaluation; ``create_runs=False`` is a tick whose run creation failed (its cursor is not kept)."""
        with dg.build_sensor_context(instance=self.instance, cursor=self.cursor, resources=self.resources) as context:
            result = self.sensor(context)
        for request in result.dynamic_partitions_requests:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        if create_runs:
            for request in result.run_requests:
                self.create_run(request)
            self.cursor = result.cursor
        return result

    def create_run(self, request: dg.RunRequest) -> None:
        tags = {RUN_KEY_TAG: request.run_key, SENSOR_NAME_TAG: self.sensor.name}
        if self.instance.get_runs(dg.RunsFilter(tags=tags), limit=1):
            return
        tags |= {**request.tags, "dagster/partition": request.partition_key}
        self.instance.add_run(
            dg.DagsterRun(
                job_name="process_video", run_id=str(uuid.uuid4()), tags=tags, status=dg.DagsterRunStatus.NOT_STARTED
            )
        )


def evaluate_failed_video_runs(pipeline, result) -> None:
    """The run-failure sensor, as the daemon evaluates it for ``result``'s failed run."""
    [run_failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE]
    context = dg.build_run_status_sensor_context(
        sensor_name="failed_video_runs",
        dagster_event=run_failure,
        dagster_instance=pipeline.instance,
        dagster_run=pipeline.instance.get_run_by_id(result.run_id),
        resources={"storage": pipeline.resources["storage"]},
    ).for_run_failure()
    failed_video_runs(context)


def encode_upload(source, out_dir, rungs=None):
    """The media path of one upload without Dagster: the gate, the ladder plan, one ffmpeg run."""
    info = validate_upload(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    plans = [p for p in plan_ladder(info).renditions if rungs is None or p.rung.name in rungs]
    return info, run_encode(build_encode_command(source, info, plans, out_dir), info).outputs


def wait_until(
    condition: Callable[[], T | None],
    timeout: float,
    what: str,
    on_poll: Callable[[], None] = lambda: None,
    *,
    poll_seconds: float = 0.5,
) -> T:
    """Poll ``condition`` until it returns something truthy (and return that); ``on_poll`` may fail fast."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        on_poll()
        result = condition()
        if result:
            return result
        time.sleep(poll_seconds)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


# --- the daemon stack: a real dagster-daemon and dagster-webserver (the `dagster_stack` fixture) ---

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN_DIR = Path(sys.executable).parent
SETTLE_SECONDS = 0.5
STARTUP_TIMEOUT = 30
RUN_TIMEOUT = 90
LOG_TAIL_LINES = 150

CODE_LOCATIONS = """
query CodeLocations {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}
"""

ENCODE_TIMEOUT = 60
"""From an upload to its encode in flight, the stack starting meanwhile."""
RECOVERY_TIMEOUT = 150


@dataclass
class DagsterStack:
    """The running daemon and webserver, the folders they use and the instance they share."""

    instance: DagsterInstance
    inbox: Path
    storage: Path
    url: str
    processes: dict[str, subprocess.Popen]
    logs: dict[str, Path]
    commands: dict[str, list[str]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPO_ROOT

    def start_all(self, log_suffix: str = "") -> None:
        """Start every command (again, after a stop or a crash) on the same instance, inbox and storage.

        Logs are written beside ``DAGSTER_HOME``, one per command and start.
        """
        for name in self.commands:
            self.start_one(name, log_suffix)

    def start_one(self, name: str, log_suffix: str = "") -> None:
        log = self.logs[name + log_suffix] = Path(self.env["DAGSTER_HOME"]).parent / f"{name}{log_suffix}.log"
        self.processes[name] = start(self.commands[name], self.env, log, self.cwd)

    def running_processes(self) -> list[int]:
        """Every live process of this stack, ffmpeg and run workers included: they inherit its DAGSTER_HOME."""
        found = processes_with(f"DAGSTER_HOME={self.env['DAGSTER_HOME']}")
        return [pid for pid, _ in found if process_start_time(pid) is not None]  # None: a zombie

    def crash(self) -> None:
        """kill -9 every process group of the stack at once, as a power cut or the OOM killer would."""
        groups = {os.getpgid(pid) for pid in self.running_processes()} - {os.getpgrp()}
        for group in groups:
            os.killpg(group, signal.SIGKILL)
        for process in self.processes.values():
            process.wait()

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                pytest.fail(f"{name} exited with code {process.returncode}")

    def graphql(self, query: str, variables: dict) -> dict:
        return graphql(self.url, query, variables)

    @contextmanager
    def logs_shown_on_failure(self) -> Iterator[None]:
        """Print the tail of every process log if the block fails, so a CI failure explains itself."""
        try:
            yield
        except BaseException:
            for name, path in self.logs.items():
                lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
                print(f"----- {name} log ({path}), last {len(lines)} lines -----", *lines, sep="\n")
            raise


def command_lines() -> list[list[bytes]]:
    """The command line of every process running now, as ``/proc/<pid>/cmdline`` splits it."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                found.append((entry / "cmdline").read_bytes().split(b"\0"))
        except OSError:  # gone since the listing
            continue
    return found


def processes_with(*environment: str) -> list[tuple[int, list[bytes]]]:
    """Every process that has each ``NAME=value`` of ``environment`` in its environment: (pid, command line)."""
    markers = [variable.encode() for variable in environment]
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and all(m in (entry / "environ").read_bytes().split(b"\0") for m in markers):
                found.append((int(entry.name), (entry / "cmdline").read_bytes().split(b"\0")))
        except OSError:  # gone, or not ours to read
            continue
    return found


def graphql(url: str, query: str, variables: dict) -> dict:
    """The ``data`` of a GraphQL query to the webserver at ``url``, as the UI sends it."""
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.load(response)
    assert "errors" not in body, body["errors"]
    return body["data"]


PARTITION_STATUSES = """
query PartitionStatuses($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    __typename
    ... on AssetNode {
      assetPartitionStatuses {
        __typename
        ... on DefaultPartitionStatuses { materializedPartitions failedPartitions }
      }
    }
    ... on AssetNotFoundError { message }
  }
}
"""


def partition_statuses(url: str, asset_path: list[str]) -> tuple[list[str], list[str]]:
    """The partitions of an asset the webserver at ``url`` reports materialized, and those it reports failed."""
    node = graphql(url, PARTITION_STATUSES, {"assetKey": {"path": asset_path}})["assetNodeOrError"]
    assert node["__typename"] == "AssetNode", node
    statuses = node["assetPartitionStatuses"]
    assert statuses["__typename"] == "DefaultPartitionStatuses", statuses
    return statuses["materializedPartitions"], statuses["failedPartitions"]


def materialized_partitions(url: str, asset_path: list[str]) -> list[str]:
    """The partitions of an asset the webserver at ``url`` reports materialized (none may have failed)."""
    materialized, failed = partition_statuses(url, asset_path)
    assert failed == []
    return materialized


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(argv: list[str], env: dict[str, str], log: Path, cwd: Path = REPO_ROOT) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def signal_groups(processes: list[subprocess.Popen], sig: signal.Signals) -> None:
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)


def stop(processes: list[subprocess.Popen], grace_seconds: float = 10) -> None:
    """SIGTERM every process group, then SIGKILL whatever is left of them (code servers, run workers)."""
    signal_groups(processes, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    signal_groups(processes, signal.SIGKILL)
    for process in processes:
        process.wait()


def webserver_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError):
        return False


def code_location_loaded(url: str, name: str = "vidpipe") -> bool:
    """Whether the webserver at ``url`` has loaded vidpipe's definitions; fails fast if they raised.

    A code server that is not listening yet is not a failure: a webserver that started first shows the
    location as unreachable until its watch of the code server sees it up, and then loads it."""
    if not webserver_answers(url):
        return False
    workspace = graphql(url, CODE_LOCATIONS, {})["workspaceOrError"]
    assert workspace["__typename"] == "Workspace", workspace
    entry = next(e for e in workspace["locationEntries"] if e["name"] == name)
    location = entry["locationOrLoadError"]
    if location and location["__typename"] == "PythonError":
        if "DagsterUserCodeUnreachableError" in location["message"]:
            return False
        pytest.fail(f"code location {name} failed to load: {location['message']}")
    return entry["loadStatus"] == "LOADED"


def upload(clip: Path, inbox: Path, name: str) -> float:
    """Copy ``clip`` in under a hidden temporary name, rename it into place; return when it appeared."""
    temporary = inbox / f".{name}.part"
    shutil.copyfile(clip, temporary)
    os.rename(temporary, inbox / name)
    return time.time()


def process_video_runs(instance: DagsterInstance) -> list[RunRecord]:
    """Every process_video run so far; fails fast once one has failed."""
    records = instance.get_run_records(RunsFilter(job_name="process_video"))
    for record in records:
        if record.dagster_run.status == DagsterRunStatus.FAILURE:
            pytest.fail(f"process_video run {record.dagster_run.run_id} failed")
    return records


def sensor_ticks(instance: DagsterInstance, sensor_name: str = "upload_sensor") -> list:
    return [
        tick
        for state in instance.all_instigator_state()
        if state.instigator_name == sensor_name
        for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id)
    ]


def fail_on_sensor_error(instance: DagsterInstance) -> None:
    for tick in sensor_ticks(instance):
        if tick.is_failure:
            pytest.fail(f"upload_sensor tick failed: {tick.error}")


def runs_of(instance: DagsterInstance, status: DagsterRunStatus) -> list[RunRecord]:
    return list(instance.get_run_records(RunsFilter(job_name="process_video", statuses=[status])))


def partial_renditions(storage: Path) -> list[Path]:
    """Renditions being written: hidden ``.name.<random>.partial.ext`` files (see README)."""
    return list(storage.glob("*/renditions/.*.partial.*"))


def s3_resource(server) -> S3Resource:
    """An ``S3Resource`` for the ``s3_server`` fixture, credentials as a deployment's environment gives them."""
    return S3Resource(
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
    )


def stream_files(manifest: dict, read: Callable[[str], str]) -> list[str]:
    """Every file of a manifest's stream: the master and the DASH manifest, each media playlist with the
    init segment and segments it lists, and each init segment and segment the DASH manifest's templates
    and timelines name (paths relative to the video's folder)."""
    streams = manifest["streams"]
    files = [streams["hls"]["path"], streams["dash"]["path"]]
    master = read(streams["hls"]["path"])
    folder = streams["hls"]["path"].rsplit("/", 1)[0]
    playlists = [line for line in master.splitlines() if line and not line.startswith("#")]
    playlists += re.findall(r'URI="([^"]+)"', master)
    for playlist in playlists:
        files.append(f"{folder}/{playlist}")
        base = f"{folder}/{playlist.rsplit('/', 1)[0]}"
        text = read(f"{folder}/{playlist}")
        names = [line for line in text.splitlines() if line and not line.startswith("#")]
        files += [f"{base}/{name}" for name in [*re.findall(r'URI="([^"]+)"', text), *names]]
    mpd = read(streams["dash"]["path"])
    for template in re.finditer(r'<SegmentTemplate[^>]*initialization="([^"]+)" media="([^"]+)" '
                                r'startNumber="(\d+)">(.*?)</SegmentTemplate>', mpd, re.S):  # fmt: skip
        init, media, start, timeline = template.groups()
        count = sum(1 + int(repeat or 0) for repeat in re.findall(r'<S [^>]*?(?:r="(\d+)")?\s*/>', timeline))
        files.append(f"{folder}/{init}")
        files += [f"{folder}/{media.replace('$Number$', str(n))}" for n in range(int(start), int(start) + count)]
    return list(dict.fromkeys(files))


def listed_files(manifest: dict, read: Callable[[str], str]) -> list[str]:
    """Every file ``manifest`` lists, directly or through its stream's indexes and its storyboard."""
    files = [entry["path"] for entry in (*manifest["renditions"], *manifest["thumbnails"])]
    if manifest.get("streams"):
        files += stream_files(manifest, read)
    if manifest.get("storyboard"):
        files += [manifest["storyboard"]["vtt"], *manifest["storyboard"]["images"]]
    return files


@dataclass
class Watched:
    """What ``watching_publication`` saw: each manifest state in order ("withdrawn" once it is gone), and each file
    listed when it was missing."""

    states: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    looks: int = 0


@contextmanager
def watching_publication(storage, key: str, every: float = 0.02) -> Iterator[Watched]:
    """Watch ``key``'s published files in ``storage`` (any ``VideoStorage``) from a thread while the block runs,
    as a player would read them: the manifest, then every file it lists (through the stream's master, media
    playlists and DASH manifest, read after the manifest). Each change of the manifest's state is recorded,
    and each listed file that does not exist when looked for."""
    watched, done = Watched(), threading.Event()

    def read(path: str) -> str:
        data = storage.published_file(key, path)
        if data is None:
            watched.missing.append(path)
            return ""
        return data.decode()

    def look() -> None:
        manifest = storage.manifest(key)
        if manifest is None:
            if watched.states and watched.states[-1] != "withdrawn":
                watched.states.append("withdrawn")
            return
        state = manifest.get("state", "complete")
        if not watched.states or watched.states[-1] != state:
            watched.states.append(state)
        for path in listed_files(manifest, read):
            if storage.stored_size(key, path) is None:
                watched.missing.append(path)
        watched.looks += 1

    def loop() -> None:
        while not done.wait(every):
            look()

    thread = threading.Thread(target=loop, name="publication-watch")
    thread.start()
    try:
        yield watched
    finally:
        done.set()
        thread.join()
    look()
