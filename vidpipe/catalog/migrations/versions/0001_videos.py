"""The videos, the words of their names, and the count of videos in each state.

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATES = ("processing", "playable", "ready", "rejected", "retired")


def upgrade() -> None:
    op.create_table(
        "videos",
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
    )
    op.create_index("ix_videos_content_hash", "videos", ["content_hash"])
    op.create_index("ix_videos_newest", "videos", ["created_at", "key"])
    op.create_index("ix_videos_state_newest", "videos", ["state", "created_at", "key"])
    op.create_table(
        "video_words",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("word", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_video_words_newest", "video_words", ["word", "created_at", "key"])
    counts = op.create_table(
        "video_counts",
        sa.Column("state", sa.String(16), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(counts, [{"state": state, "count": 0} for state in STATES])


def downgrade() -> None:
    op.drop_table("video_counts")
    op.drop_table("video_words")
    op.drop_table("videos")
