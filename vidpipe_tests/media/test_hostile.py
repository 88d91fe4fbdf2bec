"""Hostile and broken uploads: each refused with its own reason, nothing read that should not be."""

import json
import re
from pathlib import Path

import dagster as dg
import pytest

from vidpipe.defs.resources import FFmpegResource
from vidpipe.media.errors import InvalidMediaError
from vidpipe.media.ffmpeg_calls import Limits, Tools
from vidpipe.media.validate import validate_upload
from vidpipe_tests import corpus
from vidpipe_tests.clips import make_clip
from vidpipe_tests.harness import Pipeline, evaluate_failed_video_runs, step_failures

REJECTIONS = [
    (corpus.hls_playlist, "not a video: the file is an HLS playlist"),
    (corpus.concat_list, "not a video: the file is an ffmpeg concat list"),
    (corpus.y4m_bomb, "16000×16000 exceeds the 8,294,400-pixel limit"),
    (corpus.truncated_mp4, re.compile(r"the file holds 0\.\d s of video but its header claims 00:00:03 \(truncated or corrupt upload\)")),
    (corpus.mp4_without_moov, "the file is incomplete: its MP4 index (moov box) is missing, so the upload was probably cut short"),
    (corpus.zero_bytes, "not a video: the file is empty"),
    (corpus.text_as_mov, "not a video: the file is text"),
    (corpus.png_as_mp4, "not a video: the file is a still image (png)"),
    (corpus.subtitles_only, "not a video: the file has no video or audio stream"),
]  # fmt: skip


@pytest.mark.parametrize("make, reason", REJECTIONS, ids=[make.__name__ for make, _ in REJECTIONS])
def test_the_gate_refuses_with_a_specific_reason(make, reason, tmp_path):
    upload = make(tmp_path)
    with pytest.raises(InvalidMediaError) as err:
        validate_upload(upload)
    if isinstance(reason, re.Pattern):
        assert reason.fullmatch(err.value.message), err.value.message
    else:
        assert err.value.message == reason
    assert err.value.path == str(upload)


def test_limits_are_configurable(tmp_path, landscape_clip):
    assert validate_upload(landscape_clip).width == 640
    cases = [
        (Limits(max_pixels=640 * 360 - 1), "640×360 exceeds the 230,399-pixel limit"),
        (Limits(max_frame_rate=25), "30 frames per second exceeds the limit of 25"),
        (Limits(max_duration_seconds=4), "00:00:05 exceeds the 00:00:04 duration limit"),
        (
            Limits(max_file_bytes=1000),
            f"{landscape_clip.stat().st_size / 2**20:.1f} MiB exceeds the 0.0 MiB file size limit",
        ),
        (Limits(max_streams=1), "2 streams exceed the limit of 1"),
    ]
    for limits, reason in cases:
        with pytest.raises(InvalidMediaError) as err:
            validate_upload(landscape_clip, Tools(limits=limits))
        assert err.value.message == reason


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    with dg.instance_for_test() as instance:
        yield Pipeline(instance, tmp_path_factory.mktemp("storage"))


def process(pipeline, upload):
    key = pipeline.add(upload)
    return key, pipeline.materialize(key, upload=upload, raise_on_error=False)


def everything_written(pipeline, result) -> bytes:
    """Every byte vidpipe and Dagster wrote: stored files, Dagster's storage and the run's event log."""
    roots = [pipeline.storage_root, Path(pipeline.instance.storage_directory())]
    files = b"".join(p.read_bytes() for root in roots for p in sorted(root.rglob("*")) if p.is_file())
    logs = "\n".join(str(event) for event in pipeline.instance.all_logs(result.run_id))
    return files + logs.encode()


def restarts(result) -> int:
    return sum(1 for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_RESTARTED)


@pytest.mark.parametrize(
    "make, reason",
    [
        (corpus.hls_playlist, "not a video: the file is an HLS playlist"),
        (corpus.concat_list, "not a video: the file is an ffmpeg concat list"),
    ],
    ids=["hls_playlist", "concat_list"],
)
def test_a_playlist_fails_its_partition_without_opening_the_files_it_names(make, reason, pipeline, tmp_path):
    upload = make(tmp_path)
    key, result = process(pipeline, upload)
    assert step_failures(result) == {"source_video": reason}
    assert restarts(result) == 0
    video_dir = pipeline.storage_root / key
    assert (video_dir / "source.mp4").read_bytes() == upload.read_bytes()
    assert json.loads((video_dir / "rejection.json").read_text())["reason"] == reason
    assert not (video_dir / "renditions").exists() and not (video_dir / "thumbnails").exists()
    assert corpus.SECRET.encode() not in everything_written(pipeline, result)
    assert rejection_observed(pipeline, key) == reason


