"""The asset graph materialized for real: ffmpeg, a sqlite Dagster instance, local storage."""

import json
import re
import shutil
import subprocess
import threading
from dataclasses import replace

import dagster as dg
import pytest
from PIL import Image

from vidpipe.definitions import build_assets
from vidpipe.defs.dagster_internals import StaleStatus, get_stale_status_resolver
from vidpipe.defs.storage import LocalVideoStorage
from vidpipe.media.errors import ToolFailedError
from vidpipe.media.files import sha256_file
from vidpipe.media.ladder import DEFAULT_LADDER
from vidpipe.media.manifest import manifest_problems
from vidpipe.threads import side_by_side
from vidpipe_tests.clips import decode_frame, ssim, stream
from vidpipe_tests.harness import Pipeline, step_failures

RUNG_KEYS = [dg.AssetKey(["renditions", rung.name]) for rung in DEFAULT_LADDER]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    with dg.instance_for_test() as instance:
        yield Pipeline(instance, tmp_path_factory.mktemp("storage"))


@pytest.fixture(scope="module")
def phone_video(pipeline, phone_clip):
    key = pipeline.add(phone_clip)
    result = pipeline.materialize(key, upload=phone_clip)
    return key, result


def test_one_partition_yields_an_upright_portrait_ladder_thumbnails_and_manifest(pipeline, phone_video, phone_clip):
    key, result = phone_video
    video_dir = pipeline.storage_root / key
    manifest = json.loads((video_dir / "manifest.json").read_text())
    assert manifest == result.output_for_node("publish", "video_manifest")
    assert manifest["video"] == key and manifest["state"] == "complete"
    assert manifest["source"]["duration"] == pytest.approx(2.0, abs=0.05)
    assert manifest["source"] | {"duration": 0} == {
        "name": "Phone Clip.mov",
        "sha256": sha256_file(phone_clip),
        "width": 360,
        "height": 640,
        "duration": 0,
        # make_clip(rotate=90) gets from ffmpeg 5.1 a display matrix of 90 degrees counter-clockwise
        # (ffprobe: "rotation": 90): the picture is to be turned 270 degrees clockwise.
        "rotation": 270,
        "frame_rate": 30.0,
        "has_video": True,
        "has_audio": True,
        "decoding": {"decode_errors": 0, "frames_damaged": 0, "frames_lost": 0, "audio_packets_lost": 0},
    }
    assert [(r["name"], r["width"], r["height"]) for r in manifest["renditions"]] == [
        ("h264_360p", 360, 640),
        ("h264_240p", 240, 426),
        ("vp9_360p", 360, 640),
    ]
    for rendition in manifest["renditions"]:
        path = video_dir / rendition["path"]
        assert path.stat().st_size == rendition["bytes"]
        video = stream(path, "video")
        assert (video["width"], video["height"]) == (rendition["width"], rendition["height"])
        assert rendition["duration"] == pytest.approx(2.0, abs=0.05)
    assert {(t["format"], t["width"], t["height"]) for t in manifest["thumbnails"]} == {
        ("jpeg", 360, 640),
        ("webp", 360, 640),
        ("jpeg", 320, 569),
        ("webp", 320, 569),
    }
    assert all((video_dir / t["path"]).is_file() for t in manifest["thumbnails"])
    # The H.264/AAC rungs as one adaptive stream, HLS and DASH; seek previews of the upright picture.
    streams = manifest["streams"]
    assert (streams["hls"]["path"], streams["dash"]["path"]) == ("stream/master.m3u8", "stream/manifest.mpd")
    assert [(level["playlist"], level["width"], level["height"]) for level in streams["hls"]["levels"]] == [
        ("stream/h264_360p/index.m3u8", 360, 640),
        ("stream/h264_240p/index.m3u8", 240, 426),
    ]
    assert all((video_dir / level["playlist"]).is_file() for level in streams["hls"]["levels"])
    assert (video_dir / streams["dash"]["path"]).is_file() and streams["segment_seconds"] == 2
    assert manifest["storyboard"] == {
        "vtt": "storyboard/storyboard.vtt",
        "images": ["storyboard/sheet_000.jpg"],
        "interval": 1,
        "tile_width": 90,
        "tile_height": 160,
    }
    assert (video_dir / "storyboard" / "storyboard.vtt").read_text().count("#xywh=") == 2
    # The public manifest names files relative to itself; the exact command stays private.
    # Two commands: the rung the video is first published with (playable) alone, then the rest in one.
    first, rest = manifest["ffmpeg"]["commands"]
    assert manifest["ffmpeg"]["argv"] is None and first["renditions"] == ["h264_360p"]
    assert rest["renditions"] == ["h264_240p", "vp9_360p"]
    for command in (first, rest):
        argv = command["argv"]
        assert argv[0] == "ffmpeg" and "source.mov" in argv
        assert all(any(a.startswith(f"renditions/{name}.") for a in argv) for name in command["renditions"])
        assert not [arg for arg in argv if "/tmp" in arg or arg.startswith("/")]
    exact = json.loads((video_dir / "encode.json").read_text())["renditions"]["h264_360p"]["argv"]
    assert str(video_dir / "source.mov") in exact and len(exact) == len(first["argv"])
    assert (video_dir / "source.mov").read_bytes() == phone_clip.read_bytes()
    assert not list(video_dir.rglob(".*")), "temporary files left behind"
    checks = {check.asset_check_key.name: check for check in result.get_asset_check_evaluations()}
    assert set(checks) == {
        "manifest_outputs_complete",
        "source_decoded_cleanly",
        "rungs_above_quality_floor",
        "rung_keyframes_aligned",
        "picture_and_sound_in_step",
    }
    assert all(check.passed for check in checks.values()), {n: c.description for n, c in checks.items()}
    quality = manifest["quality"]
    assert set(quality["rungs"]) == {"h264_360p", "h264_240p", "vp9_360p"}
    assert all(0.95 <= rung["ssim"] <= 1 and rung["psnr"] > 30 and rung["passed"] for rung in quality["rungs"].values())
    assert quality["keyframes_aligned"] and quality["in_sync"] and quality["problems"] == []


