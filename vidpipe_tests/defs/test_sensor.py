"""The upload sensor, evaluated against a real (temporary, sqlite) Dagster instance."""

import os
import shutil
import threading
import time

import dagster as dg
import pytest

from vidpipe.defs.catalog import refused
from vidpipe.defs.partitions import UPLOAD_FILE_TAG, UPLOAD_NAME_TAG, VIDEOS
from vidpipe.defs.storage import LocalVideoStorage
from vidpipe.inbox import resolve_upload
from vidpipe.media.errors import InvalidMediaError
from vidpipe.media.files import sha256_file
from vidpipe_tests.harness import SensorHarness


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
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
    assert request.run_key == f"{sha}-{upload.stat().st_ctime_ns}"
    assert request.tags == {UPLOAD_FILE_TAG: "My Holiday.mp4", UPLOAD_NAME_TAG: "My Holiday.mp4"}
    assert instance.get_dynamic_partitions(VIDEOS) == [request.partition_key]
    assert harness.tick().run_requests == []


def test_a_file_still_being_written_is_left_alone(instance, inbox, landscape_clip):
    """A writer adding a chunk every 0.1 s while the sensor ticks: no run until it has finished.

    The settle time is ten times the writer's pace, so a busy machine does not see a pause."""
    harness = SensorHarness(instance, inbox, settle_seconds=1.0)
    data = landscape_clip.read_bytes()
    growing = inbox / "growing.mp4"
    growing.write_bytes(data[:1000])
    chunks = [data[i : i + len(data) // 15 + 1] for i in range(1000, len(data), len(data) // 15 + 1)]

    def write_slowly():
        for chunk in chunks:
            time.sleep(0.1)
            with open(growing, "ab") as handle:
                handle.write(chunk)

    writer = threading.Thread(target=write_slowly)
    writer.start()
    requests = []
    while writer.is_alive():
        requests += harness.tick().run_requests
    time.sleep(1.1)
    requests += harness.tick().run_requests
    # One run, for the whole file: none for any part of it seen while it was being written.
    assert [request.run_key.split("-")[0] for request in requests] == [sha256_file(landscape_clip)]
    assert len(instance.get_dynamic_partitions(VIDEOS)) == 1


def test_an_upload_that_settles_during_a_tick_is_taken_in_that_tick(instance, inbox, landscape_clip):
    """The daemon evaluates the sensor every 5 s; an upload 0.8 s from settled should not wait for the next."""
    harness = SensorHarness(instance, inbox, settle_seconds=0.8)
    copy_in(landscape_clip, inbox, "just arrived.mp4")
    [request] = harness.tick().run_requests
    assert request.run_key.startswith(sha256_file(landscape_clip))


def test_an_upload_runs_its_steps_in_the_run_process(instance, inbox, landscape_clip):
    """A video's steps follow one another: a process per step would only add its start."""
    copy_in(landscape_clip, inbox, "clip.mp4")
    [request] = SensorHarness(instance, inbox, settle_seconds=0).tick().run_requests
    assert request.run_config["execution"] == {"config": {"in_one_process": True}}


def test_the_same_bytes_uploaded_twice_are_processed_once(instance, inbox, landscape_clip):
    harness = SensorHarness(instance, inbox, settle_seconds=0)
    copy_in(landscape_clip, inbox, "first.mp4")
    copy_in(landscape_clip, inbox, "second copy.mp4")
    assert len(harness.tick().run_requests) == 1
    copy_in(landscape_clip, inbox, "third.mp4")
    assert harness.tick().run_requests == []
    assert len(instance.get_dynamic_partitions(VIDEOS)) == 1


def test_cursor_stays_small_however_many_files_were_seen(instance, inbox):
    harness = SensorHarness(instance, inbox, settle_seconds=0)
    sizes = []
    for batch in range(3):
        for i in range(60):
            (inbox / f"clip-{batch}-{i}.mp4").write_bytes(f"{batch}-{i}".encode())
        assert len(harness.tick().run_requests) == 60
        sizes.append(len(harness.cursor))
    assert len(instance.get_dynamic_partitions(VIDEOS)) == 180
    assert max(sizes) < 200, sizes


def test_a_tick_whose_runs_were_not_created_is_taken_again_in_full(instance, inbox, landscape_clip, silent_clip):
    """Dagster adds the partitions before it creates the runs: a partition alone must not count as handled."""
    harness = SensorHarness(instance, inbox, settle_seconds=0)
    copy_in(landscape_clip, inbox, "first.mp4")
    copy_in(silent_clip, inbox, "second.mp4")
    failed_tick = harness.tick(create_runs=False)
    assert len(failed_tick.run_requests) == 2 and len(instance.get_dynamic_partitions(VIDEOS)) == 2
    retried = harness.tick()
    assert [(r.run_key, r.partition_key) for r in retried.run_requests] == [
        (r.run_key, r.partition_key) for r in failed_tick.run_requests
    ]
    assert len(instance.get_runs()) == 2
    assert harness.tick().run_requests == []


def test_names_that_cannot_travel_in_tags_do_not_take_other_uploads_down(instance, inbox, landscape_clip):
    """Not UTF-8, control characters, the longest name Linux allows: each becomes a run, beside good ones.

    Before, a name that was not UTF-8 went into the run's tags as is, and creating the run failed for
    every upload of that tick.
    """
    names = [b"bad \xff\xfe name.mp4", b"tab\tand\x1bescape.mp4", b"n" * 251 + b".mp4", b"good-1.mp4", b"good-2.mp4"]
    data = landscape_clip.read_bytes()
    for i, name in enumerate(names):
        with open(os.path.join(os.fsencode(inbox), name), "wb") as out:
            out.write(data + bytes([i]))
    requests = SensorHarness(instance, inbox, settle_seconds=0).tick().run_requests
    assert len(instance.get_runs()) == len(requests) == len(names)
    taken = {os.fsencode(resolve_upload(inbox, r.tags[UPLOAD_FILE_TAG]).name) for r in requests}
    assert taken == set(names)
    names_for_people = {r.tags[UPLOAD_NAME_TAG] for r in requests}
    assert {"bad \\xff\\xfe name.mp4", "tab\\tand\\x1bescape.mp4", "good-1.mp4"} <= names_for_people
    assert all(value.isprintable() for r in requests for value in r.tags.values())


def test_a_video_whose_runs_all_failed_is_run_again_when_uploaded_again(instance, inbox, landscape_clip):
    harness = SensorHarness(instance, inbox, settle_seconds=0)
    upload = copy_in(landscape_clip, inbox, "clip.mp4")
    [first] = harness.tick().run_requests
    [run] = instance.get_runs()
    instance.report_run_failed(run, "the disk was full")
    upload.unlink()
    copy_in(landscape_clip, inbox, "clip.mp4")
    [again] = harness.tick().run_requests
    assert again.partition_key == first.partition_key and again.run_key != first.run_key
    assert len(instance.get_dynamic_partitions(VIDEOS)) == 1


def test_a_refused_video_is_not_run_again_when_uploaded_again(instance, inbox, landscape_clip):
    harness = SensorHarness(instance, inbox, settle_seconds=0)
    copy_in(landscape_clip, inbox, "clip.mp4")
    [first] = harness.tick().run_requests
    storage = LocalVideoStorage(root=str(inbox.parent / "storage"))
    error = InvalidMediaError("not a video: the file is text")
    refused(harness.resources["catalog"].catalog(), storage, first.partition_key, error)
    instance.report_run_failed(instance.get_runs()[0], "refused")
    copy_in(landscape_clip, inbox, "clip again.mp4")
    assert harness.tick().run_requests == []
