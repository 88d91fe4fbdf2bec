"""What a run may read and change, and how failures that are not the upload's fault are reported.

Anyone who can reach the UI or the GraphQL API can launch a run with any tags, partition key
and run config; none of them may make vidpipe read a file that was not uploaded, run another
program or write outside its storage.
"""

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from vidpipe.definitions import process_video_job
from vidpipe.defs.partitions import UPLOAD_FILE_TAG, UPLOAD_NAME_TAG
from vidpipe.defs.storage import LocalVideoStorage
from vidpipe.media.errors import UploadError
from vidpipe.media.files import sha256_file
from vidpipe_tests.harness import Pipeline, evaluate_failed_video_runs, step_failures

SECRET = "root-only secret, never to be copied"


@pytest.fixture
def pipeline(tmp_path):
    with dg.instance_for_test() as instance:
        yield Pipeline(instance, tmp_path / "storage")


def restarts(result) -> int:
    return sum(1 for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_RESTARTED)


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.parametrize("tag", ["absolute path", "relative path", "symlink in the inbox"])
def test_a_run_tag_cannot_make_vidpipe_read_a_file_outside_the_inbox(pipeline, tmp_path, tiny_clip, tag):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    secret = tmp_path / "secret.key"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    (inbox / "innocent.mp4").symlink_to(secret)
    ref = {"absolute path": str(secret), "relative path": "../secret.key", "symlink in the inbox": "innocent.mp4"}[tag]
    # The attacker names the key after the secret's own hash, which the old failure message leaked.
    key = pipeline.add(secret)
    result = pipeline.materialize(
        key,
        tags={UPLOAD_FILE_TAG: ref, UPLOAD_NAME_TAG: "innocent.mp4"},
        inbox=inbox,
        raise_on_error=False,
    )
    [reason] = step_failures(result).values()
    assert reason in (
        f"'{ref}' is not the name of a file in the upload inbox",
        f"'{ref}' in the upload inbox is not a regular file",
    )
    assert sha256_file(secret)[:12] not in reason.replace(key, "")
    assert restarts(result) == 0
    assert not any(SECRET.encode() in p.read_bytes() for p in files_under(pipeline.storage_root))


def test_a_stored_original_is_never_more_readable_than_the_upload(pipeline, tmp_path, tiny_clip):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    private = shutil.copyfile(tiny_clip, inbox / "private.mp4")
    private.chmod(0o600)
    key = pipeline.add(private)
    assert pipeline.materialize(key, upload=private).success
    assert stat.S_IMODE((pipeline.storage_root / key / "source.mp4").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "resource, config",
    [
        ("ffmpeg", {"ffmpeg_path": "/bin/sh"}),
        ("ffmpeg", {"ffprobe_path": "/usr/bin/env"}),
        ("ffmpeg", {"packager_path": "/bin/sh"}),
        ("storage", {"root": "/etc"}),
        ("inbox", {"path": "/root"}),
    ],
)
def test_a_run_config_cannot_change_binaries_or_folders(resource, config):
    job = process_video_job()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("videos", ["x-0123456789ab"])
        with pytest.raises(dg.DagsterInvalidConfigError) as refused:
            job.execute_in_process(
                run_config={"resources": {resource: {"config": config}}},
                partition_key="x-0123456789ab",
                instance=instance,
            )
    assert f'unexpected config entry "{next(iter(config))}"' in str(refused.value)


def test_a_key_vidpipe_did_not_make_fails_once_in_plain_words(pipeline, tmp_path):
    pipeline.instance.add_dynamic_partitions("videos", ["../../etc"])
    result = pipeline.materialize("../../etc", raise_on_error=False)
    assert step_failures(result) == {
        "source_video": '"../../etc" is not a video key: vidpipe\'s keys are a name and a 12-digit content hash, '
        "like holiday-0123456789ab"
    }
    assert restarts(result) == 0
    assert not (tmp_path / "etc").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB file system, to fill up for real; ``grow()`` gives it room again."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.decode().strip()}")

    class Disk:
        path = mount_point

        @staticmethod
        def grow():
            subprocess.run(["mount", "-o", "remount,size=64m", str(mount_point)], check=True)

    yield Disk
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_a_full_disk_is_reported_plainly_and_the_video_can_be_rerun_from_the_inbox(
    small_disk, tmp_path, landscape_clip
):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    upload = shutil.copyfile(landscape_clip, inbox / "holiday.mp4")
    assert upload.stat().st_size > 256 * 1024
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(instance, small_disk.path)
        key = pipeline.add(upload)
        result = pipeline.materialize(key, upload=upload, raise_on_error=False)
        assert step_failures(result) == {"source_video": "no space left in storage while writing the original"}
        assert restarts(result) == 0
        assert files_under(small_disk.path) == [], "nothing half-written is left"

        small_disk.grow()
        # The documented re-run is a backfill: no upload tags, the inbox file comes from the failed run's.
        rerun = pipeline.materialize(key, inbox=inbox)
        assert rerun.success
        assert (small_disk.path / key / "source.mp4").read_bytes() == upload.read_bytes()
        assert (small_disk.path / key / "manifest.json").is_file()


def test_the_failure_log_quotes_the_command_that_reruns_a_video(pipeline):
    pipeline.instance.add_dynamic_partitions("videos", ["../x y"])
    result = pipeline.materialize("../x y", raise_on_error=False)
    evaluate_failed_video_runs(pipeline, result)
    [entry] = [json.loads(line) for line in (pipeline.storage_root / "failed_runs.jsonl").read_text().splitlines()]
    assert entry["rerun"].endswith("/vidpipe rerun '../x y'")
    assert entry["reason"].startswith('source_video: "../x y" is not a video key')


def test_a_failed_run_that_dagster_reruns_is_not_recorded_as_failed(pipeline):
    pipeline.instance.add_dynamic_partitions("videos", ["../y"])
    result = pipeline.materialize("../y", raise_on_error=False)
    pipeline.instance.add_run_tags(result.run_id, {"dagster/will_retry": "true"})
    evaluate_failed_video_runs(pipeline, result)
    assert not (pipeline.storage_root / "failed_runs.jsonl").exists()


def test_withdrawing_a_refused_video_leaves_only_the_original_and_its_records(tmp_path):
    storage = LocalVideoStorage(root=str(tmp_path))
    key = "clip-0123456789ab"
    for name in ["source.mp4", "source.json", "rejection.json", "manifest.json", "renditions/h264_360p.mp4"]:
        (tmp_path / key / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key / name).write_text(name)
    (tmp_path / key / "thumbnails").mkdir()
    storage.withdraw_outputs(key)
    assert sorted(p.name for p in (tmp_path / key).iterdir()) == ["rejection.json", "source.json", "source.mp4"]


def test_an_error_about_a_file_whose_name_is_not_utf8_can_be_shown(tmp_path):
    error = UploadError("the upload changed after it was seen", path=os.fsdecode(b"/inbox/caf\xe9.mp4"))
    assert error.context()["file"] == "/inbox/caf\\xe9.mp4"
    error.context()["file"].encode("utf-8")  # the event log stores UTF-8: a lone surrogate would fail here
