"""The upload sensor: one partition and one run per new video in the inbox."""

import time

import dagster as dg

from vidpipe.defs.assets import UPLOAD_NAME_TAG, UPLOAD_PATH_TAG, failure_reason, videos
from vidpipe.defs.executor import executor_run_config
from vidpipe.defs.resources import InboxResource, VideoStorage
from vidpipe.inbox import InboxCursor
from vidpipe.media.keys import HASH_CHARS, content_hash_of, partition_key

DAEMON_LOOP_SECONDS = 5
"""How often the sensor daemon evaluates sensors (Dagster's ``MIN_INTERVAL_LOOP_TIME``)."""


def build_upload_sensor(job) -> dg.SensorDefinition:
    # Below the daemon's loop time, so the sensor runs on every loop: with exactly 5 s the
    # elapsed time sometimes came out at 4.99 s and the evaluation waited for the next loop.
    @dg.sensor(job=job, minimum_interval_seconds=2, default_status=dg.DefaultSensorStatus.RUNNING)
    def upload_sensor(context: dg.SensorEvaluationContext, inbox: InboxResource) -> dg.SensorResult:
        """Adds a partition and requests a run for every finished, never-seen upload.

        The content hash is the run key and part of the partition key, so the same bytes
        uploaded twice (under any name) are processed once.
        """
        scan = inbox.scan(InboxCursor.from_json(context.cursor))
        if scan.settled_in_seconds is not None and scan.settled_in_seconds < DAEMON_LOOP_SECONDS:
            # Uploads that settle before the next loop are taken now, not one loop later.
            time.sleep(max(scan.settled_in_seconds, 0))
            scan = scan.then(inbox.scan(scan.cursor))
        for name, reason in scan.unreadable.items():
            context.log.warning(f"cannot read {name!r} in the inbox: {reason}")
        if scan.waiting:
            context.log.info(f"{len(scan.waiting)} upload(s) still being written or queued for the next tick")
        requests: list[dg.RunRequest] = []
        new_keys: list[str] = []
        if scan.uploads:
            known = {content_hash_of(key): key for key in context.instance.get_dynamic_partitions(videos.name)}
            for upload in scan.uploads:
                short_hash = upload.sha256[:HASH_CHARS]
                if short_hash in known:
                    context.log.info(f"{upload.name!r} has the same content as video {known[short_hash]}; skipped")
                    continue
                key = partition_key(upload.name, upload.sha256)
                known[short_hash] = key
                new_keys.append(key)
                requests.append(
                    dg.RunRequest(
                        run_key=upload.sha256,
                        partition_key=key,
                        tags={UPLOAD_PATH_TAG: str(upload.path), UPLOAD_NAME_TAG: upload.name},
                        run_config=executor_run_config(in_one_process=upload.size < inbox.one_process_below_bytes),
                    )
                )
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[videos.build_add_request(new_keys)] if new_keys else [],
            cursor=scan.cursor.to_json(),
        )

    return upload_sensor


@dg.run_failure_sensor(name="failed_video_runs", default_status=dg.DefaultSensorStatus.RUNNING)
def failed_video_runs(context: dg.RunFailureSensorContext, storage: VideoStorage) -> None:
    """Records every failed run (sensor, backfill or manual) with its reason and how to re-run it.

    The record is a line of ``failed_runs.jsonl`` in storage, for operators and scripts;
    the UI shows the same runs under Runs → Failed and the partitions as failed.
    """
    video = context.dagster_run.tags.get("dagster/partition")
    reasons = [f"{event.step_key}: {failure_reason(event)}" for event in context.get_step_failure_events()]
    reason = "; ".join(reasons) or (context.failure_event.message or "the run failed")
    storage.record_failed_run(
        {
            "run_id": context.dagster_run.run_id,
            "job": context.dagster_run.job_name,
            "video": video,
            "reason": reason,
            "rerun": f"dagster job backfill -w workspace.yaml -j process_video --partitions {video} --noprompt"
            if video
            else None,
        }
    )
    context.log.warning(f"run {context.dagster_run.run_id} for video {video} failed: {reason}")