def test_the_manifest_check_finds_missing_and_altered_files(pipeline, phone_video, tmp_path):
    key, _ = phone_video
    copy = tmp_path / key
    shutil.copytree(pipeline.storage_root / key, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    storage = LocalVideoStorage(root=str(tmp_path))

    def stored_size(file: str) -> int | None:
        return storage.stored_size(key, file)

    assert manifest_problems(manifest, stored_size) == []
    (copy / "renditions" / "vp9_360p.webm").unlink()
    with open(copy / "renditions" / "h264_240p.mp4", "ab") as handle:
        handle.write(b"junk")
    (copy / manifest["thumbnails"][0]["path"]).unlink()
    (copy / "stream" / "h264_240p" / "index.m3u8").unlink()
    (copy / "storyboard" / "sheet_000.jpg").unlink()
    problems = manifest_problems(manifest, stored_size)
    listed = manifest["renditions"][1]["bytes"]
    assert problems[0] == f"h264_240p: {listed + 4} bytes stored, {listed} listed"
    assert problems[1:] == [
        "vp9_360p: renditions/vp9_360p.webm is missing",
        f"thumbnail {manifest['thumbnails'][0]['path']} is missing",
        "stream/h264_240p/index.m3u8 is missing",
        "storyboard/sheet_000.jpg is missing",
    ]
    manifest["renditions"][0]["duration"] += 0.5
    assert manifest_problems(manifest, stored_size)[0].startswith("h264_360p: lasts 2.5")


def test_metadata_is_recorded_for_the_ui(pipeline, phone_video):
    key, _ = phone_video
    source = pipeline.latest_metadata(dg.AssetKey("source_video"), key)
    assert source["original_name"] == "Phone Clip.mov"
    assert (source["width"], source["height"], source["coded_width"], source["coded_height"]) == (360, 640, 640, 360)
    thumbnail = pipeline.latest_metadata(dg.AssetKey("thumbnail"), key)
    assert "](data:image/jpeg;base64," in thumbnail["preview"]
    produced = pipeline.latest_metadata(dg.AssetKey(["renditions", "h264_360p"]), key)
    assert (produced["width"], produced["height"]) == (360, 640)
    assert produced["file"] == str(pipeline.storage_root / key / "renditions" / "h264_360p.mp4")
    manifest = pipeline.latest_metadata(dg.AssetKey("video_manifest"), key)
    assert manifest["manifest_file"] == str(pipeline.storage_root / key / "manifest.json")
    # A rung the video gets no rendition of is not materialized for it; the ladder asset says why.
    assert pipeline.instance.get_latest_materialization_event(dg.AssetKey(["renditions", "h264_1080p"])) is None
    ladder = pipeline.latest_metadata(dg.AssetKey(["renditions", "ladder"]), key)
    assert ladder["made"] == "h264_360p, h264_240p, vp9_360p"
    assert (
        "| h264_1080p | source is 360 px on its short side; h264_1080p needs 1080 and vidpipe never upscales |"
        in (ladder["not_made"])
    )


def test_a_backfill_reuses_the_stored_original(pipeline, phone_video, phone_clip):
    key, _ = phone_video
    result = pipeline.materialize(key, selection=[dg.AssetKey("source_video")])
    assert result.output_for_node("source_video").sha256 == sha256_file(phone_clip)
    assert pipeline.latest_metadata(dg.AssetKey("source_video"), key)["sha256"] == sha256_file(phone_clip)


def test_a_partition_without_upload_or_stored_original_fails_with_a_clear_message(pipeline, landscape_clip):
    key = pipeline.add(landscape_clip)
    result = pipeline.materialize(key, raise_on_error=False)
    assert step_failures(result) == {
        "source_video": f"video {key} has no stored original and no upload recorded for it: "
        "drop the file into the inbox again"
    }


def test_editing_one_rung_marks_only_it_stale_and_a_backfill_reencodes_only_it(tmp_path, silent_clip):
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(instance, tmp_path)
        key = pipeline.add(silent_clip)
        pipeline.materialize(key, upload=silent_clip)
        renditions = tmp_path / key / "renditions"
        before = {p.name: p.stat().st_ino for p in renditions.iterdir()}

        edited_ladder = tuple(replace(r, crf=r.crf + 2) if r.name == "h264_240p" else r for r in DEFAULT_LADDER)
        edited_assets = build_assets(edited_ladder)
        resolver = get_stale_status_resolver(instance, edited_assets)
        stale = {k.path[-1] for k in RUNG_KEYS if resolver.get_status(k, key) == StaleStatus.STALE}
        assert stale == {"h264_240p"}

        pipeline.materialize(
            key,
            assets=edited_assets,
            selection=[
                dg.AssetKey(["renditions", "h264_240p"]),
                dg.AssetKey(["renditions", "ladder"]),
                dg.AssetKey("video_manifest"),
            ],
        )
        after = {p.name: p.stat().st_ino for p in renditions.iterdir()}
        assert {name for name in before if before[name] != after[name]} == {"h264_240p.mp4"}
        manifest = json.loads((tmp_path / key / "manifest.json").read_text())
        commands = manifest["ffmpeg"]["commands"]
        assert manifest["ffmpeg"]["argv"] is None and len(commands) == 3
        assert [c["renditions"] for c in commands] == [["h264_360p"], ["h264_240p"], ["vp9_360p"]]
        resolver = get_stale_status_resolver(instance, edited_assets)
        assert all(resolver.get_status(k, key) != StaleStatus.STALE for k in RUNG_KEYS)


def test_the_quality_check_fails_on_a_damaged_rendition(pipeline, phone_video, tmp_path):
    """A rendition replaced by a blurred, starved encode of itself (same size, keyframes and length): the
    quality floor check fails and names it, and the other checks still pass."""
    key, _ = phone_video
    rendition = pipeline.storage_root / key / "renditions" / "h264_240p.mp4"
    damaged = tmp_path / "damaged.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(rendition), "-vf", "boxblur=8:2", "-c:v", "libx264", "-crf", "45",
         "-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-force_key_frames", "expr:gte(t,n_forced*2)",
         "-c:a", "copy", str(damaged)],
        check=True,
    )  # fmt: skip
    original = rendition.read_bytes()
    try:
        damaged.replace(rendition)
        result = pipeline.materialize(key, selection=[dg.AssetKey("quality")])
    finally:
        rendition.write_bytes(original)
    # The publish op made only what was selected: no storyboard, stream or manifest, and only quality's checks.
    assert {event.asset_key for event in result.get_asset_materialization_events()} == {dg.AssetKey("quality")}
    checks = {check.asset_check_key.name: check for check in result.get_asset_check_evaluations()}
    assert set(checks) == {"rungs_above_quality_floor", "rung_keyframes_aligned", "picture_and_sound_in_step"}
    floor = checks["rungs_above_quality_floor"]
    assert not floor.passed and floor.description.startswith("h264_240p SSIM 0.")
    assert floor.metadata["ssim_h264_240p"].value < 0.95 <= floor.metadata["ssim_h264_360p"].value
    assert checks["rung_keyframes_aligned"].passed and checks["picture_and_sound_in_step"].passed


