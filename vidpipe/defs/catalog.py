"""The catalog as Dagster sees it: a resource the sensor, the steps and the commands share, and its rows made
anew from what storage records (``vidpipe catalog rebuild``).

Each step changes the catalog right after storage, in an order that keeps one promise: a row never points at
a file that is not published. A row says ``playable`` or ``ready`` only once the manifest is published; a refusal
(``refused``) empties the row's pointers before the outputs are withdrawn.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import dagster as dg

from vidpipe.catalog import Catalog, Video, migrate, open_catalog, parse_time, utc_now
from vidpipe.catalog.database import where
from vidpipe.catalog.schema import State
from vidpipe.defs.storage import StoredOriginal, VideoStorage
from vidpipe.media.errors import VidpipeError
from vidpipe.media.manifest import MANIFEST_FILE, PLAYABLE, manifest_state, smallest_jpeg_thumbnail


class CatalogResource(dg.ConfigurableResource):
    """The catalog at ``url`` (``settings.catalog_url``)."""

    url: str
    retire_after_days: float | None = None
    """``VIDPIPE_RETIRE_AFTER_DAYS``: how long a video stays a live partition once ready (``retired_videos``)."""

    def catalog(self) -> Catalog:
        return open_catalog(self.url)


def published(catalog: Catalog, storage: VideoStorage, key: str, manifest: dict) -> None:
    """Publish ``key``'s manifest, then its row: ``playable`` or ``ready`` as the manifest's state says, pointing
    at it. If the row cannot be written, the manifest is withdrawn again: a published manifest always has a row
    that says so."""
    storage.publish_file(key, MANIFEST_FILE, json.dumps(manifest, indent=2).encode())
    try:
        catalog.record_published(
            key,
            state=catalog_state(manifest),
            name=manifest["source"]["name"],
            duration=manifest["source"].get("duration"),
            thumbnail=smallest_jpeg_thumbnail(manifest),
            manifest=MANIFEST_FILE,
        )
    except Exception:
        storage.withdraw_manifest(key)
        raise


def catalog_state(manifest: dict) -> State:
    """The row's state for a published ``manifest``: ``playable`` while only its first rendition is out."""
    return "playable" if manifest_state(manifest) == PLAYABLE else "ready"


def refused(catalog: Catalog, storage: VideoStorage, key: str, error: VidpipeError) -> None:
    """Refuse ``key``'s upload: the rejection recorded beside its original, the row ``rejected`` (pointing at
    nothing), then every output withdrawn."""
    storage.record_rejection(key, error)
    stored = storage.stored_original(key)
    if stored is not None:  # refused before its row was written in full (by the gate)
        record_original(catalog, key, stored)
    catalog.record_rejection(key, stored.name if stored else key, error.message)
    storage.withdraw_outputs(key)


def record_original(catalog: Catalog, key: str, stored: StoredOriginal) -> None:
    """``key``'s original is stored as ``stored``: its row says so."""
    stored_at = parse_time(stored.stored_at) if stored.stored_at else utc_now()
    catalog.record_original(key, stored.name, stored.sha256, stored.size, stored_at)


def stored_videos(storage: VideoStorage) -> Iterator[Video]:
    """A catalog row for every video storage holds, from its records alone (listings of every video and
    every rejection, then a few reads per video)."""
    now = utc_now()
    rejections = {record["video"]: record for record in storage.rejections()}
    for key in sorted({*storage.videos(), *rejections}):
        stored = storage.stored_original(key)
        rejection = rejections.get(key)
        if stored is None:  # refused before its original could be kept
            if rejection is not None:
                at = parse_time(rejection["rejected_at"])
                name = rejection.get("original_name") or key
                yield Video(key, name, "rejected", at, now, reason=rejection["reason"])
            continue
        common = {
            "key": key,
            "created_at": parse_time(stored.stored_at) if stored.stored_at else now,
            "updated_at": now,
            "sha256": stored.sha256,
            "size": stored.size if stored.size is not None else storage.stored_size(key, stored.file),
        }
        manifest = None if rejection else storage.manifest(key)
        if rejection is not None:
            yield Video(name=stored.name, state="rejected", reason=rejection["reason"], **common)
        elif manifest is not None:
            yield Video(
                name=manifest["source"]["name"],
                state=catalog_state(manifest),
                duration=manifest["source"].get("duration"),
                thumbnail=smallest_jpeg_thumbnail(manifest),
                manifest=MANIFEST_FILE,
                **common,
            )
        else:
            yield Video(name=stored.name, state="processing", **common)


def prepare(url: str, storage: VideoStorage) -> str:
    """Bring the catalog at ``url`` up to date (``vidpipe catalog migrate``); a catalog made just now is filled
    from storage, so that a deployment that ran before the catalog existed keeps its videos. Says what it did."""
    before, after = migrate(url)
    if before is None:
        count = open_catalog(url).replace_all(stored_videos(storage))
        return f"made the catalog {where(url)} (schema version {after}) with the {count} video(s) storage holds"
    if before != after:
        return f"migrated the catalog {where(url)} from schema version {before} to {after}"
    return f"the catalog {where(url)} is up to date (schema version {after})"


def rebuild(url: str, storage: VideoStorage) -> str:
    """Make every row of the catalog at ``url`` anew from storage (``vidpipe catalog rebuild``)."""
    migrate(url)
    count = open_catalog(url).replace_all(stored_videos(storage))
    return f"rebuilt the catalog {where(url)} from storage: {count} video(s)"
