"""The upload sensor: one partition and one run per new video in the inbox."""

import shlex
import sys
from datetime import timedelta
from pathlib import Path

import dagster as dg

from vidpipe import settings
from vidpipe.catalog import utc_now
from vidpipe.defs.catalog import CatalogResource
from vidpipe.defs.executor import executor_run_config
from vidpipe.defs.partitions import (
    FAILURE_TAG,
    FAILURE_TAG_CHARS,
    PARTITION_TAG,
    REJECTED_TAG,
    VIDEOS,
    WILL_RETRY_TAG,
    failure_reason,
    upload_tags,
    videos,
)
from vidpipe.defs.rejections import withdraw_partition
from vidpipe.defs.resources import InboxResource
from vidpipe.defs.storage import VideoStorage
from vidpipe.inbox import InboxCursor, Upload, readable_name
from vidpipe.media.keys import is_partition_key, partition_key, short_hash

DAEMON_LOOP_SECONDS = 5
"""How often the sensor daemon evaluates sensors (Dagster's ``MIN_INTERVAL_LOOP_TIME``)."""

TAKEN_RUN_STATUSES = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
    dg.DagsterRunStatus.SUCCESS,
]
"""A video with a run in one of these states is taken care of; failed and canceled runs are not."""


def build_upload_sensor(job) -> dg.SensorDefinition:
    # Below the daemon's loop time, so the sensor runs on every loop: with exactly 5 s the
    # elapsed time sometimes came out at 4.99 s and the evaluation waited for the next loop.
    @dg.sensor(job=job, minimum_interval_seconds=2, default_status=dg.DefaultSensorStatus.RUNNING)
    def upload_sensor(
        context: dg.SensorEvaluationContext, inbox: InboxResource, catalog: CatalogResource
    ) -> dg.SensorResult:
        """Adds a partition and requests a run for every finished upload whose content is not yet taken care of.

        Content is taken care of once a run for its video is queued, running or succeeded, or
        its upload was refused (the catalog says ``rejected``). A partition alone proves nothing: if
        the run could not be created, the next evaluation requests it again. The same bytes
        uploaded again under any name while the first copy is taken care of start nothing; a
        re-upload of a video whose runs all failed (a full disk, a crash) starts a new run.

        The work is bounded by the new uploads, whatever the catalog holds: one catalog query for all
        their content hashes, one run query, a row and a partition check per upload it requests.
        """
        # Uploads that settle before the next loop are taken now, not one loop later.
        scan = inbox.scan(InboxCursor.from_json(context.cursor), wait_for_settling_seconds=DAEMON_LOOP_SECONDS)
        for name, reason in scan.unreadable.items():
            context.log.warning(f"cannot read '{readable_name(name)}' in the inbox: {reason}")
        if scan.waiting:
            context.log.info(f"{len(scan.waiting)} upload(s) still being written or queued for the next tick")
        requests: list[dg.RunRequest] = []
        new_keys: list[str] = []
        if scan.uploads:
            videos_now = catalog.catalog()
            found = videos_now.by_content([short_hash(upload.sha256) for upload in scan.uploads])
            known = {content: video.key for content, video in found.items()}
            refused = {video.key: video.reason for video in found.values() if video.state == "rejected"}
            taken = _videos_with_runs(context.instance, list(known.values()))
            for upload in scan.uploads:
                content = short_hash(upload.sha256)
                key = known.get(content)
                if key is None:
                    key = known[content] = partition_key(upload.name, upload.sha256)
                    videos_now.register(key, readable_name(upload.name), upload.sha256, upload.size)
                    new_keys.append(key)
                handled = taken.get(key) or (f"refused: {refused[key]}" if key in refused else None)
                if handled:
                    context.log.info(
                        f"'{upload.readable_name}' is video {key}, already taken care of ({handled}); skipped"
                    )
                    continue
                if key not in new_keys and not context.instance.has_dynamic_partition(VIDEOS, key):
                    new_keys.append(key)  # registered by a tick whose partition request was not applied
                taken[key] = "requested in this evaluation"
                requests.append(_run_request(upload, key))
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[videos.build_add_request(new_keys)] if new_keys else [],
            cursor=scan.cursor.to_json(),
        )

    return upload_sensor


def _videos_with_runs(instance: dg.DagsterInstance, keys: list[str]) -> dict[str, str]:
    """Video key → the run that takes care of it, for those of ``keys`` that have one."""
    if not keys:
        return {}
    records = instance.get_run_records(dg.RunsFilter(tags={PARTITION_TAG: keys}, statuses=TAKEN_RUN_STATUSES))
    return {
        record.dagster_run.tags[PARTITION_TAG]: f"run {record.dagster_run.run_id} is {record.dagster_run.status.value}"
        for record in records
    }


