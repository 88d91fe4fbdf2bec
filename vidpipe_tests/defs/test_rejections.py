"""Refused uploads leave the asset graph but stay listed, and can be re-tried or forgotten (issue 9).

One bad upload among many must not show every asset as failed: its partition is withdrawn
once its run has failed, while its original and ``rejection.json`` stay in storage, where
``vidpipe rejections`` lists them from.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from vidpipe.defs.partitions import REJECTED_TAG
from vidpipe.defs.rejections import forget_rejected, forget_rejected_uploads, restore_partitions
from vidpipe.media.errors import UnknownVideoError
from vidpipe.media.files import sha256_file
from vidpipe.media.keys import partition_key
from vidpipe_tests import corpus
from vidpipe_tests.harness import REPO_ROOT, Pipeline, SensorHarness, catalog_beside, evaluate_failed_video_runs

VIDPIPE = str(Path(sys.executable).parent / "vidpipe")


def test_a_refused_upload_leaves_the_graph_stays_refused_and_can_be_restored_or_forgotten(tmp_path, tiny_clip):
    inbox, storage_root = tmp_path / "inbox", tmp_path / "storage"
    inbox.mkdir()
    bad = corpus.text_as_mov(inbox)
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(instance, storage_root)
        storage = pipeline.resources["storage"]
        key = pipeline.add(bad)
        good = pipeline.add(tiny_clip)
        assert pipeline.materialize(good, upload=tiny_clip).success
        refused = pipeline.materialize(key, upload=bad, raise_on_error=False)
        evaluate_failed_video_runs(pipeline, refused)

        assert instance.get_dynamic_partitions("videos") == [good]
        assert instance.get_run_by_id(refused.run_id).tags[REJECTED_TAG] == "true"
        [record] = storage.rejections()
        assert (record["video"], record["reason"]) == (key, "not a video: the file is text")

        # The same bytes dropped again under another name: still refused, no partition comes back.
        shutil.copyfile(bad, inbox / "notes again.mov")
        sensor = SensorHarness(instance, inbox, settle_seconds=0)
        result = sensor.tick()
        assert result.run_requests == [] and result.dynamic_partitions_requests == []

        restore_partitions(instance, storage, [key])
        assert sorted(instance.get_dynamic_partitions("videos")) == sorted([good, key])
        with pytest.raises(UnknownVideoError, match=f"not a refused upload: {good}"):
            forget_rejected(instance, storage, pipeline.resources["catalog"].catalog(), [good])
        # The UI's way: the forget_rejected_uploads job, launched with the keys as its config.
        forgotten = forget_rejected_uploads.execute_in_process(
            run_config={"ops": {"forget_uploads": {"config": {"videos": [key]}}}},
            resources={"storage": storage, "catalog": pipeline.resources["catalog"]},
            instance=instance,
        )
        assert forgotten.success
        assert instance.get_dynamic_partitions("videos") == [good]
        assert not (storage_root / key).exists() and storage.rejections() == []
        assert (storage_root / good / "manifest.json").is_file()

        # Forgotten, a re-upload is new again.
        shutil.copyfile(bad, inbox / "notes, third time.mov")
        requested = [request.partition_key for request in sensor.tick().run_requests]
        assert requested == [partition_key("notes, third time.mov", sha256_file(bad))]


def vidpipe(*args, env):
    return subprocess.run([VIDPIPE, *args], capture_output=True, text=True, timeout=180, env=env, check=False)


def test_the_commands_list_rerun_and_forget_refused_uploads(tmp_path, monkeypatch):
    home, storage = tmp_path / "dagster_home", tmp_path / "storage"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(REPO_ROOT / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    env = {**os.environ, "VIDPIPE_STORAGE": str(storage), "VIDPIPE_CATALOG": catalog_beside(storage).url}
    assert vidpipe("process", str(corpus.zero_bytes(tmp_path)), "--out", str(storage), env=env).returncode == 1
    assert vidpipe("process", str(corpus.text_as_mov(tmp_path)), "--out", str(storage), env=env).returncode == 1

    listed = vidpipe("rejections", env=env)
    lines = sorted(listed.stdout.splitlines())
    assert [line.split("  ")[0] for line in lines] == sorted(p.name for p in storage.iterdir())
    assert [line.split("  ")[2] for line in lines] == sorted(
        ["empty.mp4: not a video: the file is empty", "notes.mov: not a video: the file is text"]
    )
    records = json.loads(vidpipe("rejections", "--json", env=env).stdout)
    empty = next(r["video"] for r in records if r["original_name"] == "empty.mp4")

    # Re-trying a refused upload whose partition was withdrawn adds it back and queues a backfill.
    assert vidpipe("rerun", empty, env=env).returncode == 0
    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions("videos") == [empty]
        [run] = instance.get_runs()
        assert run.tags["dagster/partition"] == empty

    refused = vidpipe("forget", empty, "holiday-0123456789ab", env=env)
    assert (refused.returncode, refused.stderr) == (
        1,
        "error: not a refused upload: holiday-0123456789ab (see `vidpipe rejections`)\n",
    )
    forgot = vidpipe("forget", empty, env=env)
    assert (forgot.returncode, forgot.stdout) == (0, f"forgot {empty}\n")
    assert [r["original_name"] for r in json.loads(vidpipe("rejections", "--json", env=env).stdout)] == ["notes.mov"]
    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions("videos") == []
