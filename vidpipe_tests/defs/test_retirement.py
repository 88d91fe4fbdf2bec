"""Retired videos: out of Dagster's live partitions once ready for long enough, still in the catalog and
storage, and back (re-encoded) when re-run."""

from datetime import timedelta

import dagster as dg

from vidpipe.catalog import utc_now
from vidpipe.definitions import build_definitions
from vidpipe.defs.catalog import CatalogResource
from vidpipe.defs.partitions import VIDEOS
from vidpipe.defs.rejections import restore_partitions
from vidpipe_tests.catalogs import synthetic_videos
from vidpipe_tests.harness import Pipeline, catalog_beside


def retire(instance, catalog: CatalogResource) -> str:
    sensor = build_definitions().resolve_sensor_def("retired_videos")
    with dg.build_sensor_context(instance=instance, resources={"catalog": catalog}) as context:
        return sensor(context).skip_message


def test_videos_ready_for_longer_than_the_window_leave_the_partitions_a_batch_at_a_time(tmp_path, monkeypatch):
    fixed = catalog_beside(tmp_path / "storage")
    rows = list(synthetic_videos(40))  # made in January 2026: 30 ready, 10 refused
    with dg.instance_for_test() as instance:
        fixed.catalog().replace_all(rows)
        instance.add_dynamic_partitions(VIDEOS, [row.key for row in rows])
        assert retire(instance, fixed).startswith("VIDPIPE_RETIRE_AFTER_DAYS is not set")
        days = (utc_now() - rows[20].created_at).total_seconds() / 86400  # the first 20 are older than that
        catalog = CatalogResource(url=fixed.url, retire_after_days=days)
        monkeypatch.setattr("vidpipe.defs.sensors.RETIRE_BATCH", 10)
        assert retire(instance, catalog) == "retired 10 video(s)"
        assert retire(instance, catalog) == "retired 5 video(s)"  # of the first 20, 5 are refused
        assert retire(instance, catalog) == "no video to retire"
        live = set(instance.get_dynamic_partitions(VIDEOS))
    old_ready = {row.key for row in rows[:20] if row.state == "ready"}
    assert live == {row.key for row in rows} - old_ready
    assert {v.key for v in fixed.catalog().all_videos() if v.state == "retired"} == old_ready
    assert fixed.catalog().counts() == {"processing": 0, "playable": 0, "ready": 15, "rejected": 10, "retired": 15}


def test_a_retired_video_plays_as_before_and_a_rerun_brings_it_back_re_encoded(tmp_path, tiny_clip):
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(instance, tmp_path / "storage")
        key = pipeline.add(tiny_clip)
        assert pipeline.materialize(key, upload=tiny_clip).success
        first = instance.get_latest_materialization_event(dg.AssetKey(["renditions", "h264_240p"])).run_id
        fixed = pipeline.resources["catalog"]
        catalog = CatalogResource(url=fixed.url, retire_after_days=0)
        assert retire(instance, catalog) == "retired 1 video(s)"
        assert not instance.has_dynamic_partition(VIDEOS, key)
        video = fixed.catalog().video(key)
        assert video.state == "retired" and video.manifest == "manifest.json"
        assert (tmp_path / "storage" / key / "manifest.json").is_file()
        # vidpipe rerun KEY: the partition back, then a backfill run (no upload: the original is kept)
        restore_partitions(instance, pipeline.resources["storage"], [key])
        assert instance.has_dynamic_partition(VIDEOS, key)
        assert pipeline.materialize(key).success
        again = instance.get_latest_materialization_event(dg.AssetKey(["renditions", "h264_240p"])).run_id
    assert again != first
    assert fixed.catalog().video(key).state == "ready"
    assert utc_now() - fixed.catalog().video(key).updated_at < timedelta(minutes=5)
