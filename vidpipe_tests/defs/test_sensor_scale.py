"""What one sensor tick costs, counted, beside a small and a large catalog: the same catalog queries, the same
instance calls returning the same number of items, and (on a real S3 server) the same S3 requests."""

import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import wraps

import dagster as dg
import pytest

from vidpipe.defs.partitions import VIDEOS
from vidpipe.media.files import sha256_file
from vidpipe_tests.catalogs import counted_queries, counted_s3_requests, synthetic_videos
from vidpipe_tests.defs.test_s3_inbox import put, s3_inbox
from vidpipe_tests.harness import BUCKET, SensorHarness


@contextmanager
def instance_calls() -> Iterator[list[tuple[str, int | None]]]:
    """Every public ``DagsterInstance`` method called during the block, with the size of what it returned."""
    calls: list[tuple[str, int | None]] = []
    patched = {}
    for name, method in vars(dg.DagsterInstance).items():
        if name.startswith("_") or not callable(method) or isinstance(method, (staticmethod, classmethod)):
            continue

        def counted(*args, _method=method, _name=name, **kwargs):
            result = _method(*args, **kwargs)
            calls.append((_name, len(result) if isinstance(result, (list, tuple, set, dict)) else None))
            return result

        patched[name] = method
        setattr(dg.DagsterInstance, name, wraps(method)(counted))
    try:
        yield calls
    finally:
        for name, method in patched.items():
            setattr(dg.DagsterInstance, name, method)


def a_catalog_of(harness: SensorHarness, instance: dg.DagsterInstance, size: int, start: int = 0) -> None:
    """``size`` more stored videos: catalog rows and partitions, as the pipeline leaves them."""
    catalog = harness.resources["catalog"].catalog()
    rows = list(synthetic_videos(size, start=start))
    existing = list(catalog.all_videos())
    catalog.replace_all([*existing, *rows])
    instance.add_dynamic_partitions(VIDEOS, [row.key for row in rows])


def tick_with_new_uploads(harness, inbox, clips, round_name):
    """A tick that finds ``clips`` newly dropped (under new names) and one upload of content already known."""
    for i, clip in enumerate(clips):
        shutil.copyfile(clip, inbox / f"{round_name} {i}{clip.suffix}")
    with (
        counted_queries(harness.resources["catalog"].catalog().engine) as queries,
        instance_calls() as calls,
    ):
        result = harness.tick()
    return result, [query.split()[0] for query in queries], calls


def test_a_tick_costs_the_same_beside_1000_and_20000_videos(tmp_path, landscape_clip, silent_clip, tiny_clip):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with dg.instance_for_test() as instance:
        harness = SensorHarness(instance, inbox, settle_seconds=0)
        a_catalog_of(harness, instance, 1000)
        first, queries_small, calls_small = tick_with_new_uploads(harness, inbox, [landscape_clip, silent_clip], "a")
        assert len(first.run_requests) == 2
        a_catalog_of(harness, instance, 19_000, start=1000)
        assert len(instance.get_dynamic_partitions(VIDEOS)) == 20_002
        # the same content again (known: skipped) and a new one
        second, queries_large, calls_large = tick_with_new_uploads(harness, inbox, [landscape_clip, tiny_clip], "b")
    assert [r.partition_key for r in second.run_requests] == [f"b-1-{sha256_file(tiny_clip)[:12]}"]
    # one look-up of every upload's content, then a row for each new video (its insert and its state count)
    assert queries_small == ["SELECT", "SELECT", "INSERT", "INSERT", "UPDATE", "SELECT", "INSERT", "INSERT", "UPDATE"]
    assert queries_large == ["SELECT", "SELECT", "INSERT", "INSERT", "UPDATE"]
    # whatever the instance holds, the tick reads only what concerns its uploads: the runs of the one it knew
    # (and the harness applies the partition request, as the daemon does)
    assert calls_small == [("add_dynamic_partitions", None)]
    assert calls_large == [("get_run_records", 1), ("add_dynamic_partitions", None)]


@pytest.fixture
def prefix(request):
    return f"scale-{os.getpid()}-{request.node.name[-12:]}/"


def test_on_s3_a_new_upload_costs_the_same_requests_beside_1000_and_20000_stored_videos(
    s3_server, prefix, tmp_path, landscape_clip
):
    """Stored videos are one folder each (a ``source.json``), which is what a listing of folders pays for:
    the tick lists the inbox and reads the new upload, and never looks at storage."""
    client = s3_server.client()
    storage_prefix = f"out-{prefix}"

    def store(i: int) -> None:
        record = {"file": "source.mp4", "name": f"v{i}.mp4", "sha256": f"{i:064x}"}
        client.put_object(Bucket=BUCKET, Key=f"{storage_prefix}v-{i:012x}/source.json", Body=json.dumps(record))

    inbox = s3_inbox(s3_server, prefix, tmp_path, settle_seconds=0)
    counts = {}
    with dg.instance_for_test() as instance, ThreadPoolExecutor(16) as pool:
        harness = SensorHarness(instance, tmp_path / "unused-inbox", settle_seconds=0)
        harness.resources["inbox"] = inbox
        stored = 0
        for size in (1000, 20_000):
            list(pool.map(store, range(stored, size)))
            stored = size
            put(s3_server, prefix, f"new {size}.mp4", landscape_clip.read_bytes() + str(size).encode())
            with counted_s3_requests() as requests:
                [request] = harness.tick().run_requests
            counts[size] = requests
    folders = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=storage_prefix, Delimiter="/")
    # what the sensor listed before, at a request per 1,000 folders
    assert sum(len(page.get("CommonPrefixes", [])) for page in folders) == 20_000
    assert counts[1000] == counts[20_000]
    assert "HeadObject" not in counts[20_000] and counts[20_000].count("ListObjectsV2") == 1, counts[20_000]
    assert request.partition_key.startswith("new-20000-")
