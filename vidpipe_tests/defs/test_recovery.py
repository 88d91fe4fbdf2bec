"""A crash does not stall the pipeline.

After vidpipe was killed mid-encode (power cut, OOM killer, kill -9) and started again, run
monitoring asks vidpipe's run launcher whether each STARTED run's worker still exists, marks
the crashed run failed, frees its ``ffmpeg`` pool slot, and run retries re-run the video
(``dagster.yaml``, ``vidpipe/defs/run_launcher.py``). These tests guard the Dagster internals
the launcher relies on: ``CheckRunHealthResult``, ``WorkerStatus``, the run worker's pid event
in the run's event log, and a run's code server origin (``test_service.py`` covers a code
server that restarts).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, job, op

from vidpipe.defs.dagster_internals import (
    EngineEventData,
    GrpcServerCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
    WorkerStatus,
)
from vidpipe.defs.run_launcher import START_TIME_SLACK_SECONDS, ProcessCheckingRunLauncher, process_running_since
from vidpipe.processes import process_start_time
from vidpipe_tests.harness import (
    ENCODE_TIMEOUT,
    RECOVERY_TIMEOUT,
    REPO_ROOT,
    DagsterStack,
    free_port,
    partial_renditions,
    runs_of,
    upload,
    wait_until,
)


@op
def nothing() -> None:
    pass


@job
def empty_job() -> None:
    nothing()


@pytest.fixture
def instance(tmp_path, monkeypatch):
    """An instance with vidpipe's dagster.yaml."""
    (tmp_path / "dagster.yaml").symlink_to(REPO_ROOT / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with DagsterInstance.get() as instance:
        yield instance


def run_with_worker(instance: DagsterInstance, pid: int, origin: RemoteJobOrigin | None = None):
    """A run whose worker reported ``pid`` the way Dagster's run worker does before the run starts."""
    run = instance.create_run_for_job(empty_job, remote_job_origin=origin)
    instance.report_engine_event(f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid))
    return run


def exited_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    exited = subprocess.Popen([sys.executable, "-c", ""])
    exited.wait()
    return exited.pid


def test_the_instance_monitors_run_workers_with_vidpipes_launcher(instance):
    assert isinstance(instance.run_launcher, ProcessCheckingRunLauncher)
    assert instance.run_launcher.supports_check_run_worker_health
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0


def test_a_live_worker_is_running_and_a_gone_one_is_not(instance):
    launcher = instance.run_launcher
    alive = launcher.check_run_worker_health(run_with_worker(instance, os.getpid()))
    assert alive.status == WorkerStatus.RUNNING

    pid = exited_pid()
    gone = launcher.check_run_worker_health(run_with_worker(instance, pid))
    assert gone.status == WorkerStatus.NOT_FOUND
    assert gone.msg == f"the run worker (pid {pid}) is gone: the machine or vidpipe was stopped or crashed"

    not_yet = launcher.check_run_worker_health(instance.create_run_for_job(empty_job))
    assert not_yet.status == WorkerStatus.RUNNING


def test_a_lost_run_is_not_failed_while_its_code_server_is_down(instance):
    """Dagster would give up re-running it: it retries a failed run at once, through the code server."""
    port = free_port()  # nothing answers there
    code_server = GrpcServerCodeLocationOrigin(host="127.0.0.1", port=port, location_name="vidpipe")
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(code_server, "__repository__"), "empty_job")
    pid = exited_pid()
    result = instance.run_launcher.check_run_worker_health(run_with_worker(instance, pid, origin))
    assert result.status == WorkerStatus.RUNNING
    assert result.msg == (
        f"the run worker (pid {pid}) is gone; the run fails, to be re-run, "
        f"once its code server at 127.0.0.1:{port} answers"
    )


def test_a_reused_pid_or_a_zombie_is_not_the_worker():
    # The pid is alive, but its process started after the worker logged it: the number was reused.
    started = process_start_time(os.getpid())
    assert started is not None and started <= time.time()
    assert process_running_since(os.getpid(), started)
    assert not process_running_since(os.getpid(), started - START_TIME_SLACK_SECONDS - 1)

    zombie = subprocess.Popen([sys.executable, "-c", ""])  # exits, and is not reaped until wait()
    wait_until(lambda: process_start_time(zombie.pid) is None, 10, "the child to exit", lambda: None)
    assert Path(f"/proc/{zombie.pid}").exists()
    zombie.wait()


def failure_message(instance: DagsterInstance, run_id: str) -> str:
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_FAILURE).records
    return records[0].event_log_entry.message


def test_a_crash_mid_encode_is_recovered_when_vidpipe_starts_again(dagster_stack, long_clip, phone_clip):
    stack: DagsterStack = dagster_stack
    # With one slot, a slot kept by the crashed run would block every later encode.
    stack.instance.event_log_storage.set_concurrency_slots("ffmpeg", 1)
    with stack.logs_shown_on_failure():
        upload(long_clip, stack.inbox, long_clip.name)
        wait_until(lambda: partial_renditions(stack.storage), ENCODE_TIMEOUT, "the encode", stack.check_alive)
        stack.crash()
        assert stack.running_processes() == []
        [crashed] = [record.dagster_run for record in runs_of(stack.instance, DagsterRunStatus.STARTED)]
        assert partial_renditions(stack.storage)

        stack.start_all(log_suffix="-after-crash")
        upload(phone_clip, stack.inbox, phone_clip.name)

        def only_the_crashed_run_failed() -> None:
            stack.check_alive()
            failed = [record.dagster_run.run_id for record in runs_of(stack.instance, DagsterRunStatus.FAILURE)]
            assert set(failed) <= {crashed.run_id}, f"runs failed after the restart: {failed}"

        succeeded = wait_until(
            lambda: len(done := runs_of(stack.instance, DagsterRunStatus.SUCCESS)) == 2 and done,
            RECOVERY_TIMEOUT,
            "the crashed video's retry and a new upload to succeed",
            only_the_crashed_run_failed,
        )

    assert "the run worker" in failure_message(stack.instance, crashed.run_id)
    videos = {record.dagster_run.tags["dagster/partition"]: record.dagster_run for record in succeeded}
    assert videos[crashed.tags["dagster/partition"]].parent_run_id == crashed.run_id
    for video in videos:
        assert (stack.storage / video / "manifest.json").is_file()
    assert partial_renditions(stack.storage) == []