def rejection_observed(pipeline, key) -> str:
    """The reason on the latest observation of ``source_video`` for ``key`` (its Events tab in the UI)."""
    records = pipeline.instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("source_video"), asset_partitions=[key]), limit=1
    ).records
    metadata = records[0].asset_observation.metadata
    assert metadata["rejected"].value is True
    return metadata["reason"].value


def test_corrupt_video_data_fails_the_encode_saying_how_much_and_publishes_nothing(pipeline, tmp_path):
    upload = corpus.flipped_bytes(tmp_path)
    key, result = process(pipeline, upload)
    failures = step_failures(result)
    reason = failures["renditions"]
    # About half the frames come out damaged: far past the 10 % that is salvaged.
    match = re.fullmatch(
        r"corrupt H\.264 data: (\d+) of 90 frames damaged or lost \(more than 10% of the video\)", reason
    )
    assert match and int(match.group(1)) > 20, failures
    assert set(failures) == {"renditions"} and restarts(result) == 0
    video_dir = pipeline.storage_root / key
    # What the thumbnail step (before the encode) and the playable milestone published is withdrawn: the original
    # and why it was refused, nothing else (beside the private values steps hand on).
    assert sorted(p.name for p in video_dir.iterdir()) == ["rejection.json", "source.json", "source.mp4", "steps"]
    assert json.loads((video_dir / "rejection.json").read_text())["reason"] == failures["renditions"]
    assert rejection_observed(pipeline, key) == failures["renditions"]
    assert (video_dir / "source.mp4").read_bytes() == upload.read_bytes()


def test_a_rejected_upload_does_not_stop_the_next_one(pipeline, tmp_path, tiny_clip):
    process(pipeline, corpus.zero_bytes(tmp_path))
    key, result = process(pipeline, tiny_clip)
    assert result.success
    assert (pipeline.storage_root / key / "manifest.json").is_file()


def test_failed_runs_are_recorded_for_operators_with_how_to_rerun(pipeline, tmp_path):
    key, result = process(pipeline, corpus.text_as_mov(tmp_path))
    evaluate_failed_video_runs(pipeline, result)
    log = (pipeline.storage_root / "failed_runs.jsonl").read_text().splitlines()
    [entry] = [json.loads(line) for line in log if result.run_id in line]
    assert entry["video"] == key
    assert entry["reason"] == "source_video: not a video: the file is text"
    assert entry["rerun"].endswith(f"/vidpipe rerun {key}")  # runnable as pasted: test_cli.py runs one
    # The runs list in the UI shows tags: the reason is one.
    assert pipeline.instance.get_run_by_id(result.run_id).tags["vidpipe/failure"] == entry["reason"]


def test_a_stuck_encode_is_stopped_retried_and_then_failed_with_a_clear_message(tmp_path, landscape_clip):
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(instance, tmp_path)
        pipeline.resources["ffmpeg"] = FFmpegResource(encode_timeout_seconds=0.2)
        key, result = process(pipeline, landscape_clip)
    assert step_failures(result) == {"renditions": "ffmpeg took longer than 0.2 s and was stopped"}
    assert restarts(result) == 2
    assert not (tmp_path / key / "rejection.json").exists(), "a timeout is not the upload's fault"
    assert [p for p in (tmp_path / key / "renditions").iterdir() if not p.name.startswith(".")] == []


def test_an_absurd_pixel_aspect_ratio_is_refused(tmp_path):
    clip = make_clip(tmp_path / "stretched.mp4", size="720x576", sar="64/1", seconds=1, audio=False)
    with pytest.raises(InvalidMediaError) as err:
        validate_upload(clip)
    assert err.value.message == (
        "a 46080×576 picture (stored 720×576 with pixel aspect ratio 64) is more elongated than 10:1"
    )
