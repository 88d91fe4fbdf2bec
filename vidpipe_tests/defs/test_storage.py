"""Both storages behave alike (``VideoStorage``), the S3 one against a real S3 server (SeaweedFS on loopback)."""

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import botocore.loaders
import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource

from vidpipe.definitions import deployment_resources
from vidpipe.defs.assets.thumbnails import first_frame_of
from vidpipe.defs.resources import FFmpegResource, S3Inbox
from vidpipe.defs.storage import (
    LocalVideoStorage,
    S3VideoStorage,
    VideoStorage,
    scratch_folder,
    shared_client,
    shared_copies,
    sweep_scratch,
)
from vidpipe.media.errors import InvalidMediaError, InvalidVideoKeyError, UploadError
from vidpipe.media.files import sha256_file
from vidpipe.media.keys import partition_key
from vidpipe.media.manifest import SourceVideo
from vidpipe.media.probe import probe
from vidpipe.media.thumbnail import read_first_frame
from vidpipe.threads import side_by_side
from vidpipe_tests.harness import BUCKET, Pipeline, s3_resource, stream_files, watching_publication


def s3_storage(server, scratch: Path) -> S3VideoStorage:
    """A storage under a prefix of its own in the shared bucket."""
    return S3VideoStorage(
        s3=s3_resource(server), bucket=BUCKET, prefix=f"{uuid.uuid4().hex[:8]}/", scratch=str(scratch)
    )


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path) -> VideoStorage:
    if request.param == "local":
        return LocalVideoStorage(root=str(tmp_path / "storage"))
    return s3_storage(request.getfixturevalue("s3_server"), tmp_path / "scratch")


def objects(server, prefix: str) -> dict[str, dict]:
    client = server.client()
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {item["Key"][len(prefix) :]: item for item in listing}


def upload_of(tmp_path: Path, name: str = "holiday.mp4", content: bytes = b"not really a video") -> tuple[str, Path]:
    upload = tmp_path / name
    upload.write_bytes(content)
    return partition_key(name, sha256_file(upload)), upload


def test_an_original_is_kept_byte_for_byte_and_read_back(storage, tmp_path):
    key, upload = upload_of(tmp_path)
    assert storage.stored_original(key) is None
    stored = storage.store_original(key, upload, "Holiday.MP4", "holiday.mp4")
    assert (stored.file, stored.sha256) == ("source.mp4", sha256_file(upload))
    assert storage.stored_original(key) == stored
    with storage.fetch(key, stored.file) as local:
        assert local.read_bytes() == upload.read_bytes()
    assert storage.stored_size(key, "source.mp4") == upload.stat().st_size


def test_an_upload_whose_content_changed_is_refused(storage, tmp_path):
    key, upload = upload_of(tmp_path)
    upload.write_bytes(b"something else")
    with pytest.raises(UploadError):
        storage.store_original(key, upload, "holiday.mp4", "holiday.mp4")
    assert storage.stored_original(key) is None


def test_published_files_appear_only_when_the_block_succeeds(storage, tmp_path):
    key, _ = upload_of(tmp_path)

    def failing_encode() -> None:
        with storage.publishing(key, "renditions") as folder:
            (folder / "h264_360p.mp4").write_bytes(b"half an encode")
            raise RuntimeError("ffmpeg failed")

    with pytest.raises(RuntimeError):
        failing_encode()
    if isinstance(storage, S3VideoStorage):  # the local folder is where the writers publish by rename
        assert storage.stored_size(key, "renditions/h264_360p.mp4") is None
    with storage.publishing(key, "renditions") as folder:
        (folder / "h264_360p.mp4").write_bytes(b"a whole encode")
        assert storage.stored_size(key, "renditions/h264_240p.mp4") is None
    assert storage.stored_size(key, "renditions/h264_360p.mp4") == len(b"a whole encode")
    storage.publish_file(key, "manifest.json", b"{}")
    storage.withdraw_outputs(key)
    assert storage.stored_size(key, "renditions/h264_360p.mp4") is None
    assert storage.stored_size(key, "manifest.json") is None


