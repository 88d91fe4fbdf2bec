"""``vidpipe-cluster`` as ``./dev.sh cluster`` starts it: PostgreSQL, Redis, SeaweedFS, ``dagster dev`` and two
Celery workers, all real, on loopback; uploads go through the S3 inbox and every output lands in the bucket.

One cluster serves the module, in this order: uploads processed on both workers with the ``ffmpeg`` pool
holding across them; a backfill of one rung launched as the UI launches it; a worker killed mid-encode;
SIGTERM stopping everything."""

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path

import dagster as dg
import pytest

from vidpipe.cluster import BUCKET, WORKERS
from vidpipe.media.files import sha256_file
from vidpipe.media.keys import partition_key
from vidpipe_tests import corpus
from vidpipe_tests.clusters import Cluster, cluster_processes, running_cluster
from vidpipe_tests.harness import graphql, partition_statuses, stream_files, wait_until, webserver_answers

PROCESSING_TIMEOUT = 240
LOSS_TIMEOUT = 180
"""Noticing the lost worker (``LOST_AFTER_SECONDS``), the run's retry, and the encode again."""
SOURCE = dg.AssetKey("source_video")
H264_360P = dg.AssetKey(["renditions", "h264_360p"])
CONTENT_TYPES = {
    ".mp4": "video/mp4", ".webm": "video/webm", ".jpg": "image/jpeg", ".webp": "image/webp",
    ".m3u8": "application/vnd.apple.mpegurl", ".mpd": "application/dash+xml", ".m4s": "video/iso.segment",
    ".vtt": "text/vtt",
}  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    # One encode at a time across both workers: the pool must hold on the cluster too.
    with running_cluster(tmp_path_factory.mktemp("cluster"), ffmpeg_pool=1) as running:
        yield running


