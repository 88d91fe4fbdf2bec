"""Odd but valid uploads come out upright, progressive, SDR, constant-rate and in sync."""

from dataclasses import replace
from fractions import Fraction

import dagster as dg
import pytest
from PIL import Image

from vidpipe.media.ladder import plan_ladder
from vidpipe.media.probe import parse_probe
from vidpipe_tests import corpus
from vidpipe_tests.harness import encode_upload, processed
from vidpipe_tests.media import decode_frame, frame_count, make_clip, mean_difference, stream, video_info


def video_of(path):
    return stream(path, "video")


def test_variable_frame_rate_becomes_constant_with_audio_in_sync(tmp_path):
    info, outputs = encode_upload(corpus.variable_frame_rate(tmp_path), tmp_path / "out", rungs={"h264_240p"})
    assert info.avg_frame_rate != info.nominal_frame_rate
    video, audio = video_of(outputs["h264_240p"]), stream(outputs["h264_240p"], "audio")
    assert video["r_frame_rate"] == video["avg_frame_rate"] == "30/1"
    assert abs(frame_count(outputs["h264_240p"]) - 60) <= 2
    assert abs(float(video["duration"]) - float(audio["duration"])) < 0.05


def test_interlaced_video_is_deinterlaced(tmp_path):
    info, outputs = encode_upload(corpus.interlaced(tmp_path), tmp_path / "out", rungs={"h264_240p"})
    assert info.field_order == "tt"
    assert video_of(outputs["h264_240p"])["field_order"] == "progressive"


@pytest.mark.parametrize("transfer", ["smpte2084", "arib-std-b67"], ids=["PQ", "HLG"])
def test_hdr_is_tone_mapped_to_8_bit_sdr_bt709(transfer, tmp_path):
    info, outputs = encode_upload(corpus.ten_bit(tmp_path, transfer), tmp_path / "out", rungs={"h264_240p"})
    assert info.is_hdr and info.pixel_format == "yuv420p10le"
    video = video_of(outputs["h264_240p"])
    assert (video["pix_fmt"], video["color_transfer"], video["color_primaries"]) == ("yuv420p", "bt709", "bt709")


def test_ten_bit_sdr_becomes_8_bit(tmp_path):
    info, outputs = encode_upload(corpus.ten_bit(tmp_path), tmp_path / "out", rungs={"h264_240p"})
    assert not info.is_hdr
    video = video_of(outputs["h264_240p"])
    assert video["pix_fmt"] == "yuv420p" and video["profile"] == "High"


def test_the_default_audio_track_is_the_one_encoded(tmp_path):
    info, outputs = encode_upload(corpus.two_audio_tracks(tmp_path), tmp_path / "out", rungs={"h264_240p"})
    assert info.audio_stream == 2
    assert float(stream(outputs["h264_240p"], "audio")["duration"]) == pytest.approx(2.0, abs=0.1)


def test_a_two_frame_clip(tmp_path):
    _, outputs = encode_upload(corpus.two_frames(tmp_path), tmp_path / "out")
    assert outputs and all(frame_count(path) == 2 for path in outputs.values())


def test_a_two_by_two_pixel_clip(tmp_path):
    _, outputs = encode_upload(corpus.two_by_two(tmp_path), tmp_path / "out")
    assert set(outputs) == {"h264_240p", "vp9_360p"}
    assert all((video_of(p)["width"], video_of(p)["height"]) == (2, 2) for p in outputs.values())


@pytest.mark.parametrize("rotate", [90, 180, 270])
def test_every_rotation_comes_out_upright(rotate, tmp_path):
    clip = make_clip(tmp_path / f"rotated-{rotate}.mp4", seconds=1, audio=False, rotate=rotate)
    info, outputs = encode_upload(clip, tmp_path / "out", rungs={"h264_240p"})
    raw = decode_frame(clip, autorotate=False)
    upright, wrong = raw.rotate(-info.rotation, expand=True), raw.rotate(180 - info.rotation, expand=True)
    frame = decode_frame(outputs["h264_240p"])
    assert mean_difference(frame, upright) < 8
    assert mean_difference(frame, wrong) > 20


@pytest.mark.parametrize(
    "side_data, tags, rotation",
    [
        ([{"rotation": -90}], {}, 90),
        ([{"rotation": 90}], {}, 270),
        ([{"rotation": 180}], {}, 180),
        ([{"rotation": -270}], {}, 270),
        ([], {"rotate": "90"}, 90),
        ([], {"rotate": "-90"}, 270),
        ([], {}, 0),
    ],
)
def test_rotation_from_display_matrices_and_tags_including_negative_values(side_data, tags, rotation):
    data = {
        "format": {"format_name": "mov,mp4", "duration": "1.0", "size": "100"},
        "streams": [
            {"index": 0, "codec_type": "video", "codec_name": "h264", "width": 1920, "height": 1080,
             "avg_frame_rate": "30/1", "r_frame_rate": "30/1", "side_data_list": side_data, "tags": tags},
        ],
    }  # fmt: skip
    assert parse_probe(data, path="x.mp4").rotation == rotation