def test_records_rejections_and_forgetting(storage, tmp_path):
    key, upload = upload_of(tmp_path)
    other, _ = upload_of(tmp_path, "other.mp4", b"other content")
    storage.store_original(key, upload, "holiday.mp4", "holiday.mp4")
    storage.record_renditions(key, {"h264_360p": {"argv": ["ffmpeg"]}})
    storage.record_renditions(key, {"h264_240p": {"argv": ["ffmpeg", "-y"]}})
    assert {name: r["argv"] for name, r in storage.rendition_records(key).items()} == {
        "h264_360p": ["ffmpeg"],
        "h264_240p": ["ffmpeg", "-y"],
    }
    storage.record_rejection(key, InvalidMediaError("not a video: the file is text"))
    storage.record_rejection(other, InvalidMediaError("not a video: the file is empty"))
    assert storage.rejection_reason(key) == "not a video: the file is text"
    assert [(r["video"], r["original"]) for r in storage.rejections()] == sorted([(key, "source.mp4"), (other, None)])
    assert storage.rejection(key)["reason"] == "not a video: the file is text" and storage.rejection("x-" + key) is None
    storage.clear_rejection(key)
    assert storage.rejection_reason(key) is None and [r["video"] for r in storage.rejections()] == [other]
    storage.forget(key)
    assert storage.stored_original(key) is None and storage.rendition_records(key) == {}
    assert storage.rejection_reason(other) is not None, "forgetting one video leaves the others"


@pytest.mark.parametrize("key", ["../escape-0123456789ab", "/etc-0123456789ab", "a/b-0123456789ab", ""])
def test_a_key_that_could_leave_the_storage_is_refused(storage, key, tmp_path):
    with pytest.raises(InvalidVideoKeyError, match="is not a video key"):
        storage.stored_original(key)
    with pytest.raises(InvalidVideoKeyError), storage.publishing(key, "renditions"):
        pass


def test_s3_objects_carry_the_content_types_players_need_and_scratch_is_emptied(s3_server, tmp_path):
    storage = s3_storage(s3_server, tmp_path / "scratch")
    key, _ = upload_of(tmp_path)
    with storage.publishing(key, "renditions") as folder:
        for name in ("h264_360p.mp4", "vp9_360p.webm", "audio.m4a", "thumb.jpg", "thumb.webp"):
            (folder / name).write_bytes(b"x")
    storage.publish_file(key, "manifest.json", b"{}")
    client = s3_server.client()
    types = {
        name: client.head_object(Bucket=BUCKET, Key=f"{storage.prefix}{key}/{name}")["ContentType"]
        for name in ("renditions/h264_360p.mp4", "renditions/vp9_360p.webm", "renditions/audio.m4a",
                     "renditions/thumb.jpg", "renditions/thumb.webp", "manifest.json")
    }  # fmt: skip
    assert types == {
        "renditions/h264_360p.mp4": "video/mp4",
        "renditions/vp9_360p.webm": "video/webm",
        "renditions/audio.m4a": "audio/mp4",
        "renditions/thumb.jpg": "image/jpeg",
        "renditions/thumb.webp": "image/webp",
        "manifest.json": "application/json",
    }
    assert list((tmp_path / "scratch").iterdir()) == []


