"""The steps keep the catalog in step with storage: a row for every video, pointing only at published files,
the same rows as a rebuild from storage makes; a missing catalog stops a run with one plain line."""

import dataclasses

import dagster as dg
import pytest

from vidpipe.catalog import open_catalog
from vidpipe.defs.catalog import CatalogResource, rebuild
from vidpipe_tests import corpus
from vidpipe_tests.harness import Pipeline, step_failures


def rows(catalog) -> list[dict]:
    """Every row, less the time it was last written (a rebuild writes every row anew)."""
    return [{**dataclasses.asdict(video), "updated_at": None} for video in catalog.all_videos()]


def test_processed_and_refused_videos_have_rows_a_rebuild_makes_again(tmp_path, tiny_clip):
    bad = corpus.text_as_mov(tmp_path)
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(instance, tmp_path / "storage")
        good, refused = pipeline.add(tiny_clip), pipeline.add(bad)
        assert pipeline.materialize(good, upload=tiny_clip).success
        assert not pipeline.materialize(refused, upload=bad, raise_on_error=False).success
    fixed: CatalogResource = pipeline.resources["catalog"]
    catalog, storage = fixed.catalog(), pipeline.resources["storage"]
    ready, rejected = catalog.video(good), catalog.video(refused)
    assert (ready.state, ready.name, ready.size) == ("ready", tiny_clip.name, tiny_clip.stat().st_size)
    assert ready.duration == pytest.approx(1.0, abs=0.1) and ready.sha256.startswith(good[-12:])
    # the row points at published files only
    assert ready.manifest == "manifest.json" and ready.thumbnail.startswith("thumbnails/")
    for file in (ready.manifest, ready.thumbnail):
        assert (tmp_path / "storage" / good / file).is_file()
    assert (rejected.state, rejected.reason) == ("rejected", "not a video: the file is text")
    assert rejected.manifest is rejected.thumbnail is None
    assert not (tmp_path / "storage" / refused / "thumbnails").exists()
    assert catalog.counts() == {"processing": 0, "playable": 0, "ready": 1, "rejected": 1, "retired": 0}
    kept = rows(catalog)
    # drop the database, rebuild it from storage: the same rows
    (tmp_path / "storage.catalog.sqlite").unlink()
    assert rebuild(fixed.url, storage).endswith("2 video(s)")
    again = open_catalog(fixed.url)
    assert rows(again) == kept
    assert again.counts() == {"processing": 0, "playable": 0, "ready": 1, "rejected": 1, "retired": 0}
    assert again.page(search="notes").videos[0].key == refused


def test_a_missing_catalog_stops_the_run_with_one_line_naming_the_fix(tmp_path, tiny_clip):
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(instance, tmp_path / "storage")
        pipeline.resources["catalog"] = CatalogResource(url=f"sqlite:///{tmp_path / 'gone.sqlite'}")
        key = pipeline.add(tiny_clip)
        result = pipeline.materialize(key, upload=tiny_clip, raise_on_error=False)
    assert step_failures(result) == {
        "source_video": f"the catalog {tmp_path / 'gone.sqlite'} does not exist: run `vidpipe catalog migrate` to make it"
    }
    assert not (tmp_path / "storage" / key / "manifest.json").exists()
    assert not (tmp_path / "storage" / key / "rejection.json").exists()  # not the upload's fault