def test_variable_rate_sources_use_their_nominal_rate_unless_it_is_a_timebase():
    phone = replace(video_info(1280, 720), nominal_frame_rate=Fraction(30), avg_frame_rate=Fraction(450, 19))
    assert phone.frame_rate == 30
    mkv = replace(video_info(1280, 720), nominal_frame_rate=Fraction(1000), avg_frame_rate=Fraction(30000, 1001))
    assert mkv.frame_rate == Fraction(30000, 1001)


def test_an_edit_list_is_honoured(tmp_path):
    original, cut = corpus.edit_list(tmp_path)
    _, outputs = encode_upload(cut, tmp_path / "out", rungs={"h264_240p"})
    assert frame_count(outputs["h264_240p"]) == 90
    first = decode_frame(outputs["h264_240p"])
    assert mean_difference(first, decode_frame(original, 30)) < 8 < mean_difference(first, decode_frame(original, 0))


def test_negative_timestamps_start_at_zero_in_sync(tmp_path):
    _, outputs = encode_upload(corpus.negative_timestamps(tmp_path), tmp_path / "out", rungs={"h264_240p"})
    video, audio = video_of(outputs["h264_240p"]), stream(outputs["h264_240p"], "audio")
    assert float(video["start_time"]) == float(audio["start_time"]) == 0
    assert abs(frame_count(outputs["h264_240p"]) - 120) <= 1
    assert abs(float(video["duration"]) - float(audio["duration"])) < 0.05


def test_an_audio_only_upload_gets_audio_renditions_and_a_waveform(tmp_path):
    upload = corpus.audio_only(tmp_path)
    with processed(upload, tmp_path / "storage") as (pipeline, key, result):
        ladder = pipeline.latest_metadata(dg.AssetKey(["renditions", "ladder"]), key)
        video_rung = pipeline.instance.get_latest_materialization_event(dg.AssetKey(["renditions", "h264_240p"]))
    manifest = result.output_for_node("video_manifest")
    assert manifest["source"] | {"duration": 2.0} == {
        "name": "voice-memo.m4a",
        "sha256": manifest["source"]["sha256"],
        "width": None,
        "height": None,
        "duration": 2.0,
        "rotation": 0,
        "frame_rate": None,
        "has_video": False,
        "has_audio": True,
        "decoding": {"decode_errors": 0, "frames_damaged": 0, "frames_lost": 0, "audio_packets_lost": 0},
    }
    assert [(r["name"], r["mime_type"], r["audio_codec"], r["width"]) for r in manifest["renditions"]] == [
        ("aac_128k", "audio/mp4", "aac", None),
        ("opus_96k", "audio/webm", "opus", None),
    ]
    video_dir = tmp_path / "storage" / key
    for rendition in manifest["renditions"]:
        assert stream(video_dir / rendition["path"], "video") is None
        assert rendition["duration"] == pytest.approx(2.0, abs=0.05)
    assert {(t["format"], t["width"], t["height"]) for t in manifest["thumbnails"]} >= {("jpeg", 1280, 360)}
    waveform = Image.open(video_dir / "thumbnails" / "thumb_1280.jpg").convert("RGB")
    assert len(waveform.getcolors(1 << 16)) > 2, "a waveform, not a blank picture"
    assert video_rung is None and ladder["made"] == "aac_128k, opus_96k"
    assert "| h264_240p | audio-only upload: there is no picture to encode |" in ladder["not_made"]
    assert all(check.passed for check in result.get_asset_check_evaluations())


def test_video_uploads_skip_the_audio_only_rungs():
    plan = plan_ladder(video_info(1280, 720))
    assert plan.skipped["aac_128k"] == "a video upload carries its audio in every video rendition"
    assert "opus_96k" in plan.skipped


def test_non_square_pixels_come_out_square_with_the_right_shape(tmp_path):
    # PAL 16:9 DVD: 720x576 stored, shown 1024x576.
    clip = make_clip(tmp_path / "anamorphic.mp4", size="720x576", sar="64/45", seconds=1, audio=False)
    info, outputs = encode_upload(clip, tmp_path / "out", rungs={"h264_480p"})
    assert (info.display_width, info.display_height) == (1024, 576)
    video = video_of(outputs["h264_480p"])
    assert (video["width"], video["height"], video["sample_aspect_ratio"]) == (854, 480, "1:1")
