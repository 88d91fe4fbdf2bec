"""The catalog: which videos exist, in what state, found by key, content or name, a page at a time.

Every question costs a bounded number of queries whatever the catalog holds: a video by key or by content
hash is an index lookup, a page reads one index range from a cursor (never an offset) and its total one
row per state (``video_counts``); a search reads the index range of one of its words. Every change is one
transaction that also keeps ``video_counts`` and ``video_words`` right.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from vidpipe.catalog.schema import STATES, State, video_counts, video_words, videos
from vidpipe.media.keys import content_hash_of

PAGE_SIZE = 24
MAX_PAGE_SIZE = 100
COUNT_CAP = 1000
"""A search counts its matches up to this many; past it, the total reads "1000+"."""
MAX_NAME_WORDS = 16
MAX_WORD_CHARS = 64


def utc_now() -> datetime:
    """Now, as the catalog keeps times: UTC, without a zone (the same in SQLite and PostgreSQL)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def parse_time(text: str) -> datetime:
    """A stored record's ISO time, as the catalog keeps times."""
    moment = datetime.fromisoformat(text)
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


@dataclass(frozen=True)
class Video:
    """One catalog row. ``thumbnail`` and ``manifest`` are file names under the video's key in storage,
    set only while those files are published."""

    key: str
    name: str
    state: State
    created_at: datetime
    updated_at: datetime
    content_hash: str = ""
    sha256: str | None = None
    duration: float | None = None
    size: int | None = None
    thumbnail: str | None = None
    manifest: str | None = None
    reason: str | None = None
    """Why the upload was refused."""

    def __post_init__(self) -> None:
        if not self.content_hash:
            object.__setattr__(self, "content_hash", content_hash_of(self.key))

    def row(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in fields(self)}


@dataclass(frozen=True)
class Page:
    videos: list[Video]
    total: int
    """How many videos the filter matches (all pages), or at least that many where ``total_capped``."""
    total_capped: bool
    next_cursor: str | None
    """Where the next page starts; None on the last page."""


