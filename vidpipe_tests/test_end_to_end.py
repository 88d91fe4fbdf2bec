"""End to end, nothing mocked: one upload becomes one processed video, once.

A real ``dagster-daemon`` and ``dagster-webserver`` run against a temporary instance.
A phone clip dropped into the inbox the way an uploader does it (a hidden temporary
name, then a rename) is found by the upload sensor, gets one dynamic partition named
after its content, and is processed by one successful ``process_video`` run. Its
outputs are on disk, the webserver reports them materialized, and the same bytes
uploaded again under another name while the first copy is processed start nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus, RunRecord, RunsFilter

from vidpipe_tests import corpus
from vidpipe_tests.harness import (
    RUN_TIMEOUT,
    SETTLE_SECONDS,
    STARTUP_TIMEOUT,
    code_location_loaded,
    fail_on_sensor_error,
    materialized_partitions,
    process_video_runs,
    sensor_ticks,
    upload,
    wait_until,
)

SENSOR_TIMEOUT = 30
TICK_TIMEOUT = 20


def succeeded_run(instance: DagsterInstance) -> RunRecord | None:
    return next((r for r in process_video_runs(instance) if r.dagster_run.status == DagsterRunStatus.SUCCESS), None)


def completed_tick_since(instance: DagsterInstance, timestamp: float):
    return next((t for t in sensor_ticks(instance) if t.is_completed and t.timestamp >= timestamp), None)


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
        wait_until(
            lambda: code_location_loaded(stack.url), STARTUP_TIMEOUT, "vidpipe in the webserver", stack.check_alive
        )
        wait_until(lambda: process_video_runs(stack.instance), SENSOR_TIMEOUT, "the sensor to request a run", fail_fast)
        # The same bytes again under another name, while the first copy is being processed.
        duplicate_settled_at = upload(phone_clip, stack.inbox, "same bytes again.mp4") + SETTLE_SECONDS

        record = wait_until(lambda: succeeded_run(stack.instance), RUN_TIMEOUT, "a successful run", fail_fast)
        keys = stack.instance.get_dynamic_partitions("videos")
        assert len(keys) == 1 and keys[0].endswith(sha256[:12]), keys
        key = keys[0]
        assert record.dagster_run.tags["dagster/partition"] == key
        assert_outputs_on_disk(stack.storage / key, key, sha256)
        assert key in materialized_partitions(stack.url, ["video_manifest"])
        assert key in materialized_partitions(stack.url, ["renditions", "h264_360p"])

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
        wait_until(
            lambda: code_location_loaded(stack.url), STARTUP_TIMEOUT, "vidpipe in the webserver", stack.check_alive
        )

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
            assert materialized_partitions(stack.url, asset_path) == [good]  # and no failed partition
        # A rung too large for the clip is neither materialized nor failed: it is missing, as it is.
        assert materialized_partitions(stack.url, ["renditions", "h264_1080p"]) == []
        assert (stack.storage / refused.tags["dagster/partition"] / "rejection.json").is_file()
