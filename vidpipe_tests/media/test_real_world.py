"""Files from real cameras, streaming tools and packagers whose headers describe them oddly.

A platform must take what decodes and judge it by what it holds, and refuse only what is
truncated or cannot be decoded, saying so in plain words (issue: real-world uploads).
"""

from pathlib import Path

import dagster as dg
import pytest

from vidpipe.media.errors import InvalidMediaError
from vidpipe.media.validate import StreamContent, check_complete, validate_upload
from vidpipe_tests import corpus
from vidpipe_tests.clips import video_info
from vidpipe_tests.harness import processed

# generator, seconds held, frames per second held (the header says otherwise)
HELD = [
    (corpus.millisecond_flv, 1.0, 60),  # average rate 1000 fps: was refused over the 120 fps limit
    (corpus.fragmented_mp4_of_unknown_duration, 1.0, 30),  # 39:46:05: was refused over the 4 h limit
    (corpus.few_frames_ffv1, 0.7, 3),  # track rate 30: was refused as holding 0.1 s
    (corpus.lying_duration, 1.0, 30),  # a complete file whose header claims 3 h: was refused as truncated
]  # fmt: skip

REFUSED = [
    (corpus.truncated_mkv, "the file holds 0.7 s of video but its header claims 00:00:03 (truncated or corrupt upload)"),
    (corpus.truncated_audiobook, "the file holds 0.9 s of audio but its header claims 00:00:04 (truncated or corrupt upload)"),
    (corpus.vvc_mp4, "unsupported video codec: vvc (H.266) — no decoder available"),
]  # fmt: skip


@pytest.mark.parametrize("make, seconds, rate", HELD, ids=[make.__name__ for make, _, _ in HELD])
def test_a_file_is_judged_by_what_it_holds_not_its_header(make, seconds, rate, tmp_path):
    info = validate_upload(make(tmp_path))
    assert info.duration == pytest.approx(seconds, abs=0.07)
    assert float(info.frame_rate) == pytest.approx(rate, rel=0.02)


@pytest.mark.parametrize("make, reason", REFUSED, ids=[make.__name__ for make, _ in REFUSED])
def test_what_cannot_be_used_is_refused_in_plain_words(make, reason, tmp_path):
    with pytest.raises(InvalidMediaError) as err:
        validate_upload(make(tmp_path))
    assert err.value.message == reason


def test_an_audio_track_nothing_can_decode_is_left_out_and_said_so(tmp_path):
    upload = corpus.undecodable_audio(tmp_path)
    with processed(upload, tmp_path / "storage") as (pipeline, key, result):
        assert result.success
        metadata = pipeline.latest_metadata(dg.AssetKey("source_video"), key)
    assert metadata["has_audio"] is False
    assert metadata["ignored_streams"] == "audio stream 1 is in a format ffmpeg cannot decode (unknown): left out"
    manifest = result.output_for_node("publish", "video_manifest")
    assert [r["name"] for r in manifest["renditions"]] == ["h264_240p", "vp9_360p"]
    assert all(r["audio_codec"] is None for r in manifest["renditions"])


def checks_of(result) -> dict:
    return {check.asset_check_key.name: check for check in result.get_asset_check_evaluations()}


def test_one_damaged_unit_is_decoded_past_and_reported_not_refused(tmp_path):
    upload = corpus.one_bad_nal_unit(tmp_path)
    with processed(upload, tmp_path / "storage") as (pipeline, key, result):
        assert result.success
        rendition = pipeline.latest_metadata(dg.AssetKey(["renditions", "h264_240p"]), key)
    manifest = result.output_for_node("publish", "video_manifest")
    assert [r["name"] for r in manifest["renditions"]] == ["h264_240p", "vp9_360p"]
    assert all(r["duration"] == pytest.approx(3.0, abs=0.05) for r in manifest["renditions"])
    # One frame's NAL unit: the decoder and the parser each say so; ffmpeg loses that frame.
    decoding = {"decode_errors": 5, "frames_damaged": 0, "frames_lost": 1, "audio_packets_lost": 0}
    assert manifest["source"]["decoding"] == decoding
    assert rendition["decoding"] == "decoded with 5 errors, 1 frame lost"
    check = checks_of(result)["source_decoded_cleanly"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.description == "decoded with 5 errors, 1 frame lost"
    assert checks_of(result)["manifest_outputs_complete"].passed


def test_a_camera_avi_with_a_damaged_audio_frame_keeps_its_sound(tmp_path):
    upload = corpus.camera_avi_with_a_damaged_mp3_frame(tmp_path)
    with processed(upload, tmp_path / "storage") as (_, _, result):
        assert result.success
    manifest = result.output_for_node("publish", "video_manifest")
    assert [(r["name"], r["audio_codec"]) for r in manifest["renditions"]] == [
        ("h264_240p", "aac"),
        ("vp9_360p", "opus"),
    ]
    assert (
        checks_of(result)["source_decoded_cleanly"].description
        == "decoded with 2 errors, 0 frames lost, 1 audio packet lost"
    )


@pytest.mark.parametrize("packets, truncated", [(88, False), (87, True)], ids=["at the edge", "one below"])
def test_a_file_is_truncated_below_ninety_percent_of_its_indexed_packets_less_two(packets, truncated):
    """An index listing 100 packets: 88 present is complete (0.9 × 100 - 2), 87 is truncated."""
    content = StreamContent(packets=packets, start=0.0, last=packets / 30, end=(packets + 1) / 30, cut_short=False)
    if truncated:
        with pytest.raises(InvalidMediaError, match=r"truncated or corrupt upload"):
            check_complete(video_info(640, 360), content, 100, Path("clip.mp4"))
    else:
        check_complete(video_info(640, 360), content, 100, Path("clip.mp4"))
