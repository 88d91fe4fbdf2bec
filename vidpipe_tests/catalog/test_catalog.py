"""The catalog on a real SQLite database: pages, searches, counts and content look-ups, and what each costs in
queries at a small and at a larger catalog."""

import sqlite3
from datetime import datetime, timedelta

import pytest

from vidpipe.catalog import CatalogError, Video, migrate, open_catalog
from vidpipe_tests.catalogs import counted_queries, synthetic_videos


@pytest.fixture
def catalog_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    migrate(url)
    return url


@pytest.fixture
def catalog(catalog_url):
    return open_catalog(catalog_url)


def test_pages_run_newest_first_from_a_cursor_with_the_total(catalog):
    catalog.replace_all(synthetic_videos(60))
    seen, cursor = [], None
    while True:
        page = catalog.page(after=cursor, limit=25)
        assert page.total == 60 and not page.total_capped
        seen += page.videos
        cursor = page.next_cursor
        if cursor is None:
            break
    assert [v.key for v in seen] == [v.key for v in sorted(synthetic_videos(60), key=lambda v: v.created_at)][::-1]
    assert len({v.key for v in seen}) == 60


def test_a_state_filter_and_a_search_by_words_of_the_name(catalog):
    catalog.replace_all(synthetic_videos(40))
    rejected = catalog.page(state="rejected")
    assert rejected.total == 10 and {v.state for v in rejected.videos} == {"rejected"}
    beach = catalog.page(search="BEACH")
    assert beach.total == 10 and all("beach" in v.name.lower() for v in beach.videos)
    both = catalog.page(search="beach 9")
    assert [v.name for v in both.videos] == ["Beach trip 9.mp4"]
    assert catalog.page(search="Beach trip 9", state="ready").total == (1 if both.videos[0].state == "ready" else 0)
    assert catalog.page(search="nothing-like-it").videos == []
    with pytest.raises(ValueError, match="no such state"):
        catalog.page(state="lost")
    with pytest.raises(ValueError, match="not a page cursor"):
        catalog.page(after="garbage!")


def test_a_search_of_a_common_word_counts_up_to_the_cap(catalog, monkeypatch):
    monkeypatch.setattr("vidpipe.catalog.store.COUNT_CAP", 5)
    catalog.replace_all(synthetic_videos(40))
    page = catalog.page(search="beach")
    assert page.total == 5 and page.total_capped


def test_changes_keep_the_counts_and_the_words(catalog):
    key = "holiday-0123456789ab"
    assert catalog.register(key, "Holiday.mp4", "0123456789ab" + "0" * 52, 1000)
    assert not catalog.register(key, "Other name.mp4", "0123456789ab" + "0" * 52, 1000)
    assert catalog.counts()["processing"] == 1
    catalog.record_rejection(key, "Holiday.mp4", "not a video")
    assert catalog.counts()["processing"] == 0 and catalog.counts()["rejected"] == 1
    stored_at = datetime(2026, 1, 2, 3, 4, 5)
    catalog.record_original(key, "Holiday in Rome.mp4", "0123456789ab" + "0" * 52, 1000, stored_at)
    video = catalog.video(key)
    assert video.state == "processing" and video.reason is None and video.created_at == stored_at
    assert [v.key for v in catalog.page(search="rome").videos] == [key]
    assert catalog.page(search="holiday").total == 1
    published = {"name": "Holiday in Rome.mp4", "duration": 5.0, "thumbnail": "thumbnails/a.jpg"}
    catalog.record_published(key, state="playable", manifest="manifest.json", **published)
    assert catalog.counts()["playable"] == 1 and catalog.page(state="playable").videos[0].key == key
    catalog.record_published(key, state="ready", manifest="manifest.json", **published)
    assert catalog.counts()["playable"] == 0 and catalog.counts()["ready"] == 1
    catalog.record_original(key, "Holiday in Rome.mp4", "0123456789ab" + "0" * 52, 1000, stored_at)  # a backfill
    assert catalog.video(key).state == "ready" and catalog.video(key).manifest == "manifest.json"
    assert catalog.by_content(["0123456789ab", "ffffffffffff"]) == {"0123456789ab": catalog.video(key)}
    catalog.forget(key)
    assert catalog.video(key) is None and sum(catalog.counts().values()) == 0
    assert catalog.page(search="rome").total == 0


@pytest.mark.parametrize("size", [10, 3000])
def test_a_page_a_search_and_a_content_lookup_cost_the_same_queries_at_any_size(catalog, size):
    catalog.replace_all(synthetic_videos(size))
    with counted_queries(catalog.engine) as queries:
        first = catalog.page(limit=5)
        catalog.page(after=first.next_cursor, limit=5)
        catalog.page(state="ready", limit=5)
        catalog.page(search="beach", limit=5)
        catalog.page(search="beach trip", limit=5)
        catalog.by_content([f"{i:012x}" for i in range(10)])
        catalog.video(first.videos[0].key)
    # two per page (rows, total); a search of two words asks both words' counts first; one per lookup
    assert len(queries) == 2 + 2 + 2 + 2 + (2 + 2) + 1 + 1, queries


def test_a_missing_or_outdated_catalog_is_one_line_naming_the_fix(tmp_path):
    missing = f"sqlite:///{tmp_path / 'nowhere.sqlite'}"
    with pytest.raises(CatalogError, match=r"does not exist: run `vidpipe catalog migrate`"):
        open_catalog(missing)
    assert not (tmp_path / "nowhere.sqlite").exists()
    behind = tmp_path / "behind.sqlite"
    migrate(f"sqlite:///{behind}")
    with sqlite3.connect(behind) as db:
        db.execute("UPDATE alembic_version SET version_num = '0000'")
    with pytest.raises(
        CatalogError, match=r"schema version 0000, this vidpipe needs 0001: run `vidpipe catalog migrate`"
    ):
        open_catalog(f"sqlite:///{behind}")
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()
    with pytest.raises(CatalogError, match=r"has no tables: run `vidpipe catalog migrate`"):
        open_catalog(f"sqlite:///{empty}")


def test_a_write_waiting_past_the_lock_timeout_names_who_holds_it(catalog_url, monkeypatch):
    monkeypatch.setattr("vidpipe.catalog.database.BUSY_SECONDS", 0.2)
    from vidpipe.catalog.database import engine_for
    from vidpipe.catalog.store import Catalog

    catalog = Catalog(engine_for(catalog_url))
    holder = sqlite3.connect(catalog_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(CatalogError, match=r"stayed locked by another process for 0.2 s"):
            catalog.register("a-0123456789ab", "a.mp4", "0" * 64, 1)
    finally:
        holder.execute("ROLLBACK")
    assert catalog.register("a-0123456789ab", "a.mp4", "0" * 64, 1)


def test_rows_survive_a_round_trip_through_the_database(catalog):
    at = datetime(2026, 3, 4, 5, 6, 7, 891011)
    video = Video(
        "clip-0123456789ab",
        "Clip.mp4",
        "ready",
        at,
        at + timedelta(seconds=3),
        sha256="0123456789ab" + "f" * 52,
        duration=12.5,
        size=123456789012,
        thumbnail="thumbnails/t.jpg",
        manifest="manifest.json",
    )
    catalog.replace_all([video])
    assert catalog.video(video.key) == video
    assert list(catalog.all_videos()) == [video]
