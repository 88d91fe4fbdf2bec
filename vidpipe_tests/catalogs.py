"""Helpers for catalog tests: synthetic rows in bulk, and counts of the SQL statements and the S3 requests a
block sends."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import botocore.client
import sqlalchemy as sa

from vidpipe.catalog import Video

EPOCH = datetime(2026, 1, 1)


def synthetic_videos(count: int, start: int = 0) -> Iterator[Video]:
    """``count`` rows, one a minute: every fourth refused, every fourth (another) named "Beach trip N"."""
    for i in range(start, start + count):
        at = EPOCH + timedelta(minutes=i)
        content = f"{i:012x}"
        refused = i % 4 == 0
        yield Video(
            key=f"clip-{i}-{content}",
            name=f"Beach trip {i}.mp4" if i % 4 == 1 else f"Clip {i}.mp4",
            state="rejected" if refused else "ready",
            created_at=at,
            updated_at=at,
            sha256=content + "0" * 52,
            duration=None if refused else 10.0,
            size=1000 + i,
            thumbnail=None if refused else "thumbnails/first_frame_320w.jpg",
            manifest=None if refused else "manifest.json",
            reason="not a video" if refused else None,
        )


@contextmanager
def counted_queries(engine: sa.Engine) -> Iterator[list[str]]:
    """The statements ``engine`` sends during the block (transaction control left out), as a list that
    fills as they are sent."""
    sent: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        if statement.split(None, 1)[0].upper() not in ("BEGIN", "COMMIT", "ROLLBACK"):
            sent.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


@contextmanager
def counted_s3_requests() -> Iterator[list[str]]:
    """The S3 operations every boto3 client of this process calls during the block, in order."""
    calls: list[str] = []
    original = botocore.client.BaseClient._make_api_call

    def counted(client, operation, params):
        calls.append(operation)
        return original(client, operation, params)

    botocore.client.BaseClient._make_api_call = counted
    try:
        yield calls
    finally:
        botocore.client.BaseClient._make_api_call = original


@contextmanager
def served(app) -> Iterator[str]:
    """``app`` served by uvicorn on a loopback port, in a thread of this process: its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
