"""The process_video job run as the daemon runs it: a process per step (forkserver), or one process."""

import json
import shutil
import subprocess
import sys

import dagster as dg
import pytest

from vidpipe.definitions import process_video_job
from vidpipe.defs.executor import executor_run_config
from vidpipe.defs.partitions import upload_tags
from vidpipe.defs.step_preload import instance_class_modules
from vidpipe.media.files import sha256_file
from vidpipe.media.keys import partition_key
from vidpipe_tests.harness import catalog_beside


@pytest.fixture(scope="module")
def storage(tmp_path_factory, clips):
    """One storage root for the module, the test clips' folder as inbox: Dagster caches the job a
    reconstructable pointer builds."""
    root = tmp_path_factory.mktemp("storage")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VIDPIPE_STORAGE", str(root))
        patch.setenv("VIDPIPE_CATALOG", catalog_beside(root).url)
        patch.setenv("VIDPIPE_INBOX", str(clips))
        patch.setenv("VIDPIPE_RUN_LOG", str(root / "logs" / "runs.log"))
        yield root


STEPS = {"source_video", "renditions", "thumbnail", "publish"}


def run_process_video(storage, upload, *, in_one_process: bool):
    """A process_video run for the inbox file ``upload`` as the daemon launches it, from no outputs: (key, result)."""
    key = partition_key(upload.name, sha256_file(upload))
    shutil.rmtree(storage / key, ignore_errors=True)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("videos", [key])
        return key, dg.execute_job(
            dg.reconstructable(process_video_job),
            instance=instance,
            tags={"dagster/partition": key, **upload_tags(upload.name)},
            run_config=executor_run_config(in_one_process=in_one_process),
        )


@pytest.mark.parametrize("in_one_process", [False, True], ids=["process per step", "one process"])
def test_a_video_run_executes_its_steps_as_its_run_config_says(storage, silent_clip, in_one_process, capfd):
    key, result = run_process_video(storage, silent_clip, in_one_process=in_one_process)
    assert result.success
    step_pids = {event.step_key: event.pid for event in result.all_events if event.event_type_value == "STEP_START"}
    assert set(step_pids) == STEPS
    run_pid = next(event.pid for event in result.all_events if event.event_type_value == "PIPELINE_START")
    if in_one_process:
        assert set(step_pids.values()) == {run_pid}
    else:
        assert len(set(step_pids.values()) | {run_pid}) == len(STEPS) + 1
    assert (storage / key / "manifest.json").is_file()
    # No "path" row to be taken for the video (Dagster's IO managers add one): the stored original is under stored_at.
    source = result.asset_materializations_for_node("source_video")[0].metadata
    assert "path" not in source
    assert source["stored_at"].value == str(storage / key / "source.mp4")
    # The console shows what an operator follows; Dagster's DEBUG events stay in the event log.
    console = capfd.readouterr().err
    assert f"video {key} ('silent.mp4') is ready: " in console
    # (Step processes announce themselves before they read the run config: one line each.)
    assert [line for line in console.splitlines() if "DEBUG" in line and "STEP_WORKER_STARTED" not in line] == []


def test_a_refused_upload_prints_one_line_with_its_reason(storage, clips, capfd):
    notes = clips / "notes.mp4"
    notes.write_text("not a video\n")
    key, result = run_process_video(storage, notes, in_one_process=True)
    assert not result.success
    console = capfd.readouterr().err.splitlines()
    assert [line[9:] for line in console if " ERROR " in line] == [
        f"ERROR   {key} source_video: failed: not a video: the file is text",
        f"ERROR   {key} run: Execution of run for \"process_video\" failed. Steps failed: ['source_video'].",
    ]
    assert not [line for line in console if "Traceback" in line or "Stack Trace" in line]
    # The run's log file keeps every message: Dagster's DEBUG events and the failure's whole stack trace.
    logged = [line for line in (storage / "logs" / "runs.log").read_text().splitlines() if f" {key} " in line]
    assert any(f"DEBUG   {key} source_video STEP_START: " in line for line in logged)
    [failure] = [line for line in logged if "STEP_FAILURE" in line]
    assert failure.endswith(f'ERROR   {key} source_video STEP_FAILURE: Execution of step "source_video" failed.')
    details = (storage / "logs" / "runs.log").read_text().split(failure)[1]
    assert "\nreason: not a video: the file is text\nerror: InvalidMediaError\n" in details
    assert "vidpipe.media.errors.InvalidMediaError: not a video: the file is text" in details  # the stack trace


def test_step_processes_preload_the_classes_of_the_instance_they_open(tmp_path):
    assert "dagster._core.storage.sqlite_storage" in instance_class_modules(None)
    (tmp_path / "dagster.yaml").write_text(
        "storage:\n  postgres:\n    postgres_url: postgresql://vidpipe@db/vidpipe\n"
        "run_launcher:\n  module: dagster_docker\n  class: DockerRunLauncher\n"
    )
    modules = instance_class_modules(str(tmp_path))
    assert "dagster_postgres" in modules and "dagster_docker" in modules
    assert "dagster._core.storage.sqlite_storage" not in modules


FORKED_STEP = """
import gc, json, multiprocessing, sys
from vidpipe.defs.executor import PROCESS_PER_STEP

def step(results):
    from vidpipe import definitions
    from vidpipe.defs import step_preload
    job = definitions.process_video_job()  # what a step process asks for first
    results.put({"same_job": job is step_preload.JOB_BUILT_BEFORE_FORK, "frozen": gc.get_freeze_count()})

if __name__ == "__main__":
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PROCESS_PER_STEP["multiprocess"]["start_method"]["forkserver"]["preload_modules"])
    results = context.Queue()
    process = context.Process(target=step, args=(results,))
    process.start()
    print(json.dumps(results.get(timeout=120)))
    process.join()
"""


def test_step_processes_fork_with_the_job_already_built(tmp_path):
    """Building the job's definitions costs ~0.75 s of CPU; the forkserver does it once, before it forks."""
    script = tmp_path / "forked_step.py"
    script.write_text(FORKED_STEP)
    found = json.loads(subprocess.run([sys.executable, str(script)], capture_output=True, check=True, text=True).stdout)
    assert found["same_job"]  # the step built no job of its own
    assert found["frozen"] > 10_000  # the server's objects are out of the step's garbage collections