def made_by(instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition: str | None = None) -> list[str]:
    """The workers named by the asset's materializations, newest first."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition] if partition else None), limit=20
    ).records
    return [record.asset_materialization.metadata["made_by"].value.split(",")[0] for record in records]


def step_intervals(instance: dg.DagsterInstance, step_key: str) -> list[tuple[float, float]]:
    """(start, end) of each successful execution of ``step_key`` in any run of the instance."""
    intervals = []
    for record in instance.get_run_records():
        events = instance.all_logs(
            record.dagster_run.run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}
        )
        times = {event.dagster_event.event_type: event.timestamp for event in events if event.step_key == step_key}
        if len(times) == 2:
            intervals.append((times[dg.DagsterEventType.STEP_START], times[dg.DagsterEventType.STEP_SUCCESS]))
    return intervals


def published_streaming(cluster, key: str, manifest: dict) -> list[str]:
    """The stream's and the storyboard's files a manifest leads to (paths under the video's folder)."""

    def read(path: str) -> str:
        return cluster.s3.get_object(Bucket=BUCKET, Key=f"videos/{key}/{path}")["Body"].read().decode()

    storyboard = manifest["storyboard"]
    return [*stream_files(manifest, read), storyboard["vtt"], *storyboard["images"]]


def test_uploads_to_the_s3_inbox_are_processed_by_both_workers_into_the_bucket(
    cluster, phone_clip, landscape_clip, tmp_path
):
    bad = corpus.text_as_mov(tmp_path)
    uploaded = cluster.upload(phone_clip, landscape_clip, bad)
    assert uploaded == [f"s3://{BUCKET}/inbox/{p.name}" for p in (phone_clip, landscape_clip, bad)]
    cluster.wait_until(
        lambda: len(cluster.complete()) == 2 and len(cluster.stored("/rejection.json")) == 1,
        PROCESSING_TIMEOUT,
        "two manifests and one rejection in the bucket",
    )
    originals = {p.name: p.read_bytes() for p in (phone_clip, landscape_clip)}
    keys = []
    for manifest_key in cluster.stored("/manifest.json"):
        folder = manifest_key.removesuffix("manifest.json")
        keys.append(folder.removeprefix("videos/").rstrip("/"))
        manifest = cluster.manifest(keys[-1])
        for entry in [*manifest["renditions"], *manifest["thumbnails"]]:
            head = cluster.s3.head_object(Bucket=BUCKET, Key=folder + entry["path"])
            assert head["ContentType"] == CONTENT_TYPES[Path(entry["path"]).suffix]
            if "bytes" in entry:
                assert head["ContentLength"] == entry["bytes"]
        # the adaptive stream and the storyboard, every file with the type players need
        for path in [*published_streaming(cluster, keys[-1], manifest)]:
            head = cluster.s3.head_object(Bucket=BUCKET, Key=folder + path)
            assert head["ContentType"] == CONTENT_TYPES[Path(path).suffix], path
        original_key = folder + "source" + Path(manifest["source"]["name"]).suffix.lower()
        assert (
            cluster.s3.get_object(Bucket=BUCKET, Key=original_key)["Body"].read()
            == originals[manifest["source"]["name"]]
        )
    [rejection] = cluster.stored("/rejection.json")
    assert json.loads(cluster.s3.get_object(Bucket=BUCKET, Key=rejection)["Body"].read())["reason"] == (
        "not a video: the file is text"
    )

    with cluster.instance() as instance:
        # Steps ran on both workers, none on the daemon's machine process.
        workers = {
            worker
            for asset_key in (SOURCE, H264_360P, dg.AssetKey("thumbnail"))
            for worker in made_by(instance, asset_key)
        }
        assert workers == set(WORKERS), workers
        # With the ffmpeg pool at 1, the two encodes ran one after the other, on whichever worker was free.
        encodes = step_intervals(instance, "renditions")
    assert len(encodes) == 2
    for (start_a, end_a), (start_b, end_b) in combinations(encodes, 2):
        assert end_a <= start_b or end_b <= start_a, encodes

    # Each worker sees the other parts' scratch folders and the local storage folder empty, as if on a
    # machine of its own (the cluster walls them off when run as root, as CI runs it).
    if os.geteuid() == 0:
        scratch = cluster.data / "cluster" / "scratch"
        folders = {name: scratch / name for name in ("main", *WORKERS)} | {"storage": cluster.data / "storage"}
        for name, folder in folders.items():
            (folder / "marker").write_text(name)
        for worker in WORKERS:
            pid = cluster_processes(cluster.data, f"VIDPIPE_WORKER={worker}")[0][0]
            seen = {name: os.listdir(f"/proc/{pid}/root{folder}") for name, folder in folders.items()}
            assert seen == {name: ["marker"] if name == worker else [] for name in folders}, (worker, seen)

    # The refused upload's partition shows failed until the rejection sensor (every 10 s) withdraws it.
    def both_materialized_none_failed() -> bool:
        materialized, failed = partition_statuses(cluster.url, ["video_manifest"])
        return sorted(materialized) == sorted(keys) and failed == []

    wait_until(
        both_materialized_none_failed,
        60,
        "the UI's GraphQL API to report both manifests materialized and no partition failed",
    )


LAUNCH_BACKFILL = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""
BACKFILL_STATUS = """
query BackfillStatus($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } }
}
"""


def test_a_backfill_of_one_rung_across_all_videos_rewrites_only_that_rung_on_the_workers(cluster):
    keys = cluster.complete()
    assert len(keys) == 2  # the previous test's videos
    before = cluster.objects()
    rung_files = {key for key in before if key.endswith("/renditions/h264_360p.mp4")}
    assert len(rung_files) == 2
    time.sleep(1)  # S3 times have whole seconds: a rewrite shows as a later LastModified

    # As the UI's "Materialize selected" → "Launch backfill" with every partition picked sends it.
    params = {"partitionNames": keys, "assetSelection": [{"path": H264_360P.path}], "tags": []}
    launched = graphql(cluster.url, LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched

    def status() -> str:
        return graphql(cluster.url, BACKFILL_STATUS, {"id": launched["backfillId"]})["partitionBackfillOrError"][
            "status"
        ]

    cluster.wait_until(
        lambda: status() in ("COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED"), PROCESSING_TIMEOUT, "the backfill"
    )
    assert status() == "COMPLETED_SUCCESS"

    after = cluster.objects()
    assert set(after) == set(before)
    rewritten = {key for key in after if after[key]["LastModified"] > before[key]["LastModified"]}
    # The rung's files, and the records that say how each was made (encode.json, the step's value).
    records = {key for key in rewritten if key.endswith("/encode.json") or "/steps/" in key}
    assert rewritten - records == rung_files
    with cluster.instance() as instance:
        runs = instance.get_run_records(dg.RunsFilter(tags={"dagster/backfill": launched["backfillId"]}))
        assert len(runs) == 2
        for key in keys:  # the newest materialization of the rung, made on a worker
            assert made_by(instance, H264_360P, key)[0] in WORKERS


def test_a_worker_killed_mid_encode_has_its_step_run_again_on_the_other(cluster, long_clip):
    key = partition_key(long_clip.name, sha256_file(long_clip))
    cluster.upload(long_clip)

    def encoding() -> list[tuple[str, list[int]]]:
        """(worker, its processes) while one of them runs ffmpeg's encode."""
        for worker in WORKERS:
            processes = cluster_processes(cluster.data, f"VIDPIPE_WORKER={worker}")
            if any(b"libx264" in argv for _pid, argv in processes):
                return [(worker, [pid for pid, _argv in processes])]
        return []

    cluster.wait_until(lambda: encoding() != [], PROCESSING_TIMEOUT, "an encode of the new upload to start")
    [(lost, processes)] = encoding()
    for pid in processes:  # the worker, its pool process, ffmpeg: as if its machine lost power
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    [survivor] = set(WORKERS) - {lost}

    def runs() -> list[dg.DagsterRun]:
        with cluster.instance() as instance:
            records = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": key}))
        return [record.dagster_run for record in records]

    cluster.wait_until(
        lambda: any(run.status == dg.DagsterRunStatus.SUCCESS for run in runs()),
        LOSS_TIMEOUT,
        "the video to complete on the other worker",
    )
    manifest = cluster.manifest(key)
    listed = {f"videos/{key}/{entry['path']}" for entry in [*manifest["renditions"], *manifest["thumbnails"]]}
    listed |= {f"videos/{key}/{path}" for path in published_streaming(cluster, key, manifest)}
    outputs = set()
    for folder in ("renditions", "thumbnails", "stream", "storyboard"):
        outputs |= set(cluster.objects(f"videos/{key}/{folder}/"))
    assert outputs == listed  # nothing partial beside what the manifest lists
    assert cluster.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    with cluster.instance() as instance:
        assert made_by(instance, H264_360P, key)[0] == survivor
        [failed] = [run for run in runs() if run.status == dg.DagsterRunStatus.FAILURE]
        [retried] = [run for run in runs() if run.status == dg.DagsterRunStatus.SUCCESS]
        assert retried.tags["dagster/parent_run_id"] == failed.run_id
        [failure] = instance.all_logs(failed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        error = failure.dagster_event.event_specific_data.error.to_string()
    assert f"Celery worker {lost}@" in error and "stopped answering while it ran step renditions" in error, error


def test_sigterm_stops_every_process_of_the_cluster(cluster):
    """Ctrl-C or SIGTERM stops everything the cluster started."""
    os.kill(cluster.process.pid, signal.SIGTERM)
    cluster.process.wait(timeout=60)
    wait_until(lambda: cluster_processes(cluster.data) == [], 30, "every process of the cluster to exit")
    assert not webserver_answers(cluster.url)