def test_each_storyboard_tile_shows_the_original_at_its_cue(pipeline, phone_video, phone_clip):
    """The storyboard is made from the smallest rendition; its tiles still match the upload's own frames at
    the cues' times, the right one best (a wrong order fails)."""
    key, _ = phone_video
    folder = pipeline.storage_root / key / "storyboard"
    cues = re.findall(
        r"(\d\d):(\d\d):(\d\d)\.(\d{3}) --> .*\n(\S+)#xywh=(\d+),(\d+),(\d+),(\d+)",
        (folder / "storyboard.vtt").read_text(),
    )
    assert len(cues) == 2
    tiles, frames = [], []
    for hours, minutes, seconds, millis, sheet, x, y, w, h in cues:
        start = int(hours) * 3600 + int(minutes) * 60 + int(seconds) + int(millis) / 1000
        left, top = int(x), int(y)
        tiles.append(Image.open(folder / sheet).crop((left, top, left + int(w), top + int(h))))
        frames.append(decode_frame(phone_clip, round(start * 30)))
    for index, tile in enumerate(tiles):
        scores = [ssim(tile, frame) for frame in frames]
        assert scores[index] == max(scores) and scores[index] > 0.8, (index, scores)


def test_a_failing_part_of_publish_is_raised_only_once_the_other_parts_have_ended():
    """``publish`` handles a part's failure (a refusal withdraws the video's outputs) only when no other part
    is still writing its files."""
    failed = threading.Event()
    ended = []

    def fails():
        failed.set()
        raise ToolFailedError("packager stopped with an error")

    def outlasts_the_failure():
        assert failed.wait(5)
        ended.append("quality")
        return "report"

    parts = side_by_side({"stream": fails, "quality": outlasts_the_failure})
    assert ended == ["quality"]
    assert all(part.done() for part in parts.values())
    with pytest.raises(ToolFailedError, match="packager stopped"):
        parts["stream"].result()
    assert parts["quality"].result() == "report"
