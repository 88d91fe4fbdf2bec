"""Running vidpipe's sensor and asset graph in-process against a real (temporary) instance."""

import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from typing import TypeVar

import dagster as dg
import pytest

from vidpipe.definitions import build_assets, build_definitions
from vidpipe.defs.partitions import VIDEOS, failure_reason, upload_tags
from vidpipe.defs.resources import FFmpegResource, InboxResource, LocalVideoStorage
from vidpipe.defs.sensors import failed_video_runs
from vidpipe.media.encoder import build_encode_command, run_encode
from vidpipe.media.files import sha256_file
from vidpipe.media.keys import partition_key
from vidpipe.media.ladder import plan_ladder
from vidpipe.media.validate import validate_upload

T = TypeVar("T")
RUN_KEY_TAG, SENSOR_NAME_TAG = "dagster/run_key", "dagster/sensor_name"


@contextmanager
def processed(upload, storage_root):
    """``upload`` processed as the sensor's run would, in a fresh instance: (pipeline, key, result)."""
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(instance, storage_root)
        key = pipeline.add(upload)
        yield pipeline, key, pipeline.materialize(key, upload=upload)


class Pipeline:
    def __init__(self, instance, storage_root):
        self.instance = instance
        self.storage_root = storage_root
        self.resources = {"storage": LocalVideoStorage(root=str(storage_root)), "ffmpeg": FFmpegResource()}

    def add(self, clip) -> str:
        key = partition_key(clip.name, sha256_file(clip))
        self.instance.add_dynamic_partitions(VIDEOS, [key])
        return key

    def materialize(self, key, *, upload=None, inbox=None, assets=None, selection=None, tags=None, raise_on_error=True):
        """A run as the sensor requests it for ``upload`` (its folder serves as the inbox), or a backfill."""
        inbox = inbox or (upload.parent if upload else self.storage_root / "empty-inbox")
        return dg.materialize(
            assets or build_assets(),
            selection=selection,
            instance=self.instance,
            partition_key=key,
            resources={**self.resources, "inbox": InboxResource(path=str(inbox))},
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
            "inbox": InboxResource(path=str(inbox), settle_seconds=settle_seconds, **inbox_settings),
            "storage": LocalVideoStorage(root=str(inbox.parent / "storage")),
        }
        self.cursor = None

    def tick(self, *, create_runs=True) -> dg.SensorResult:
        """One evaluation; ``create_runs=False`` is a tick whose run creation failed (its cursor is not kept)."""
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor, resources=self.resources)
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
