"""Two milestones per video: ``playable`` (its first rendition, that rendition's stream, the thumbnails and a
manifest saying so) and then complete (everything, under the same names), watched in storage as a player
would read it; and what a failure after the first milestone does."""

import json
import shlex
import stat
import time

import dagster as dg
import pytest

from vidpipe.defs.catalog import CatalogResource
from vidpipe.defs.resources import FFmpegResource
from vidpipe_tests.harness import Pipeline, Watched, command_lines, watching_publication

PLAYABLE = dg.AssetKey("playable")
HANG_SECONDS = 61.25  # an odd length, to find the sleeps that stand for a hung ffmpeg
MANIFEST = dg.AssetKey("video_manifest")


BREAKS = {
    "kill": "kill -9 $$",
    "refuse": "echo '[error] Invalid data found when processing input' >&2; exit 1",
    "hang": f"sleep {HANG_SECONDS}",
}


def encode_breaking(tmp_path, *, times: int = 1, **breaks: str) -> tuple[FFmpegResource, object]:
    """An ``FFmpegResource`` whose ffmpeg breaks the encode that writes each rung named in ``breaks`` the first
    ``times`` times, as its value says (``kill``: killed, as a lost machine; ``refuse``: ffmpeg finds the input
    broken; ``hang``: never ends), and the log of the encodes of the first rendition (h264_360p) it ran.
    vp9_360p is made by the rest of the ladder's encode."""
    log = tmp_path / "first-encodes"
    script = tmp_path / "ffmpeg"
    cases = "".join(
        f'case "$*" in *-max_error_rate*{rung}*)\n'
        f"  n=$(($(cat {tmp_path / rung} 2>/dev/null || echo 0) + 1)); echo $n > {tmp_path / rung}\n"
        f"  if [ $n -le {times} ]; then {BREAKS[how]}; fi;;\n"
        "esac\n"
        for rung, how in breaks.items()
    )
    script.write_text(
        "#!/bin/sh\n"
        f"{cases}"
        f'case "$*" in *-max_error_rate*h264_360p*) echo encoded >> {shlex.quote(str(log))};; esac\n'
        'exec ffmpeg "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return FFmpegResource(ffmpeg_path=str(script)), log


def watched_run(tmp_path, clip, ffmpeg: FFmpegResource) -> tuple[Pipeline, str, dg.ExecuteInProcessResult, Watched]:
    """``clip`` processed with ``ffmpeg`` in a fresh instance, its storage watched meanwhile."""
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(instance, tmp_path / "storage")
        pipeline.resources["ffmpeg"] = ffmpeg
        key = pipeline.add(clip)
        with watching_publication(pipeline.resources["storage"], key) as watched:
            result = pipeline.materialize(key, upload=clip, raise_on_error=False)
    return pipeline, key, result, watched


def row_state(pipeline: Pipeline, key: str) -> str:
    catalog: CatalogResource = pipeline.resources["catalog"]
    return catalog.catalog().video(key).state


def test_a_video_is_published_playable_then_complete_and_never_lists_a_missing_file(tmp_path, phone_clip):
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(instance, tmp_path / "storage")
        key = pipeline.add(phone_clip)
        with watching_publication(pipeline.resources["storage"], key) as watched:
            result = pipeline.materialize(key, upload=phone_clip)
        assert result.success
        assert watched.states == ["playable", "complete"] and watched.looks > 10
        assert watched.missing == []
        playable = result.output_for_node("renditions", "playable")
        assert playable["state"] == "playable" and [r["name"] for r in playable["renditions"]] == ["h264_360p"]
        assert [level["height"] for level in playable["streams"]["hls"]["levels"]] == [640]
        assert {t["format"] for t in playable["thumbnails"]} == {"jpeg", "webp"}
        assert playable["storyboard"] is None and playable["quality"] is None
        complete = json.loads((tmp_path / "storage" / key / "manifest.json").read_text())
        assert complete["state"] == "complete" and len(complete["streams"]["hls"]["levels"]) == 2
        # The first rendition's stream files are published once, by the playable milestone, and kept as they are.
        assert (
            complete["streams"]["hls"]["levels"][0]["playlist"] == playable["streams"]["hls"]["levels"][0]["playlist"]
        )
        # In the event log, the first milestone comes first; the run's console says when each was reached.
        order = [
            event.asset_key
            for event in result.get_asset_materialization_events()
            if event.asset_key in (PLAYABLE, MANIFEST, dg.AssetKey(["renditions", "h264_240p"]))
        ]
        assert order == [PLAYABLE, dg.AssetKey(["renditions", "h264_240p"]), MANIFEST]
        metadata = pipeline.latest_metadata(PLAYABLE, key)
        assert metadata["state"] == "playable" and metadata["rendition"] == "h264_360p 360x640"
        assert 0 < metadata["seconds_after_run_requested"] < 60
        assert row_state(pipeline, key) == "ready"


@pytest.mark.parametrize("kills", [1, 3], ids=["retried", "retries-exhausted"])
def test_a_machine_failure_after_playable_keeps_it_and_retries_only_the_rest(tmp_path, phone_clip, kills):
    ffmpeg, first_encodes = encode_breaking(tmp_path, times=kills, vp9_360p="kill")
    pipeline, key, result, watched = watched_run(tmp_path, phone_clip, ffmpeg)
    assert watched.missing == []
    assert first_encodes.read_text().splitlines() == ["encoded"], "a retry encoded the first rendition again"
    if kills == 1:
        assert result.success and watched.states == ["playable", "complete"]
        assert row_state(pipeline, key) == "ready"
    else:  # every attempt lost: the video stays playable, as published, and its row says so
        assert not result.success and watched.states == ["playable"]
        manifest = json.loads((tmp_path / "storage" / key / "manifest.json").read_text())
        assert manifest["state"] == "playable" and row_state(pipeline, key) == "playable"


def test_a_refusal_after_playable_withdraws_everything(tmp_path, phone_clip):
    ffmpeg, _ = encode_breaking(tmp_path, vp9_360p="refuse")
    pipeline, key, result, watched = watched_run(tmp_path, phone_clip, ffmpeg)
    assert not result.success
    assert watched.states == ["playable", "withdrawn"]
    video_dir = tmp_path / "storage" / key
    assert sorted(p.name for p in video_dir.iterdir() if p.is_dir() and p.name != "steps") == []
    assert (video_dir / "rejection.json").is_file() and (video_dir / "source.mov").is_file()
    assert row_state(pipeline, key) == "rejected"


def test_a_refused_first_rendition_stops_the_rest_of_the_ladder_encoding_beside_it(tmp_path, phone_clip):
    """The rest of the ladder encodes beside the first rendition; when the first is refused, the rest is
    stopped at once (it never ends here), and nothing of the video is published."""
    ffmpeg, _ = encode_breaking(tmp_path, h264_360p="refuse", vp9_360p="hang")
    started = time.monotonic()
    pipeline, key, result, watched = watched_run(tmp_path, phone_clip, ffmpeg)
    assert not result.success and time.monotonic() - started < HANG_SECONDS / 2
    assert watched.states == [] and watched.missing == []
    assert row_state(pipeline, key) == "rejected"
    hung = [argv for argv in command_lines() if argv[:2] == [b"sleep", str(HANG_SECONDS).encode()]]
    assert hung == [], "the rest of the ladder's ffmpeg was left running"


def test_a_complete_video_made_again_stays_complete_while_it_is_made(tmp_path, phone_clip):
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(instance, tmp_path / "storage")
        key = pipeline.add(phone_clip)
        assert pipeline.materialize(key, upload=phone_clip).success
        with watching_publication(pipeline.resources["storage"], key) as watched:
            result = pipeline.materialize(key)  # a backfill of everything
        assert result.success and watched.states == ["complete"] and watched.missing == []
        assert pipeline.latest_metadata(PLAYABLE, key)["state"] == "complete"
        commands = json.loads((tmp_path / "storage" / key / "manifest.json").read_text())["ffmpeg"]["commands"]
        assert len(commands) == 1, "a video already complete is encoded in one ffmpeg run, as before"
