"""Thumbnails of the first decoded frame, upright and in square pixels, written with Pillow."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vidpipe.media.errors import ToolFailedError
from vidpipe.media.ffmpeg_calls import DEFAULT_TOOLS, Tools, run_tool
from vidpipe.media.files import write_atomically
from vidpipe.media.probe import VideoInfo, probe_json

THUMBNAIL_WIDTHS = (1280, 640, 320)
THUMBNAIL_FORMATS = {
    "jpeg": ("jpg", {"quality": 85, "optimize": True, "progressive": True}),
    "webp": ("webp", {"quality": 80, "method": 4}),
}
PREVIEW_WIDTH = 160
WAVEFORM_SIZE = "1280x360"
WAVEFORM_COLOUR = "0x2563eb"
FIRST_FRAME_PACKETS = 16
"""How many of the video stream's first packets decoding its first frame may read: the frame's own, and
those a decoder takes in before it lets a reordered frame out."""


@dataclass(frozen=True)
class ThumbnailFile:
    file: str
    """Its name in the folder it was written to."""
    format: str
    width: int
    height: int


def first_frame_command(source: Path, info: VideoInfo, tools: Tools = DEFAULT_TOOLS) -> list[str]:
    """ffmpeg writes the first decoded frame as one PNG on stdout, and then stops.

    Autorotation makes the frame upright; scaling by the sample aspect ratio makes pixels
    square. An audio-only upload gets a picture of its waveform instead.
    """
    stream = tools.input(source, info.demuxer)
    if info.has_video:
        picture = stream[f"{info.video_stream}"]
        if info.sample_aspect_ratio != 1:
            picture = picture.filter("scale", "trunc(iw*sar/2)*2", "ih").filter("setsar", 1)
    else:
        picture = stream[f"{info.audio_stream}"].filter(
            "showwavespic", s=WAVEFORM_SIZE, colors=WAVEFORM_COLOUR, scale="sqrt", draw="full"
        )
    output = picture.output("pipe:1", vframes=1, f="image2pipe", vcodec="png")
    return [tools.ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", *output.get_args()]


def first_frame_byte_ranges(source: Path, info: VideoInfo, tools: Tools = DEFAULT_TOOLS) -> list[range] | None:
    """Where in ``source`` the packets that decoding its first frame reads lie (the first
    ``FIRST_FRAME_PACKETS`` of its video stream, as the container's index places them); None when
    ffprobe cannot tell: an audio-only file, or an index it cannot read."""
    if info.video_stream is None:
        return None
    packets = ("-select_streams", str(info.video_stream), "-read_intervals", f"%+#{FIRST_FRAME_PACKETS}")
    try:
        data = probe_json(source, tools, (*packets, "-show_entries", "packet=pos,size"))
    except (ToolFailedError, ValueError):
        return None
    ranges = []
    for packet in data.get("packets", []):
        pos, size = str(packet.get("pos")), str(packet.get("size"))
        if not (pos.isdigit() and size.isdigit()):
            return None
        ranges.append(range(int(pos), int(pos) + int(size)))
    return ranges or None


def read_first_frame(source: Path, info: VideoInfo, tools: Tools = DEFAULT_TOOLS) -> Image.Image:
    argv = first_frame_command(source, info, tools)
    png = run_tool(argv, timeout=tools.probe_timeout_seconds, subject=os.fspath(source))
    image = Image.open(io.BytesIO(png))
    image.load()
    return image.convert("RGB")


def write_thumbnails(
    frame: Image.Image, out_dir: Path, widths: tuple[int, ...] = THUMBNAIL_WIDTHS
) -> list[ThumbnailFile]:
    """Write the frame at each width (never wider than the frame) in every format."""
    fitting = sorted({min(width, frame.width) for width in widths}, reverse=True)
    written = []
    for width in fitting:
        resized = _resize_to_width(frame, width)
        for fmt, (extension, options) in THUMBNAIL_FORMATS.items():
            name = f"thumb_{width}.{extension}"
            write_atomically(out_dir / name, _encode(resized, fmt, options))
            written.append(ThumbnailFile(file=name, format=fmt, width=resized.width, height=resized.height))
    return written


def preview_data_uri(frame: Image.Image, width: int = PREVIEW_WIDTH) -> str:
    """A tiny JPEG as a ``data:`` URI, small enough to live in the event log."""
    data = _encode(_resize_to_width(frame, min(width, frame.width)), "jpeg", {"quality": 70})
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def _resize_to_width(frame: Image.Image, width: int) -> Image.Image:
    if width == frame.width:
        return frame
    height = max(1, round(frame.height * width / frame.width))
    return frame.resize((width, height), Image.Resampling.LANCZOS)


def _encode(image: Image.Image, fmt: str, options: Mapping[str, object]) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt.upper(), **options)
    return buffer.getvalue()
