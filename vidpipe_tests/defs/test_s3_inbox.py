"""The inbox as an S3 prefix, against a real S3 server (SeaweedFS on loopback): listing, settling, a bounded
cursor, duplicates, hostile names, ``vidpipe upload`` and presigned uploads, and a video taken from it to the end."""

import hashlib
import json
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pytest

from vidpipe.cli import main
from vidpipe.defs.resources import S3Inbox
from vidpipe.defs.storage import S3VideoStorage
from vidpipe.inbox import InboxCursor, S3Listing, scan_inbox
from vidpipe.media.errors import UploadError
from vidpipe.media.files import sha256_file
from vidpipe.media.keys import partition_key
from vidpipe_tests.harness import BUCKET, Pipeline, SensorHarness, s3_resource

LATER = 10**12
"""Nanoseconds: a scan made this much later sees every upload settled."""


@pytest.fixture
def prefix() -> str:
    return f"inbox-{uuid.uuid4().hex[:8]}/"


def put(server, prefix: str, name: str, body: bytes) -> None:
    server.client().put_object(Bucket=BUCKET, Key=prefix + name, Body=body)


def s3_inbox(server, prefix: str, tmp_path, **settings) -> S3Inbox:
    return S3Inbox(s3=s3_resource(server), bucket=BUCKET, prefix=prefix, scratch=str(tmp_path / "scratch"), **settings)


def test_uploads_are_the_objects_directly_under_the_prefix_once_settled(s3_server, prefix):
    listing = S3Listing(s3_server.client(), BUCKET, prefix)
    put(s3_server, prefix, "Holiday clip.mp4", b"video one")
    put(s3_server, prefix, ".hidden.mp4", b"not an upload")
    put(s3_server, prefix, "clip.mp4.part", b"not finished")
    put(s3_server, prefix, "folder/inside.mp4", b"not directly under the prefix")
    put(s3_server, "elsewhere/", "other.mp4", b"another prefix")
    fresh = scan_inbox(listing, InboxCursor(), settle_seconds=60)
    assert fresh.uploads == [] and fresh.waiting == ["Holiday clip.mp4"], "just written: not settled yet"
    settled = scan_inbox(listing, InboxCursor(), settle_seconds=60, now_ns=time.time_ns() + LATER)
    [upload] = settled.uploads
    assert (upload.name, upload.size) == ("Holiday clip.mp4", len(b"video one"))
    assert upload.sha256 == hashlib.sha256(b"video one").hexdigest()
    again = scan_inbox(listing, settled.cursor, settle_seconds=60, now_ns=time.time_ns() + LATER)
    assert again.uploads == [], "an upload is taken once"
    put(s3_server, prefix, "Holiday clip.mp4", b"replaced by a new upload")
    replaced = scan_inbox(listing, again.cursor, settle_seconds=0, now_ns=time.time_ns() + LATER)
    assert [u.size for u in replaced.uploads] == [len(b"replaced by a new upload")], "an overwrite is a new upload"


def test_the_cursor_stays_small_after_a_thousand_uploads(s3_server, prefix):
    """It keeps by name only the uploads of the newest second (LastModified's resolution): one here."""
    names = [f"clip {i:04d}.mp4" for i in range(1000)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda name: put(s3_server, prefix, name, name.encode()), names))
    time.sleep(1.1)
    put(s3_server, prefix, "last.mp4", b"the newest")
    listing = S3Listing(s3_server.client(), BUCKET, prefix)
    cursor, taken = InboxCursor(), []
    for _ in range(10):
        scan = scan_inbox(listing, cursor, settle_seconds=0, hash_budget_seconds=5, now_ns=time.time_ns() + LATER)
        taken.extend(upload.name for upload in scan.uploads)
        cursor = scan.cursor
        if not scan.waiting:
            break
    assert sorted(taken) == sorted([*names, "last.mp4"]), "every upload taken exactly once"
    assert list(cursor.handled) == ["last.mp4"] and len(cursor.to_json()) < 200, cursor.to_json()


