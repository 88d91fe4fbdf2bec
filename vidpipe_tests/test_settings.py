import dagster as dg
import pytest

from vidpipe import settings
from vidpipe.definitions import build_definitions


def test_limits_and_folders_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDPIPE_MAX_PIXELS", "921600")
    monkeypatch.setenv("VIDPIPE_MAX_DURATION_SECONDS", "600")
    monkeypatch.setenv("VIDPIPE_STORAGE", str(tmp_path / "out"))
    with dg.build_resources(build_definitions().resources) as resources:
        assert (resources.ffmpeg.max_pixels, resources.ffmpeg.max_duration_seconds) == (921600, 600.0)
        assert resources.ffmpeg.max_streams == 16
        assert resources.storage.root == str(tmp_path / "out")


def test_a_bad_setting_says_which_variable_is_wrong(monkeypatch):
    monkeypatch.setenv("VIDPIPE_MAX_STREAMS", "lots")
    with pytest.raises(ValueError, match="VIDPIPE_MAX_STREAMS must be a number, not 'lots'"):
        settings.limit_overrides()
    monkeypatch.setenv("VIDPIPE_SETTLE_SECONDS", "soon")
    with pytest.raises(ValueError, match="VIDPIPE_SETTLE_SECONDS must be a number of seconds, not 'soon'"):
        settings.settle_seconds()
