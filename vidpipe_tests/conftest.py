from pathlib import Path

import pytest

from vidpipe_tests.media import make_clip


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