def test_the_watermark_waits_for_a_multipart_upload_in_progress(s3_server, prefix):
    """On AWS a multipart upload's object shows the time the upload started: it must not fall below the watermark."""
    client = s3_server.client()
    started = client.create_multipart_upload(Bucket=BUCKET, Key=prefix + "large.mp4")
    part = client.upload_part(
        Bucket=BUCKET, Key=prefix + "large.mp4", UploadId=started["UploadId"], PartNumber=1, Body=b"x" * 2**20
    )
    time.sleep(1.1)
    put(s3_server, prefix, "small.mp4", b"a small upload, finished after the large one started")
    listing = S3Listing(client, BUCKET, prefix)
    first = scan_inbox(listing, InboxCursor(), settle_seconds=0, now_ns=time.time_ns() + LATER)
    assert [u.name for u in first.uploads] == ["small.mp4"]
    assert first.cursor.watermark_ns <= listing.unfinished_since_ns() < time.time_ns() - 10**9
    client.complete_multipart_upload(
        Bucket=BUCKET,
        Key=prefix + "large.mp4",
        UploadId=started["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    second = scan_inbox(listing, first.cursor, settle_seconds=0, now_ns=time.time_ns() + LATER)
    assert [u.name for u in second.uploads] == ["large.mp4"]


def test_a_run_reads_only_the_named_object_of_the_inbox(s3_server, prefix, tmp_path):
    inbox = s3_inbox(s3_server, prefix, tmp_path)
    put(s3_server, prefix, "clip ü.mp4", b"the upload")
    put(s3_server, "secret/", "keys.txt", b"not the inbox's")
    with inbox.fetch("clip%20%C3%BC.mp4") as local:
        assert local.read_bytes() == b"the upload"
    assert list((tmp_path / "scratch").iterdir()) == [], "the download is removed afterwards"
    for ref in ["../secret/keys.txt", "a%2Fb.mp4", "", "%00"]:
        with pytest.raises(UploadError, match="is not the name of a file in the upload inbox"), inbox.fetch(ref):
            pass
    with pytest.raises(UploadError, match="is no longer in the inbox"), inbox.fetch("gone.mp4"):
        pass


def test_the_same_content_under_two_names_is_one_video(s3_server, prefix, tmp_path, landscape_clip):
    with dg.instance_for_test() as instance:
        harness = SensorHarness(instance, tmp_path / "unused-inbox", settle_seconds=0)
        harness.resources["inbox"] = s3_inbox(s3_server, prefix, tmp_path, settle_seconds=0)
        put(s3_server, prefix, "first.mp4", landscape_clip.read_bytes())
        put(s3_server, prefix, "second copy.mp4", landscape_clip.read_bytes())
        requests = harness.tick().run_requests
    assert len(requests) == 1
    assert requests[0].partition_key == partition_key("first.mp4", sha256_file(landscape_clip))


def test_vidpipe_upload_and_a_presigned_url_put_files_in_the_s3_inbox(
    s3_server, prefix, tmp_path, monkeypatch, capsysbinary, landscape_clip
):
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("VIDPIPE_INBOX", f"s3://{BUCKET}/{prefix}")
    assert main(["upload", str(landscape_clip), str(landscape_clip)]) == 0
    printed = capsysbinary.readouterr().out.decode().split()
    assert printed == [f"s3://{BUCKET}/{prefix}landscape.mp4", f"s3://{BUCKET}/{prefix}landscape-1.mp4"]
    assert main(["upload-url", "from a browser.webm", "--expires", "600"]) == 0
    url = capsysbinary.readouterr().out.decode().strip()
    assert s3_server.access_key in url and s3_server.secret_key not in url and "X-Amz-Signature" in url
    request = urllib.request.Request(
        url, data=b"uploaded by a browser", method="PUT", headers={"Content-Type": "video/webm"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    listing = S3Listing(s3_server.client(), BUCKET, prefix)
    scan = scan_inbox(listing, InboxCursor(), settle_seconds=0, now_ns=time.time_ns() + LATER)
    assert sorted(u.name for u in scan.uploads) == ["from a browser.webm", "landscape-1.mp4", "landscape.mp4"]
    assert main(["upload-url", "../escape.mp4"]) == 1


def test_a_video_dropped_in_the_s3_inbox_ends_as_a_complete_manifest_in_the_bucket(
    s3_server, prefix, tmp_path, phone_clip
):
    storage = S3VideoStorage(
        s3=s3_resource(s3_server), bucket=BUCKET, prefix=f"out-{prefix}", scratch=str(tmp_path / "scratch")
    )
    inbox = s3_inbox(s3_server, prefix, tmp_path, settle_seconds=0)
    put(s3_server, prefix, phone_clip.name, phone_clip.read_bytes())
    with dg.instance_for_test() as instance:
        harness = SensorHarness(instance, tmp_path / "unused-inbox", settle_seconds=0)
        harness.resources["inbox"] = inbox
        [request] = harness.tick().run_requests
        pipeline = Pipeline(instance, tmp_path / "unused-storage")
        pipeline.resources |= {"storage": storage, "catalog": harness.resources["catalog"]}
        result = pipeline.materialize(request.partition_key, inbox=inbox, tags=request.tags)
    assert result.success
    key = request.partition_key
    client = s3_server.client()
    manifest = json.loads(client.get_object(Bucket=BUCKET, Key=f"out-{prefix}{key}/manifest.json")["Body"].read())
    assert manifest["source"]["name"] == phone_clip.name and (
        manifest["source"]["width"],
        manifest["source"]["height"],
    ) == (360, 640)
    original = client.get_object(Bucket=BUCKET, Key=f"out-{prefix}{key}/source.mov")["Body"].read()
    assert original == phone_clip.read_bytes()
    assert list((tmp_path / "scratch").iterdir()) == []