def _run_request(upload: Upload, key: str) -> dg.RunRequest:
    """The run key names this very file version: requested again after a failed evaluation it
    is not run twice, while a re-upload of the same bytes gets a run of its own.
    """
    return dg.RunRequest(
        run_key=f"{upload.sha256}-{upload.changed_ns}",
        partition_key=key,
        tags=upload_tags(upload.name),
        run_config=executor_run_config(),
    )


RETIRE_BATCH = 1000
"""The most videos one evaluation of ``retired_videos`` retires: a partition deletion each, well inside the
sensor's 60 s (at one evaluation a minute, 1.4 million a day)."""


@dg.sensor(name="retired_videos", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def retired_videos(context: dg.SensorEvaluationContext, catalog: CatalogResource) -> dg.SkipReason:
    """Keeps Dagster's live partition set bounded: a video ready for longer than ``VIDPIPE_RETIRE_AFTER_DAYS``
    leaves the ``videos`` partitions (the UI's asset pages slow down past ~100,000 of them) and its catalog
    row says ``retired``. Its storage, its published outputs, its runs and its materializations stay; it plays
    as before. ``vidpipe rerun KEY`` (or the UI's "Add partition", then a backfill) brings it back.

    The partitions go first, then the rows: an evaluation cut short leaves rows still ``ready``, which the
    next one takes again."""
    if catalog.retire_after_days is None:
        return dg.SkipReason("VIDPIPE_RETIRE_AFTER_DAYS is not set: every video stays a live partition")
    videos_now = catalog.catalog()
    keys = videos_now.ready_before(utc_now() - timedelta(days=catalog.retire_after_days), RETIRE_BATCH)
    for key in keys:
        context.instance.delete_dynamic_partition(VIDEOS, key)
    retired = videos_now.retire(keys)
    if retired:
        context.log.info(f"retired {retired} video(s) ready for over {catalog.retire_after_days:g} days: {keys[0]}, …")
    return dg.SkipReason(f"retired {retired} video(s)" if retired else "no video to retire")


def rerun_command(key: str) -> str:
    """The shell command that re-runs ``key`` on this process's instance (``vidpipe rerun``), runnable as
    pasted from anywhere: the venv's ``vidpipe`` and the instance's folder spelled out."""
    vidpipe = shlex.quote(str(Path(sys.executable).with_name("vidpipe")))
    return f"DAGSTER_HOME={shlex.quote(str(settings.dagster_home()))} {vidpipe} rerun {shlex.quote(key)}"


# Every 10 s (Dagster's default is 30): a refused upload leaves the asset graph soon after its run fails.
@dg.run_failure_sensor(
    name="failed_video_runs", default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=10
)
def failed_video_runs(context: dg.RunFailureSensorContext, storage: VideoStorage) -> None:
    """Records every run that failed for good (sensor, backfill or manual) with its reason and how to re-run it.

    The record is a line of ``failed_runs.jsonl`` in storage, for operators and scripts;
    the UI shows the same runs under Runs → Failed, with the reason as the run's
    ``vidpipe/failure`` tag. A refused upload's run is tagged ``vidpipe/rejected`` and its
    partition withdrawn (``rejections``); other failures leave the partition failed. A run that
    Dagster re-runs automatically (its worker was lost) is not recorded: its retry's outcome is.
    """
    video = context.dagster_run.tags.get(PARTITION_TAG)
    reasons = [f"{event.step_key}: {failure_reason(event)}" for event in context.get_step_failure_events()]
    reason = "; ".join(reasons) or (context.failure_event.message or "the run failed")
    # The runs list shows tags, not failure messages: the reason where a person looks first.
    context.instance.add_run_tags(context.dagster_run.run_id, {FAILURE_TAG: _shortened(reason)})
    if context.dagster_run.tags.get(WILL_RETRY_TAG) == "true":
        context.log.info(f"run {context.dagster_run.run_id} for video {video} failed ({reason}); it is re-run")
        return
    if video and is_partition_key(video) and storage.rejection_reason(video):
        context.instance.add_run_tags(context.dagster_run.run_id, {REJECTED_TAG: "true"})
        withdraw_partition(context.instance, video)
    storage.record_failed_run(
        {
            "run_id": context.dagster_run.run_id,
            "job": context.dagster_run.job_name,
            "video": video,
            "reason": reason,
            "rerun": rerun_command(video) if video else None,
        }
    )
    context.log.warning(f"run {context.dagster_run.run_id} for video {video} failed: {reason}")


def _shortened(text: str) -> str:
    return text if len(text) <= FAILURE_TAG_CHARS else text[: FAILURE_TAG_CHARS - 1] + "…"
