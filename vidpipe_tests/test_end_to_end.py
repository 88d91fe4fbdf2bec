"""End to end, nothing mocked: one upload becomes one processed video, once.

A real ``dagster-daemon`` and ``dagster-webserver`` run against a temporary instance.
A phone clip dropped into the inbox the way an uploader does it (a hidden temporary
name, then a rename) is found by the upload sensor, gets one dynamic partition named
after its content, and is processed by one successful ``process_video`` run. Its
outputs are on disk, the webserver reports them materialized, and the same bytes
uploaded again under another name while the first copy is processed start nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunRecord, RunsFilter

from vidpipe.processes import process_start_time
from vidpipe_tests import corpus
from vidpipe_tests.harness import wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN_DIR = Path(sys.executable).parent
SETTLE_SECONDS = 0.5
STARTUP_TIMEOUT = 30
SENSOR_TIMEOUT = 30
RUN_TIMEOUT = 90
TICK_TIMEOUT = 20
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
        marker = f"DAGSTER_HOME={self.env['DAGSTER_HOME']}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            try:
                environment = (entry / "environ").read_bytes().split(b"\0") if entry.name.isdigit() else []
            except OSError:  # gone, or not ours to read
                continue
            if marker in environment and process_start_time(int(entry.name)) is not None:  # None: a zombie
                found.append(int(entry.name))
        return found

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
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": variables}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.load(response)
        assert "errors" not in body, body["errors"]
        return body["data"]

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


def code_location_loaded(stack: DagsterStack, name: str = "vidpipe") -> bool:
    """Whether the webserver has loaded vidpipe's definitions; fails fast if they raised."""
    if not webserver_answers(stack.url):
        return False
    workspace = stack.graphql(CODE_LOCATIONS, {})["workspaceOrError"]
    assert workspace["__typename"] == "Workspace", workspace
    entry = next(e for e in workspace["locationEntries"] if e["name"] == name)
    location = entry["locationOrLoadError"]
    if location and location["__typename"] == "PythonError":
        pytest.fail(f"code location {name} failed to load: {location['message']}")
    return entry["loadStatus"] == "LOADED"