def test_a_large_file_is_uploaded_in_parts_and_an_unfinished_upload_is_aborted(s3_server, tmp_path):
    storage = s3_storage(s3_server, tmp_path / "scratch")
    key, _ = upload_of(tmp_path)
    client = s3_server.client()
    # What a worker killed in the middle of a multipart upload leaves: parts, and no object.
    leftover = f"{storage.prefix}{key}/renditions/h264_1080p.mp4"
    started = client.create_multipart_upload(Bucket=BUCKET, Key=leftover)
    client.upload_part(Bucket=BUCKET, Key=leftover, UploadId=started["UploadId"], PartNumber=1, Body=b"x" * 2**20)
    large = 20 * 2**20
    with storage.publishing(key, "renditions") as folder:
        (folder / "h264_1080p.mp4").write_bytes(bytes(range(256)) * (large // 256))
    head = client.head_object(Bucket=BUCKET, Key=leftover)
    assert head["ContentLength"] == large and "-" in head["ETag"], "not a multipart upload"
    assert client.list_multipart_uploads(Bucket=BUCKET, Prefix=storage.prefix).get("Uploads", []) == []
    with storage.fetch(key, "renditions/h264_1080p.mp4") as local:
        assert local.stat().st_size == large
    assert list((tmp_path / "scratch").iterdir()) == []


def test_a_process_makes_one_s3_client_for_every_storage_and_inbox_and_a_forked_one_its_own(
    s3_server, tmp_path, monkeypatch
):
    """dagster-aws parses botocore's S3 model again for every client (~0.2 s of CPU): once per process."""
    loads: list[tuple[str, str]] = []
    real = botocore.loaders.Loader.load_service_model

    def counted(loader, service_name, type_name, *args, **kwargs):
        loads.append((service_name, type_name))
        return real(loader, service_name, type_name, *args, **kwargs)

    monkeypatch.setattr(botocore.loaders.Loader, "load_service_model", counted)
    settings = s3_resource(s3_server).model_dump() | {"max_attempts": 7}  # settings no other test's client has
    storages = [
        S3VideoStorage(s3=S3Resource(**settings), bucket=BUCKET, prefix=f"{i}/", scratch=str(tmp_path))
        for i in range(3)
    ]
    inbox = S3Inbox(s3=S3Resource(**settings), bucket=BUCKET, prefix="inbox/", scratch=str(tmp_path))
    for storage in storages:
        assert storage.manifest(partition_key("clip.mp4", "0" * 64)) is None  # a request each
    assert inbox.listing().candidates() == {}
    assert loads.count(("s3", "service-2")) == 1, loads
    ours = shared_client(storages[0].s3)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit status
        os._exit(0 if shared_client(storages[0].s3) is not ours else 1)
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0, "a forked process used its parent's client"


def test_a_video_processed_on_s3_storage_is_complete_and_consistent_whenever_it_is_looked_at(
    s3_server, phone_clip, tmp_path
):
    """Nothing half-written is ever listed: every object, once seen, keeps its size to the end, but for the indexes
    the complete milestone publishes again over the playable one's; the manifest comes last; and a player reading
    the bucket meanwhile never finds a listed file missing."""
    storage = s3_storage(s3_server, tmp_path / "scratch")
    seen: dict[str, int] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):  # a listing every 50 ms or so, leaving the encode its CPU
            for name, item in objects(s3_server, storage.prefix).items():
                seen.setdefault(name, item["Size"])

    with dg.instance_for_test() as instance:
        pipeline = Pipeline(instance, tmp_path / "unused")
        pipeline.resources["storage"] = storage
        key = pipeline.add(phone_clip)
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            with watching_publication(storage, key, every=0.05) as watched:
                result = pipeline.materialize(key, upload=phone_clip)
        finally:
            done.set()
            watcher.join()
    assert result.success
    assert watched.states == ["playable", "complete"] and watched.missing == []
    final = objects(s3_server, storage.prefix)

    def read(name: str) -> str:
        return s3_server.client().get_object(Bucket=BUCKET, Key=f"{storage.prefix}{name}")["Body"].read().decode()

    manifest = json.loads(read(f"{key}/manifest.json"))
    published = {f"{key}/{entry['path']}": entry for entry in [*manifest["renditions"], *manifest["thumbnails"]]}
    published |= {f"{key}/{path}": {} for path in [manifest["storyboard"]["vtt"], *manifest["storyboard"]["images"]]}
    published |= {f"{key}/{path}": {} for path in stream_files(manifest, lambda path: read(f"{key}/{path}"))}
    assert set(published) <= set(final)
    for name, rendition in ((f"{key}/{r['path']}", r) for r in manifest["renditions"]):
        assert final[name]["Size"] == rendition["bytes"]
    records = {f"{key}/{name}" for name in ("source.json", "encode.json")}
    records |= {name for name in final if name.startswith(f"{key}/steps/")}  # the values steps hand on
    assert f"{key}/steps/video_manifest.pickle" in records
    assert set(final) == {*published, *records, f"{key}/source.mov", f"{key}/manifest.json"}
    changed = {
        name: (size, final[name]["Size"])
        for name, size in seen.items()
        if name not in records and final.get(name, {}).get("Size") != size
    }
    assert {f"{key}/source.mov", *published} <= set(seen), "the watcher missed objects: it proves nothing"
    republished = {f"{key}/{name}" for name in ("manifest.json", "stream/master.m3u8", "stream/manifest.mpd")}
    assert set(changed) <= republished, "an object was seen before it was complete, or a temporary one was listed"
    manifest_time = final[f"{key}/manifest.json"]["LastModified"]
    assert all(final[name]["LastModified"] <= manifest_time for name in published), "the manifest was not written last"
    master = f"{key}/{manifest['streams']['hls']['path']}"
    assert all(final[name]["LastModified"] <= final[master]["LastModified"] for name in published if "/stream/" in name)
    original = s3_server.client().get_object(Bucket=BUCKET, Key=f"{storage.prefix}{key}/source.mov")["Body"].read()
    assert original == phone_clip.read_bytes()
    assert list((tmp_path / "scratch").iterdir()) == []


def test_the_deployment_reaches_the_s3_server_from_the_standard_aws_variables_alone(s3_server, monkeypatch, tmp_path):
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    prefix = f"env-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("VIDPIPE_STORAGE", f"s3://{BUCKET}/{prefix}/")
    monkeypatch.setenv("VIDPIPE_SCRATCH", str(tmp_path / "scratch"))
    storage = deployment_resources()["storage"]
    key, upload = upload_of(tmp_path)
    storage.store_original(key, upload, "holiday.mp4", "holiday.mp4")
    assert set(objects(s3_server, f"{prefix}/")) == {f"{key}/source.mp4", f"{key}/source.json"}
    with storage.fetch(key, "source.mp4") as local:
        assert local.read_bytes() == upload.read_bytes()


def test_a_worker_at_start_sweeps_the_scratch_folders_of_killed_processes_only(tmp_path):
    scratch = tmp_path / "scratch"
    hold = "import sys, time; from vidpipe.defs.storage import scratch_folder\n"
    hold += "with scratch_folder(sys.argv[1], 'publish') as f:\n    (f / 'h264_360p.mp4').touch(); print(f, flush=True); time.sleep(60)"
    killed = subprocess.Popen([sys.executable, "-c", hold, str(scratch)], stdout=subprocess.PIPE, text=True)
    left_behind = Path(killed.stdout.readline().strip())
    killed.kill()
    killed.wait()
    (scratch / "notes-1-kept").mkdir()  # not a scratch folder of vidpipe's
    with scratch_folder(str(scratch), "fetch") as in_use:
        assert left_behind.name.startswith(f"publish-{killed.pid}-") and left_behind.is_dir()
        assert sweep_scratch(scratch) == [left_behind]
        assert sorted(scratch.iterdir()) == sorted([in_use, scratch / "notes-1-kept"])


def test_the_first_frame_is_read_from_the_originals_ends_when_they_hold_it(s3_server, tmp_path, landscape_clip):
    """On S3, the thumbnail step reads the original's start and end (two ranged reads) instead of all of it,
    when its index says those hold every packet the first frame's decoding reads; the frame is the same."""
    storage = s3_storage(s3_server, tmp_path / "scratch")
    key = partition_key(landscape_clip.name, sha256_file(landscape_clip))
    stored = storage.store_original(key, landscape_clip, landscape_clip.name, landscape_clip.name)
    source = SourceVideo(key=key, name=stored.name, sha256=stored.sha256, file=stored.file, info=probe(landscape_clip))
    ffmpeg = FFmpegResource()
    size = landscape_clip.stat().st_size
    whole = read_first_frame(landscape_clip, source.info)

    head, tail = 256 << 10, 64 << 10
    with storage.fetch_ends(key, stored.file, head, tail) as partial:
        assert partial.path.stat().st_size == size and not partial.complete
        assert partial.path.stat().st_blocks * 512 < size  # sparse: the middle was never written
        data, original = partial.path.read_bytes(), landscape_clip.read_bytes()
        assert data[:head] == original[:head] and data[-tail:] == original[-tail:]
        assert data[head:-tail] == bytes(size - head - tail)

    frame, read = first_frame_of(source, ffmpeg, storage, head=head, tail=tail)
    assert read == f"{head + tail} bytes of the original's start and end"
    assert frame.tobytes() == whole.tobytes()
    # A start too short for the first packets: the whole original is read, and the frame is the same.
    frame, read = first_frame_of(source, ffmpeg, storage, head=1 << 10, tail=tail)
    assert read == "the whole original (its first frame is not near an end)"
    assert frame.tobytes() == whole.tobytes()
    assert list((tmp_path / "scratch").iterdir()) == []


class CountingStorage(LocalVideoStorage):
    """Local storage that counts its fetches (a fetch from S3 is a download)."""

    def fetch(self, key, file):
        FETCHED.append(file)
        return super().fetch(key, file)


FETCHED: list[str] = []


def test_the_parts_of_one_step_fetch_each_stored_file_once(tmp_path):
    """``publish`` runs its parts in threads that read the same renditions: each file is fetched once."""
    key = "clip-0123456789ab"
    (tmp_path / key / "renditions").mkdir(parents=True)
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / key / "renditions" / name).write_bytes(b"x")
    FETCHED.clear()
    wanted = ["renditions/a.mp4", "renditions/b.mp4"]
    with shared_copies(CountingStorage(root=str(tmp_path)), key) as local:
        parts = side_by_side({n: lambda: [local(f) for f in wanted] for n in range(4)})
    assert all(part.result() == [tmp_path / key / f for f in wanted] for part in parts.values())
    assert sorted(FETCHED) == wanted
