"""Seek previews: a small frame every few seconds, in sprite sheets, and a WebVTT track whose cues point
at each frame's tile (``sheet_000.jpg#xywh=x,y,w,h``), as players show them while scrubbing.

One ffmpeg run decodes the source once and hands over the frames at the grid times, already small,
as raw RGB; Pillow lays them out in sheets. The interval grows with the duration so that a video has
at most ``MAX_TILES`` tiles (two sheets): every second for a short clip, every minute for hours.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vidpipe.media.ffmpeg_calls import DEFAULT_TOOLS, Tools, run_tool
from vidpipe.media.files import write_atomically
from vidpipe.media.probe import VideoInfo

INTERVALS_SECONDS = (1, 2, 5, 10, 15, 30, 60, 120, 300)
MAX_TILES = 200
TILE_LONG_SIDE = 160
"""A tile's longer side in pixels (160×90 for 16:9, 90×160 upright)."""
SHEET_COLUMNS = 10
SHEET_ROWS = 10
JPEG_QUALITY = 75
VTT_FILE = "storyboard.vtt"
VTT_MIME_TYPE = "text/vtt"


@dataclass(frozen=True)
class StoryboardPlan:
    interval: int
    """Seconds between tiles: tile k shows the frame on screen at k × interval."""
    tiles: int
    tile_width: int
    tile_height: int


@dataclass(frozen=True)
class Storyboard:
    plan: StoryboardPlan
    vtt: str
    """The WebVTT file's name in the folder it was written to."""
    images: tuple[str, ...]
    """The sheets' names there, in order."""


def plan_storyboard(info: VideoInfo) -> StoryboardPlan:
    """The interval (the shortest of ``INTERVALS_SECONDS`` that keeps to ``MAX_TILES``) and tile size (the
    upright picture's shape, its longer side ``TILE_LONG_SIDE``, even sides)."""
    duration = max(info.duration, 0.001)
    interval = next((i for i in INTERVALS_SECONDS if math.ceil(duration / i) <= MAX_TILES), INTERVALS_SECONDS[-1])
    width, height = info.display_width, info.display_height
    scale = TILE_LONG_SIDE / max(width, height)
    return StoryboardPlan(
        interval=interval,
        tiles=math.ceil(duration / interval),
        tile_width=max(2, round(width * scale / 2) * 2),
        tile_height=max(2, round(height * scale / 2) * 2),
    )


def storyboard_frames_command(source: Path, info: VideoInfo, plan: StoryboardPlan, tools: Tools) -> list[str]:
    """ffmpeg writes, as raw RGB on stdout, the frame on screen at each multiple of the interval, upright
    and scaled to the tile size: ``fps`` with ``round=up`` keeps, for the time k × interval, the last
    frame that starts at or before it."""
    picture = (
        tools.input(source, info.demuxer)[f"{info.video_stream}"]
        .filter("fps", fps=f"1/{plan.interval}", round="up")
        .filter("scale", plan.tile_width, plan.tile_height)
        .filter("setsar", 1)
    )
    output = picture.output("pipe:1", f="rawvideo", pix_fmt="rgb24", vframes=plan.tiles)
    return [tools.ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", *output.get_args()]


def make_storyboard(source: Path, info: VideoInfo, out_dir: Path, tools: Tools = DEFAULT_TOOLS) -> Storyboard:
    """Decode ``source`` once and write its sheets and WebVTT track into ``out_dir`` (a video only)."""
    plan = plan_storyboard(info)
    argv = storyboard_frames_command(source, info, plan, tools)
    raw = run_tool(argv, timeout=tools.encode_timeout_seconds, subject=os.fspath(source))
    size = plan.tile_width * plan.tile_height * 3
    frames = [
        Image.frombytes("RGB", (plan.tile_width, plan.tile_height), raw[start : start + size])
        for start in range(0, len(raw) - size + 1, size)
    ]
    per_sheet = SHEET_COLUMNS * SHEET_ROWS
    images = []
    for number, first in enumerate(range(0, len(frames), per_sheet)):
        name = f"sheet_{number:03d}.jpg"
        write_atomically(out_dir / name, _sheet(frames[first : first + per_sheet], plan))
        images.append(name)
    write_atomically(out_dir / VTT_FILE, storyboard_vtt(plan, len(frames), info.duration, images).encode())
    return Storyboard(plan=plan, vtt=VTT_FILE, images=tuple(images))


def tile_position(index: int, plan: StoryboardPlan) -> tuple[int, int, int]:
    """Tile ``index``'s sheet number and its top-left corner in that sheet."""
    sheet, place = divmod(index, SHEET_COLUMNS * SHEET_ROWS)
    row, column = divmod(place, SHEET_COLUMNS)
    return sheet, column * plan.tile_width, row * plan.tile_height


def storyboard_vtt(plan: StoryboardPlan, tiles: int, duration: float, images: list[str]) -> str:
    """A cue per tile, from its time to the next tile's (the last one to the end), without gaps."""
    cues = ["WEBVTT", ""]
    for index in range(tiles):
        start = index * plan.interval
        end = duration if index == tiles - 1 else (index + 1) * plan.interval
        sheet, x, y = tile_position(index, plan)
        cues += [
            f"{_timestamp(start)} --> {_timestamp(end)}",
            f"{images[sheet]}#xywh={x},{y},{plan.tile_width},{plan.tile_height}",
            "",
        ]
    return "\n".join(cues)


def _sheet(frames: list[Image.Image], plan: StoryboardPlan) -> bytes:
    rows = math.ceil(len(frames) / SHEET_COLUMNS)
    columns = min(len(frames), SHEET_COLUMNS)
    sheet = Image.new("RGB", (columns * plan.tile_width, rows * plan.tile_height))
    for index, frame in enumerate(frames):
        _, x, y = tile_position(index, plan)
        sheet.paste(frame, (x, y))
    buffer = io.BytesIO()
    sheet.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


def _timestamp(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    return f"{hours:02d}:{minutes:02d}:{millis // 1000:02d}.{millis % 1000:03d}"
