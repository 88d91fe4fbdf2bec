import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance

from vidpipe.loopback import S3Server, start_s3_server
from vidpipe_tests.clips import make_clip
from vidpipe_tests.harness import (
    BIN_DIR,
    BUCKET,
    REPO_ROOT,
    SETTLE_SECONDS,
    DagsterStack,
    catalog_beside,
    free_port,
    stop,
)

LONGEST_FIRST = (
    "test_cluster.py",
    "test_service.py",
    "test_corpus_report.py",
    "test_recovery.py",
    "test_rejections.py",
    "test_sensor_scale.py",
    "test_end_to_end_names.py",
    "test_end_to_end.py",
)
"""The files that take longest (``--durations``), started first so that the two test processes finish
together instead of one of them starting a long file at the end."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file's tests keep their order


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def landscape_clip(clips) -> Path:
    """5 s 640x360 30 fps with a 48 kHz tone."""
    return make_clip(clips / "landscape.mp4")


@pytest.fixture(scope="session")
def silent_clip(clips) -> Path:
    return make_clip(clips / "silent.mp4", seconds=2, audio=False)


@pytest.fixture(scope="session")
def phone_clip(clips) -> Path:
    """What a phone records in portrait: landscape pixels plus rotation metadata."""
    return make_clip(clips / "Phone Clip.mov", seconds=2, rotate=90)


@pytest.fixture(scope="session")
def tiny_clip(clips) -> Path:
    """Smaller than the lowest rung, with odd dimensions (4:4:4, since 4:2:0 needs even ones)."""
    return make_clip(clips / "tiny.mp4", size="201x113", seconds=1, audio=False, pix_fmt="yuv444p")


@pytest.fixture(scope="session")
def long_clip(clips) -> Path:
    """10 s 640x360: its encode takes a few seconds, long enough to stop or crash vidpipe in the middle of it."""
    return make_clip(clips / "long.mp4", seconds=10)


@pytest.fixture
def dagster_stack(tmp_path, monkeypatch) -> Iterator[DagsterStack]:
    """The daemon and webserver on a fresh instance, inbox and storage under ``tmp_path``; stopped afterwards."""
    home, inbox, storage = tmp_path / "dagster_home", tmp_path / "inbox", tmp_path / "storage"
    for folder in (home, inbox, storage):
        folder.mkdir()
    (home / "dagster.yaml").symlink_to(REPO_ROOT / "dagster.yaml")
    settings = {
        "DAGSTER_HOME": str(home),
        "VIDPIPE_INBOX": str(inbox),
        "VIDPIPE_STORAGE": str(storage),
        "VIDPIPE_CATALOG": catalog_beside(storage).url,
        "VIDPIPE_SETTLE_SECONDS": str(SETTLE_SECONDS),
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    commands = {
        "daemon": [str(BIN_DIR / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        "webserver": [str(BIN_DIR / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
    }
    # Creating the instance first sets up its storage before two processes race to.
    with DagsterInstance.get() as instance:
        stack = DagsterStack(
            instance, inbox, storage, f"http://127.0.0.1:{port}", {}, {}, commands=commands, env=dict(os.environ)
        )
        try:
            stack.start_all()
            yield stack
        finally:
            stop(list(stack.processes.values()))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """A real S3 server (SeaweedFS) on loopback with the test bucket, for the whole session; tests use prefixes of their own."""
    folder = tmp_path_factory.mktemp("s3")
    server = start_s3_server(folder / "data", BUCKET, "vidpipe-test", uuid.uuid4().hex, log=folder / "weed.log")
    yield server
    server.terminate()
    server.wait_stopped(timeout=2)  # its data is thrown away: no need to wait ~20 s for a clean shutdown
