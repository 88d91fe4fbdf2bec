from fractions import Fraction

import pytest

from vidpipe.media.errors import InvalidMediaError
from vidpipe.media.probe import probe
from vidpipe_tests import corpus


def test_probe_reports_the_facts_of_a_clip(landscape_clip):
    info = probe(landscape_clip)
    assert (info.width, info.height, info.display_width, info.display_height) == (640, 360, 640, 360)
    assert info.rotation == 0
    assert info.frame_rate == Fraction(30)
    assert info.duration == pytest.approx(5.0, abs=0.05)
    assert info.video_codec == "h264" and info.pixel_format == "yuv420p"
    assert info.has_audio and info.audio_codec == "aac" and info.audio_channels == 1
    assert info.size_bytes == landscape_clip.stat().st_size
    assert "mp4" in info.container


def test_rotation_metadata_gives_upright_display_size(phone_clip):
    info = probe(phone_clip)
    assert (info.width, info.height) == (640, 360)
    assert info.rotation in (90, 270)
    assert (info.display_width, info.display_height) == (360, 640)


def test_video_without_audio(silent_clip):
    info = probe(silent_clip)
    assert not info.has_audio and info.audio_codec is None and info.audio_stream is None


def test_a_text_file_is_not_a_video(tmp_path):
    fake = tmp_path / "notes.mov"
    fake.write_text("this is not a video\n")
    with pytest.raises(InvalidMediaError, match="not a readable video") as err:
        probe(fake)
    assert err.value.path == str(fake)
    assert err.value.stderr_tail


def test_an_audio_only_file_has_audio_and_no_picture(tmp_path):
    info = probe(corpus.audio_only(tmp_path))
    assert not info.has_video and info.video_stream is None and (info.width, info.height) == (0, 0)
    assert info.has_audio and info.audio_codec == "aac"
    assert info.duration == pytest.approx(2.0, abs=0.05)