def name_words(text: str) -> list[str]:
    """The words a name is found by: lower-case letters and digits, accents dropped, in order, once each."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    words = dict.fromkeys(word[:MAX_WORD_CHARS] for word in re.findall(r"[a-z0-9]+", ascii_text))
    return list(words)[:MAX_NAME_WORDS]


class Catalog:
    """The catalog in the database at ``engine``'s URL, whose schema ``migrate`` has brought up to date."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    # Reads.

    def video(self, key: str) -> Video | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(videos).where(videos.c.key == key)).first()
        return None if row is None else _video(row)

    def by_content(self, hashes: Collection[str]) -> dict[str, Video]:
        """Content hash (``keys.short_hash``) → its video, for those of ``hashes`` the catalog knows: one query."""
        if not hashes:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(videos).where(videos.c.content_hash.in_(sorted(set(hashes))))).all()
        return {row.content_hash: _video(row) for row in rows}

    def page(
        self, *, state: str | None = None, search: str = "", after: str | None = None, limit: int = PAGE_SIZE
    ) -> Page:
        """Newest first: the videos (in ``state``, whose names hold every word of ``search``) after the cursor
        ``after``: two queries, the page and its total (and for a search of several words, one per word
        to find the rarest)."""
        if state is not None and state not in STATES:
            raise ValueError(f"no such state {state!r}: one of {', '.join(STATES)}")
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        words = name_words(search)
        if words:
            # The rarest word's index range, newest first, drives the page; the others are looked up per row.
            driver = self._rarest(words)
            order = (video_words.c.created_at, video_words.c.key)
            query = (
                sa.select(videos)
                .join(video_words, video_words.c.key == videos.c.key)
                .where(video_words.c.word == driver)
            )
            for word in words:
                if word != driver:
                    other = video_words.alias()
                    query = query.where(sa.exists().where(other.c.key == videos.c.key, other.c.word == word))
        else:
            order = (videos.c.created_at, videos.c.key)
            query = sa.select(videos)
        if state is not None:
            query = query.where(videos.c.state == state)
        matching = query
        if after is not None:
            query = query.where(sa.tuple_(*order) < sa.tuple_(*_cursor_values(after)))
        query = query.order_by(*(column.desc() for column in order)).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            if words:
                capped = sa.select(sa.func.count()).select_from(matching.limit(COUNT_CAP + 1).subquery())
                total = conn.execute(capped).scalar_one()
            else:
                counted = sa.select(sa.func.coalesce(sa.func.sum(video_counts.c.count), 0))
                if state is not None:
                    counted = counted.where(video_counts.c.state == state)
                total = conn.execute(counted).scalar_one()
        found = [_video(row) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(
            videos=found,
            total=min(int(total), COUNT_CAP) if words else int(total),
            total_capped=bool(words) and total > COUNT_CAP,
            next_cursor=_cursor(found[-1]) if more else None,
        )

    def _rarest(self, words: list[str]) -> str:
        """The word of ``words`` fewest names hold (each counted up to ``COUNT_CAP``: one query per word)."""
        if len(words) == 1:
            return words[0]
        with self.engine.connect() as conn:
            held = {
                word: conn.execute(
                    sa.select(sa.func.count()).select_from(
                        sa.select(video_words.c.key).where(video_words.c.word == word).limit(COUNT_CAP + 1).subquery()
                    )
                ).scalar_one()
                for word in words
            }
        return min(words, key=held.__getitem__)

    def ready_before(self, moment: datetime, limit: int) -> list[str]:
        """The keys of up to ``limit`` ``ready`` videos made before ``moment``, oldest first (one index range)."""
        query = (
            sa.select(videos.c.key)
            .where(videos.c.state == "ready", videos.c.created_at < moment)
            .order_by(videos.c.created_at, videos.c.key)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def counts(self) -> dict[str, int]:
        """State → how many videos are in it."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(video_counts.c.state, video_counts.c.count)).all()
        return {str(state): int(count) for state, count in rows}

    def all_videos(self) -> Iterator[Video]:
        """Every row, in key order (for a rebuild's comparison and operators' exports)."""
        with self.engine.connect() as conn:
            for row in conn.execute(sa.select(videos).order_by(videos.c.key)):
                yield _video(row)

    # Changes: each one transaction, with the counts and words kept right.

    def register(self, key: str, name: str, sha256: str, size: int | None) -> bool:
        """A new upload the sensor has given a partition: a ``processing`` row, unless ``key`` has one.
        Returns whether it made one."""
        with self._writing() as conn:
            if _locked(conn, key) is not None:
                return False
            now = utc_now()
            _insert(conn, Video(key, name, "processing", now, now, sha256=sha256, size=size))
            return True

    def record_original(self, key: str, name: str, sha256: str, size: int | None, stored_at: datetime) -> None:
        """``key``'s original is stored: its row (made if missing) says so; a refused upload taken again
        (under new limits) is ``processing`` again, a published one stays as it is."""
        with self._writing() as conn:
            old = _locked(conn, key)
            if old is None:
                video = Video(key, name, "processing", stored_at, utc_now(), sha256=sha256, size=size)
                _insert(conn, video)
            else:
                state = "processing" if old.state == "rejected" else old.state
                _update(conn, old, state=state, name=name, sha256=sha256, size=size, created_at=stored_at, reason=None)

    def record_published(
        self, key: str, *, state: State, name: str, duration: float | None, thumbnail: str | None, manifest: str
    ) -> None:
        """``key``'s manifest is published: ``playable`` (its first rendition) or ``ready`` (every output),
        pointing at it and at its thumbnail."""
        self._change(key, name, state=state, duration=duration, thumbnail=thumbnail, manifest=manifest, reason=None)

    def record_rejection(self, key: str, name: str, reason: str) -> None:
        """``key``'s upload is refused (its outputs are being withdrawn): ``rejected``, pointing at nothing."""
        self._change(key, name, state="rejected", thumbnail=None, manifest=None, reason=reason)

    def retire(self, keys: Collection[str]) -> int:
        """Those of ``keys`` still ``ready`` are ``retired`` (out of Dagster's live partitions, still
        watchable); returns how many, in one transaction."""
        if not keys:
            return 0
        with self._writing() as conn:
            changed = conn.execute(
                sa.update(videos)
                .where(videos.c.key.in_(sorted(keys)), videos.c.state == "ready")
                .values(state="retired", updated_at=utc_now())
            ).rowcount
            _count(conn, "ready", -changed)
            _count(conn, "retired", +changed)
        return int(changed)

    def forget(self, key: str) -> None:
        """``key`` is gone from storage: its row too."""
        with self._writing() as conn:
            old = _locked(conn, key)
            if old is not None:
                _delete(conn, old)

    def replace_all(self, rows: Iterable[Video], batch: int = 5000) -> int:
        """Every row replaced by ``rows`` (a rebuild), in one transaction; returns how many."""
        counts = dict.fromkeys(STATES, 0)
        with self._writing() as conn:
            conn.execute(sa.delete(video_words))
            conn.execute(sa.delete(videos))
            chunk: list[Video] = []
            for row in rows:
                counts[row.state] += 1
                chunk.append(row)
                if len(chunk) >= batch:
                    _insert_many(conn, chunk)
                    chunk = []
            _insert_many(conn, chunk)
            for state, count in counts.items():
                conn.execute(sa.update(video_counts).where(video_counts.c.state == state).values(count=count))
        return sum(counts.values())

    def _change(self, key: str, name: str, **changes: Any) -> None:
        with self._writing() as conn:
            old = _locked(conn, key)
            if old is None:
                now = utc_now()
                _insert(conn, Video(key, name=name, created_at=now, updated_at=now, **changes))
            else:
                _update(conn, old, **changes)

    @contextmanager
    def _writing(self) -> Iterator[sa.Connection]:
        """One write transaction (on SQLite taking the write lock at its start: two steps changing rows at
        once wait for each other instead of failing)."""
        with self.engine.connect().execution_options(writing=True) as conn, conn.begin():
            yield conn


def _locked(conn: sa.Connection, key: str) -> Video | None:
    row = conn.execute(sa.select(videos).where(videos.c.key == key).with_for_update()).first()
    return None if row is None else _video(row)


def _insert(conn: sa.Connection, video: Video) -> None:
    _insert_many(conn, [video])
    _count(conn, video.state, +1)


def _insert_many(conn: sa.Connection, rows: list[Video]) -> None:
    if not rows:
        return
    conn.execute(sa.insert(videos), [row.row() for row in rows])
    words = [{"word": w, "created_at": row.created_at, "key": row.key} for row in rows for w in name_words(row.name)]
    if words:
        conn.execute(sa.insert(video_words), words)


def _update(conn: sa.Connection, old: Video, **changes: Any) -> None:
    new = replace(old, updated_at=utc_now(), **changes)
    conn.execute(sa.update(videos).where(videos.c.key == old.key).values(new.row()))
    if new.state != old.state:
        _count(conn, old.state, -1)
        _count(conn, new.state, +1)
    if (new.name, new.created_at) != (old.name, old.created_at):
        conn.execute(sa.delete(video_words).where(video_words.c.key == old.key))
        words = [{"word": w, "created_at": new.created_at, "key": new.key} for w in name_words(new.name)]
        if words:
            conn.execute(sa.insert(video_words), words)


def _delete(conn: sa.Connection, old: Video) -> None:
    conn.execute(sa.delete(video_words).where(video_words.c.key == old.key))
    conn.execute(sa.delete(videos).where(videos.c.key == old.key))
    _count(conn, old.state, -1)


def _count(conn: sa.Connection, state: str, change: int) -> None:
    conn.execute(
        sa.update(video_counts).where(video_counts.c.state == state).values(count=video_counts.c.count + change)
    )


def _video(row: sa.Row) -> Video:
    return Video(**row._mapping)


def _cursor(video: Video) -> str:
    text = json.dumps([video.created_at.isoformat(), video.key])
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _cursor_values(cursor: str) -> tuple[datetime, str]:
    try:
        created, key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(created), str(key)
    except (ValueError, TypeError, binascii.Error):
        raise ValueError(f"{cursor!r} is not a page cursor of this catalog") from None
