"""``vidpipe-cluster`` as ``./dev.sh cluster`` starts it: PostgreSQL, Redis, SeaweedFS, ``dagster dev`` and two
Celery workers, all real, on loopback; uploads go through the S3 inbox and every output lands in the bucket."""

import json
import os
import shlex
import signal
import subprocess
from pathlib import Path

import boto3
import dagster as dg
import pytest

from vidpipe.cluster import BUCKET, WORKERS
from vidpipe_tests import corpus
from vidpipe_tests.harness import (
    BIN_DIR,
    REPO_ROOT,
    code_location_loaded,
    free_port,
    partition_statuses,
    wait_until,
    webserver_answers,
)

STARTUP_TIMEOUT = 120
PROCESSING_TIMEOUT = 240
CONTENT_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".jpg": "image/jpeg", ".webp": "image/webp"}


def exported(env_file: Path) -> dict[str, str]:
    """The variables ``source data/cluster/env`` sets."""
    pairs = (shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in env_file.read_text().splitlines())
    return dict(pairs)


def cluster_processes(data: Path) -> list[int]:
    """Every live process started for this cluster: they all run with its data folder in their environment."""
    marker = f"VIDPIPE_DATA={data}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture
def cluster(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    env = {**os.environ, "VIDPIPE_DATA": str(data), "VIDPIPE_PORT": str(port)}
    log = tmp_path / "cluster.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(BIN_DIR / "vidpipe-cluster")], env=env, cwd=REPO_ROOT, stdout=out, stderr=out, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: code_location_loaded(url),
            STARTUP_TIMEOUT,
            "the cluster's webserver and code",
            on_poll=lambda: process.poll() is None or pytest.fail(log.read_text()[-5000:]),
        )
        yield process, url, exported(data / "cluster" / "env"), data
    except BaseException:
        for name in ("cluster.log", "data/cluster/main.log", *(f"data/cluster/{w}.log" for w in WORKERS)):
            path = tmp_path / name
            if path.exists():
                print(f"----- {name} -----", *path.read_text(errors="replace").splitlines()[-80:], sep="\n")
        raise
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def test_uploads_to_the_s3_inbox_are_processed_by_both_workers_into_the_bucket(
    cluster, phone_clip, landscape_clip, tmp_path
):
    process, url, env, data = cluster
    bad = corpus.text_as_mov(tmp_path)
    upload = subprocess.run(
        [str(BIN_DIR / "vidpipe"), "upload", str(phone_clip), str(landscape_clip), str(bad)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert upload.stdout.splitlines() == [f"s3://{BUCKET}/inbox/{p.name}" for p in (phone_clip, landscape_clip, bad)]
    s3 = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    )

    def stored(suffix: str) -> list[str]:
        listing = s3.list_objects_v2(Bucket=BUCKET, Prefix="videos/").get("Contents", [])
        return [item["Key"] for item in listing if item["Key"].endswith(suffix)]

    wait_until(
        lambda: len(stored("/manifest.json")) == 2 and len(stored("/rejection.json")) == 1,
        PROCESSING_TIMEOUT,
        "two manifests and one rejection in the bucket",
        on_poll=lambda: process.poll() is None or pytest.fail("the cluster stopped"),
    )
    originals = {p.name: p.read_bytes() for p in (phone_clip, landscape_clip)}
    keys = []
    for manifest_key in stored("/manifest.json"):
        folder = manifest_key.removesuffix("manifest.json")
        keys.append(folder.removeprefix("videos/").rstrip("/"))
        manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=manifest_key)["Body"].read())
        for entry in [*manifest["renditions"], *manifest["thumbnails"]]:
            head = s3.head_object(Bucket=BUCKET, Key=folder + entry["path"])
            assert head["ContentType"] == CONTENT_TYPES[Path(entry["path"]).suffix]
            if "bytes" in entry:
                assert head["ContentLength"] == entry["bytes"]
        original = s3.get_object(Bucket=BUCKET, Key=folder + "source" + Path(manifest["source"]["name"]).suffix.lower())
        assert original["Body"].read() == originals[manifest["source"]["name"]]
    [rejection] = stored("/rejection.json")
    assert json.loads(s3.get_object(Bucket=BUCKET, Key=rejection)["Body"].read())["reason"] == (
        "not a video: the file is text"
    )

    # Steps ran on both workers, none on the daemon's machine process; the UI sees the partitions.
    instance_env = {name: value for name, value in env.items() if name.startswith(("VIDPIPE_PG_", "DAGSTER_HOME"))}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in instance_env.items():
            patch.setenv(name, value)
        with dg.DagsterInstance.get() as instance:
            made_by = set()
            for asset_key in (
                dg.AssetKey("source_video"),
                dg.AssetKey(["renditions", "h264_360p"]),
                dg.AssetKey("thumbnail"),
            ):
                for record in instance.fetch_materializations(asset_key, limit=10).records:
                    made_by.add(record.asset_materialization.metadata["made_by"].value.split(",")[0])
    assert made_by == set(WORKERS), made_by

    # The refused upload's partition shows failed until the rejection sensor (every 10 s) withdraws it.
    def both_materialized_none_failed() -> bool:
        materialized, failed = partition_statuses(url, ["video_manifest"])
        return sorted(materialized) == sorted(keys) and failed == []

    wait_until(
        both_materialized_none_failed,
        60,
        "the UI's GraphQL API to report both manifests materialized and no partition failed",
    )

    # Ctrl-C or SIGTERM stops everything the cluster started.
    os.kill(process.pid, signal.SIGTERM)
    process.wait(timeout=60)
    wait_until(lambda: cluster_processes(data) == [], 30, "every process of the cluster to exit")
    assert not webserver_answers(url)
