"""The catalog's tables, as the newest migration leaves them (``migrations/versions``).

``videos`` holds one row per video; ``video_words`` the words of each video's name, with its creation
time, so that a search by a word reads one index range, newest first; ``video_counts`` how many rows
are in each state, kept in the same transaction as every change of state, so that a page's total is
one row read, not a count over a million.
"""

from __future__ import annotations

from typing import Literal, get_args

import sqlalchemy as sa

State = Literal["processing", "playable", "ready", "rejected", "retired"]
"""What people may do with a video: wait for it, watch its first rendition, watch all of it, read why it
was refused, or (out of Dagster's live partition set) watch it and bring it back with ``vidpipe rerun``."""
STATES: tuple[State, ...] = get_args(State)

metadata = sa.MetaData()

videos = sa.Table(
    "videos",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("content_hash", sa.String(12), nullable=False),
    sa.Column("sha256", sa.String(64)),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("duration", sa.Float),
    sa.Column("size", sa.BigInteger),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("thumbnail", sa.Text),
    sa.Column("manifest", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Index("ix_videos_content_hash", "content_hash"),
    sa.Index("ix_videos_newest", "created_at", "key"),
    sa.Index("ix_videos_state_newest", "state", "created_at", "key"),
)

video_words = sa.Table(
    "video_words",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("word", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Index("ix_video_words_newest", "word", "created_at", "key"),
)

video_counts = sa.Table(
    "video_counts",
    metadata,
    sa.Column("state", sa.String(16), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
)
