"""Run workers forked from a warm process (``vidpipe/defs/warm_runs.py``, the launcher in ``run_launcher.py``):
the daemon's first run starts through the code server while the warm process starts beside it, the runs after
it fork from there, a terminated one stops with its ffmpeg, and a code change sends runs back to the code server. These tests guard the Dagster internals the warm workers use (``dagster_internals``)."""

from __future__ import annotations

from pathlib import Path

from dagster import DagsterEventType, DagsterRunStatus

from vidpipe.defs.run_launcher import ProcessCheckingRunLauncher
from vidpipe.defs.warm_runs import WARM, WORKER_TAG, WarmRunWorkers
from vidpipe_tests.harness import (
    RUN_TIMEOUT,
    DagsterStack,
    command_lines,
    partial_renditions,
    runs_of,
    upload,
    wait_until,
)

GRPC_INFO_TAG = ".dagster/grpc_info"  # what DefaultRunLauncher tags a run it launched through the code server with


def started_process_events(stack: DagsterStack, run_id: str) -> list[str]:
    records = stack.instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT).records
    messages = [r.event_log_entry.dagster_event.message or "" for r in records if r.event_log_entry.dagster_event]
    return [message for message in messages if "process for run" in message.lower()]


def ffmpeg_of(storage: Path) -> list[list[bytes]]:
    """The ffmpeg processes running on files under ``storage``."""
    return [
        argv
        for argv in command_lines()
        if argv[0].endswith(b"ffmpeg") and any(str(storage).encode() in arg for arg in argv)
    ]


def test_the_daemons_later_runs_start_warm_and_a_terminated_one_stops_with_its_ffmpeg(
    dagster_stack, phone_clip, long_clip
):
    stack: DagsterStack = dagster_stack
    with stack.logs_shown_on_failure():
        upload(phone_clip, stack.inbox, phone_clip.name)
        [done] = wait_until(lambda: runs_of(stack.instance, DagsterRunStatus.SUCCESS), RUN_TIMEOUT, "the first run")
        run = done.dagster_run
        assert WORKER_TAG not in run.tags and GRPC_INFO_TAG in run.tags, "the first run starts through the code server"
        [started, exited] = started_process_events(stack, run.run_id)
        assert started.startswith("Started process for run (pid: ") and exited.startswith("Process for run exited")
        assert (stack.storage / run.tags["dagster/partition"] / "manifest.json").is_file()

        upload(long_clip, stack.inbox, long_clip.name)
        wait_until(lambda: partial_renditions(stack.storage), RUN_TIMEOUT, "the second run's encode", stack.check_alive)
        [encoding] = runs_of(stack.instance, DagsterRunStatus.STARTED)
        assert encoding.dagster_run.tags[WORKER_TAG] == WARM and GRPC_INFO_TAG not in encoding.dagster_run.tags
        # As the webserver does when someone presses Terminate: from a process other than the daemon.
        launcher = stack.instance.run_launcher
        assert isinstance(launcher, ProcessCheckingRunLauncher) and launcher.terminate(encoding.dagster_run.run_id)
        wait_until(lambda: runs_of(stack.instance, DagsterRunStatus.CANCELED), RUN_TIMEOUT, "the run to be canceled")
        assert ffmpeg_of(stack.storage) == []
        assert started_process_events(stack, encoding.dagster_run.run_id)[0].startswith("Started process for run")
        assert not (stack.storage / encoding.dagster_run.tags["dagster/partition"] / "manifest.json").exists()


def test_the_warm_process_is_current_until_a_file_of_the_package_changes(tmp_path):
    package = tmp_path / "package"
    (package / "sub").mkdir(parents=True)
    (package / "sub" / "module.py").write_text("A = 1\n")
    workers = WarmRunWorkers(package)
    assert workers.current()
    (package / "notes.txt").write_text("not code\n")
    assert workers.current()
    (package / "sub" / "module.py").write_text("A = 22\n")
    assert not workers.current()
