import dataclasses
import itertools
import re

import pytest
from PIL import Image

from vidpipe.media.probe import probe
from vidpipe.media.storyboard import (
    MAX_TILES,
    SHEET_COLUMNS,
    TILE_LONG_SIDE,
    make_storyboard,
    plan_storyboard,
)
from vidpipe_tests.clips import decode_frame, make_clip, ssim, video_info

CUE = re.compile(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})\n(\S+)#xywh=(\d+),(\d+),(\d+),(\d+)")


def cues(vtt: str) -> list[tuple[float, float, str, tuple[int, int, int, int]]]:
    """(start, end, image, (x, y, w, h)) of each cue of a storyboard track."""
    found = []
    for match in CUE.finditer(vtt):
        h1, m1, s1, ms1, h2, m2, s2, ms2 = (int(g) for g in match.groups()[:8])
        start = h1 * 3600 + m1 * 60 + s1 + ms1 / 1000
        end = h2 * 3600 + m2 * 60 + s2 + ms2 / 1000
        found.append((start, end, match[9], tuple(int(g) for g in match.groups()[9:])))
    return found


@pytest.mark.parametrize(
    "seconds, interval", [(6, 1), (200, 1), (201, 2), (600, 5), (3600, 30), (4 * 3600, 120), (30 * 3600, 300)]
)
def test_the_interval_grows_with_the_duration_to_keep_the_tiles_few(seconds, interval):
    plan = plan_storyboard(dataclasses.replace(video_info(1920, 1080), duration=seconds))
    assert plan.interval == interval
    assert plan.tiles <= MAX_TILES or interval == 300


def test_tiles_keep_the_upright_shape_with_the_long_side_fixed():
    assert plan_storyboard(video_info(1920, 1080)).tile_width == TILE_LONG_SIDE
    portrait = plan_storyboard(video_info(1920, 1080, rotation=90))
    assert (portrait.tile_width, portrait.tile_height) == (90, TILE_LONG_SIDE)


@pytest.fixture(scope="module")
def moving_clip(tmp_path_factory):
    """12 s of testsrc2, 30 fps: its picture changes from second to second."""
    return make_clip(tmp_path_factory.mktemp("storyboard") / "moving.mp4", size="320x180", seconds=12)


def test_each_tile_shows_the_frame_on_screen_at_its_cue_and_cues_cover_the_video(moving_clip, tmp_path):
    info = probe(moving_clip)
    made = make_storyboard(moving_clip, info, tmp_path)
    assert made.plan.interval == 1 and made.plan.tiles == 12
    assert (made.plan.tile_width, made.plan.tile_height) == (160, 90)
    track = cues((tmp_path / made.vtt).read_text())
    assert (tmp_path / made.vtt).read_text().startswith("WEBVTT\n")
    assert len(track) == 12
    # no gap, no overlap, from 0 to the end
    assert track[0][0] == 0 and track[-1][1] == pytest.approx(info.duration, abs=0.001)
    assert all(earlier[1] == later[0] for earlier, later in itertools.pairwise(track))

    sheet = Image.open(tmp_path / made.images[0])
    assert sheet.size == (SHEET_COLUMNS * 160, 2 * 90)  # 12 tiles: two rows
    tiles = [sheet.crop((x, y, x + w, y + h)) for _, _, _, (x, y, w, h) in track]
    frames = [decode_frame(moving_clip, round(start * 30)) for start, *_ in track]
    for index, tile in enumerate(tiles):
        scores = [ssim(tile, frame) for frame in frames]
        assert scores[index] > 0.8, (index, scores[index])
        # the tile matches its own moment better than any other tile's: a wrong order fails here
        assert scores[index] == max(scores), (index, scores)


def test_an_upright_phone_clip_gets_upright_tiles(phone_clip, tmp_path):
    made = make_storyboard(phone_clip, probe(phone_clip), tmp_path)
    assert (made.plan.tile_width, made.plan.tile_height) == (90, 160)
    [(_, _, image, (x, y, w, h)), *_] = cues((tmp_path / made.vtt).read_text())
    tile = Image.open(tmp_path / image).crop((x, y, x + w, y + h))
    assert ssim(tile, decode_frame(phone_clip, 0)) > 0.8