@pytest.fixture
def dagster_stack(tmp_path, monkeypatch) -> Iterator[DagsterStack]:
    home, inbox, storage = tmp_path / "dagster_home", tmp_path / "inbox", tmp_path / "storage"
    for folder in (home, inbox, storage):
        folder.mkdir()
    (home / "dagster.yaml").symlink_to(REPO_ROOT / "dagster.yaml")
    settings = {
        "DAGSTER_HOME": str(home),
        "VIDPIPE_INBOX": str(inbox),
        "VIDPIPE_STORAGE": str(storage),
        "VIDPIPE_SETTLE_SECONDS": str(SETTLE_SECONDS),
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    commands = {
        "daemon": [str(BIN_DIR / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        "webserver": [str(BIN_DIR / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
    }
    # Creating the instance first sets up its storage before two processes race to.
    with DagsterInstance.get() as instance:
        stack = DagsterStack(
            instance, inbox, storage, f"http://127.0.0.1:{port}", {}, {}, commands=commands, env=dict(os.environ)
        )
        try:
            stack.start_all()
            yield stack
        finally:
            stop(list(stack.processes.values()))


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


def succeeded_run(instance: DagsterInstance) -> RunRecord | None:
    return next((r for r in process_video_runs(instance) if r.dagster_run.status == DagsterRunStatus.SUCCESS), None)


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


def completed_tick_since(instance: DagsterInstance, timestamp: float):
    return next((t for t in sensor_ticks(instance) if t.is_completed and t.timestamp >= timestamp), None)


def materialized_partitions(stack: DagsterStack, asset_path: list[str]) -> list[str]:
    node = stack.graphql(PARTITION_STATUSES, {"assetKey": {"path": asset_path}})["assetNodeOrError"]
    assert node["__typename"] == "AssetNode", node
    statuses = node["assetPartitionStatuses"]
    assert statuses["__typename"] == "DefaultPartitionStatuses", statuses
    assert statuses["failedPartitions"] == []
    return statuses["materializedPartitions"]


def assert_outputs_on_disk(video_dir: Path, key: str, sha256: str) -> None:
    manifest = json.loads((video_dir / "manifest.json").read_text())
    assert manifest["video"] == key
    assert manifest["source"]["sha256"] == sha256
    assert "h264_360p" in {r["name"] for r in manifest["renditions"]}
    assert manifest["thumbnails"]
    for entry in manifest["renditions"] + manifest["thumbnails"]:
        assert (video_dir / entry["path"]).is_file(), entry
    assert json.loads((video_dir / "source.json").read_text())["sha256"] == sha256


def test_an_upload_is_processed_once_by_the_running_daemon(dagster_stack, phone_clip):
    stack = dagster_stack
    sha256 = hashlib.sha256(phone_clip.read_bytes()).hexdigest()

    def fail_fast() -> None:
        stack.check_alive()
        fail_on_sensor_error(stack.instance)

    with stack.logs_shown_on_failure():
        # Uploaded while the daemon starts, so its first sensor tick already finds it.
        upload(phone_clip, stack.inbox, phone_clip.name)
        wait_until(lambda: code_location_loaded(stack), STARTUP_TIMEOUT, "vidpipe in the webserver", stack.check_alive)
        wait_until(lambda: process_video_runs(stack.instance), SENSOR_TIMEOUT, "the sensor to request a run", fail_fast)
        # The same bytes again under another name, while the first copy is being processed.
        duplicate_settled_at = upload(phone_clip, stack.inbox, "same bytes again.mp4") + SETTLE_SECONDS

        record = wait_until(lambda: succeeded_run(stack.instance), RUN_TIMEOUT, "a successful run", fail_fast)
        keys = stack.instance.get_dynamic_partitions("videos")
        assert len(keys) == 1 and keys[0].endswith(sha256[:12]), keys
        key = keys[0]
        assert record.dagster_run.tags["dagster/partition"] == key
        assert_outputs_on_disk(stack.storage / key, key, sha256)
        assert key in materialized_partitions(stack, ["video_manifest"])
        assert key in materialized_partitions(stack, ["renditions", "h264_360p"])

        wait_until(
            lambda: completed_tick_since(stack.instance, duplicate_settled_at),
            TICK_TIMEOUT,
            "a sensor tick that saw the re-upload",
            fail_fast,
        )
        assert stack.instance.get_dynamic_partitions("videos") == [key]
        assert len(process_video_runs(stack.instance)) == 1


def test_a_refused_upload_leaves_the_asset_graph_and_no_asset_shows_failed(dagster_stack, tiny_clip, tmp_path):
    """The failure sensor withdraws a refused upload's partition; the UI's partition statuses show no failure."""
    stack = dagster_stack
    with stack.logs_shown_on_failure():
        upload(tiny_clip, stack.inbox, tiny_clip.name)
        upload(corpus.text_as_mov(tmp_path), stack.inbox, "notes.mov")
        wait_until(lambda: code_location_loaded(stack), STARTUP_TIMEOUT, "vidpipe in the webserver", stack.check_alive)

        def both_done() -> list[RunRecord] | None:
            records = stack.instance.get_run_records(RunsFilter(job_name="process_video"))
            statuses = {record.dagster_run.status for record in records}
            return (
                records
                if len(records) == 2 and statuses == {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE}
                else None
            )

        records = wait_until(both_done, SENSOR_TIMEOUT + RUN_TIMEOUT, "one success and one refusal", stack.check_alive)
        [refused] = [r.dagster_run for r in records if r.dagster_run.status == DagsterRunStatus.FAILURE]
        [good] = [r.dagster_run.tags["dagster/partition"] for r in records if r.dagster_run.run_id != refused.run_id]
        wait_until(
            lambda: stack.instance.get_run_by_id(refused.run_id).tags.get("vidpipe/rejected") == "true",
            2 * TICK_TIMEOUT,  # the failure sensor runs every 10 s; its first tick only starts its cursor
            "the failure sensor to withdraw the refused upload",
            stack.check_alive,
        )
        assert stack.instance.get_dynamic_partitions("videos") == [good]
        for asset_path in (["source_video"], ["thumbnail"], ["renditions", "h264_240p"], ["video_manifest"]):
            assert materialized_partitions(stack, asset_path) == [good]  # and no failed partition
        # A rung too large for the clip is neither materialized nor failed: it is missing, as it is.
        assert materialized_partitions(stack, ["renditions", "h264_1080p"]) == []
        assert (stack.storage / refused.tags["dagster/partition"] / "rejection.json").is_file()
