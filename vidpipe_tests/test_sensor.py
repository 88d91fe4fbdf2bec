"""The upload sensor, evaluated against a real (temporary, sqlite) Dagster instance."""

import os
import shutil
import time

import dagster as dg
import pytest

from vidpipe.defs.assets import UPLOAD_NAME_TAG, UPLOAD_PATH_TAG, videos
from vidpipe.media.files import sha256_file
from vidpipe_tests.harness import SensorHarness


@pytest.fixture()
def instance():
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture()
def inbox(tmp_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


def copy_in(source, inbox, name):
    target = inbox / name
    shutil.copyfile(source, inbox / f".{name}.partial")
    os.rename(inbox / f".{name}.partial", target)
    return target


def test_new_upload_adds_a_partition_and_requests_one_run(instance, inbox, landscape_clip):
    harness = SensorHarness(instance, inbox, settle_seconds=0)
    upload = copy_in(landscape_clip, inbox, "My Holiday.mp4")
    result = harness.tick()
    sha = sha256_file(landscape_clip)
    [request] = result.run_requests
    assert request.partition_key == f"my-holiday-{sha[:12]}"
    assert request.run_key == sha
    assert request.tags[UPLOAD_PATH_TAG] == str(upload) and request.tags[UPLOAD_NAME_TAG] == "My Holiday.mp4"
    assert instance.get_dynamic_partitions(videos.name) == [request.partition_key]
    assert harness.tick().run_requests == []


def test_a_file_still_being_written_is_left_alone(instance, inbox, landscape_clip):
    harness = SensorHarness(instance, inbox, settle_seconds=0.5)
    growing = inbox / "growing.mp4"
    growing.write_bytes(landscape_clip.read_bytes()[:10_000])
    assert harness.tick().run_requests == []
    assert instance.get_dynamic_partitions(videos.name) == []
    with open(growing, "ab") as handle:
        handle.write(landscape_clip.read_bytes()[10_000:])
    assert harness.tick().run_requests == []
    time.sleep(0.6)
    [request] = harness.tick().run_requests
    assert request.run_key == sha256_file(landscape_clip)


def test_the_same_bytes_uploaded_twice_are_processed_once(instance, inbox, landscape_clip):
    harness = SensorHarness(instance, inbox, settle_seconds=0)
    copy_in(landscape_clip, inbox, "first.mp4")
    copy_in(landscape_clip, inbox, "second copy.mp4")
    assert len(harness.tick().run_requests) == 1
    copy_in(landscape_clip, inbox, "third.mp4")
    assert harness.tick().run_requests == []
    assert len(instance.get_dynamic_partitions(videos.name)) == 1


def test_cursor_stays_small_however_many_files_were_seen(instance, inbox):
    harness = SensorHarness(instance, inbox, settle_seconds=0)
    sizes = []
    for batch in range(3):
        for i in range(60):
            (inbox / f"clip-{batch}-{i}.mp4").write_bytes(f"{batch}-{i}".encode())
        assert len(harness.tick().run_requests) == 60
        sizes.append(len(harness.cursor))
    assert len(instance.get_dynamic_partitions(videos.name)) == 180
    assert max(sizes) < 200, sizes
