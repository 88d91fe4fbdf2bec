"""Odd and hostile file names, and many uploads at once."""

import json
import shutil

import dagster as dg
import pytest

from vidpipe.defs.partitions import UPLOAD_FILE_TAG, UPLOAD_NAME_TAG, VIDEOS
from vidpipe.defs.storage import LocalVideoStorage
from vidpipe.inbox import readable_name, resolve_upload
from vidpipe.media.errors import InvalidVideoKeyError
from vidpipe.media.keys import is_partition_key
from vidpipe_tests.harness import Pipeline, SensorHarness

HOSTILE_NAMES = [
    "my holiday clip.mp4",
    "vidéo d'été ünïcödé.mov",
    'it\'s "quoted" & $(rm -rf ~).mp4',
    "new\nline.mp4",
    "-rf --no-preserve-root.mp4",
    "%2e%2e%2fetc%2fpasswd.mp4",
    "名前のない動画.mp4",
    "x" * 250 + ".mp4",
]


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def test_hostile_names_get_safe_partition_keys_and_keep_their_real_name(instance, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i, name in enumerate(HOSTILE_NAMES):
        (inbox / name).write_bytes(f"content {i}".encode())
    requests = SensorHarness(instance, inbox, settle_seconds=0).tick().run_requests
    files = {resolve_upload(inbox, r.tags[UPLOAD_FILE_TAG]).name: r.tags[UPLOAD_NAME_TAG] for r in requests}
    assert files == {name: readable_name(name) for name in HOSTILE_NAMES}
    assert all(tag.isascii() and tag.isprintable() for r in requests for tag in [r.tags[UPLOAD_FILE_TAG]])
    keys = [r.partition_key for r in requests]
    assert len(set(keys)) == len(HOSTILE_NAMES)
    assert all(is_partition_key(key) and len(key) <= 61 for key in keys), keys


def test_a_hostile_name_is_processed_inside_the_storage_root(tmp_path, tiny_clip):
    upload = tmp_path / "new\nline -rf $(id) '..'.mp4"
    shutil.copyfile(tiny_clip, upload)
    root = tmp_path / "storage"
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(instance, root)
        key = pipeline.add(upload)
        assert pipeline.materialize(key, upload=upload).success
    catalog = tmp_path / "storage.catalog.sqlite"  # the catalog file and its write-ahead log, by name
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p not in (upload, tiny_clip) and p.parent != tmp_path]
    assert written and all(root in p.parents for p in written)
    assert {p.name for p in tmp_path.iterdir() if p.is_file()} <= {
        upload.name,
        catalog.name,
        f"{catalog.name}-wal",
        f"{catalog.name}-shm",
    }
    record = json.loads((root / key / "source.json").read_text())
    assert record["name"] == "new\\nline -rf $(id) '..'.mp4" and resolve_upload(tmp_path, record["name_ref"]) == upload
    assert json.loads((root / key / "manifest.json").read_text())["source"]["name"] == record["name"]


def test_storage_refuses_keys_that_could_leave_its_root(tmp_path):
    storage = LocalVideoStorage(root=str(tmp_path))
    for key in ["../escape-0123456789ab", "/etc-0123456789ab", "a/b-0123456789ab", ""]:
        with pytest.raises(InvalidVideoKeyError, match="is not a video key"):
            storage.location(key)


def test_fifty_uploads_at_once_are_each_requested_exactly_once(instance, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(50):
        (inbox / f"clip {i:02d}.mp4").write_bytes(f"video {i}".encode())
    (inbox / "clip 00 again.mp4").write_bytes(b"video 0")
    harness = SensorHarness(instance, inbox, settle_seconds=0)
    requests = harness.tick().run_requests
    assert len(requests) == 50
    assert len({r.run_key for r in requests}) == len({r.partition_key for r in requests}) == 50
    assert harness.tick().run_requests == []
    assert len(instance.get_dynamic_partitions(VIDEOS)) == 50
