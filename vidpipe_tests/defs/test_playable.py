"""Two milestones per video: ``playable`` (its first rendition, that rendition's stream, the thumbnails and a
manifest saying so) and then complete (everything, under the same names), watched in storage as a player
would read it; and what a failure after the first milestone does."""

import json
import shlex
import stat

import dagster as dg
import pytest

from vidpipe.defs.catalog import CatalogResource
from vidpipe.defs.resources import FFmpegResource
from vidpipe_tests.harness import Pipeline, Watched, watching_publication

PLAYABLE = dg.AssetKey("playable")
MANIFEST = dg.AssetKey("video_manifest")


def encode_breaking(tmp_path, *, how: str, times: int = 1) -> tuple[FFmpegResource, object]:
    """An ``FFmpegResource`` whose ffmpeg breaks the rest of the ladder's encode (the one that writes vp9_360p)
    the first ``times`` times, as ``how`` says (``kill``: killed, as a lost machine; ``refuse``: ffmpeg finds
    the input broken); and the log of the encodes of the first rendition (h264_360p) it ran."""
    count, log = tmp_path / "breaks", tmp_path / "first-encodes"
    broken = "kill -9 $$" if how == "kill" else "echo '[error] Invalid data found when processing input' >&2; exit 1"
    script = tmp_path / "ffmpeg"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in *-max_error_rate*vp9_360p*)\n'
        f"  n=$(($(cat {count} 2>/dev/null || echo 0) + 1)); echo $n > {count}\n"
        f"  if [ $n -le {times} ]; then {broken}; fi;;\n"
        "esac\n"
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
    ffmpeg, first_encodes = encode_breaking(tmp_path, how="kill", times=kills)
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
    ffmpeg, _ = encode_breaking(tmp_path, how="refuse")
    pipeline, key, result, watched = watched_run(tmp_path, phone_clip, ffmpeg)
    assert not result.success
    assert watched.states == ["playable", "withdrawn"]
    video_dir = tmp_path / "storage" / key
    assert sorted(p.name for p in video_dir.iterdir() if p.is_dir() and p.name != "steps") == []
    assert (video_dir / "rejection.json").is_file() and (video_dir / "source.mov").is_file()
    assert row_state(pipeline, key) == "rejected"


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
