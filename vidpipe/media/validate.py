"""The validation gate: cheap checks that refuse hostile or broken uploads before any encode.

ffmpeg chooses its demuxer from a file's content, not its name: a text HLS playlist or a
concat list saved as ``clip.mp4`` makes it open other local files. So every ffmpeg and
ffprobe call here reads local files only, through an allow-list of real container
demuxers, and later calls force the demuxer the probe found. Header values are not
trusted: sizes are checked against limits and durations against the packets present.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vidpipe.media.errors import InvalidMediaError, ToolFailedError
from vidpipe.media.probe import VideoInfo, parse_probe, probe_json

REFUSED_FORMATS = {
    "hls": "the file is an HLS playlist",
    "concat": "the file is an ffmpeg concat list",
    "image2": "the file is an image sequence pattern",
    "tty": "the file is text",
    "webvtt": "the file is a subtitle file",
    "srt": "the file is a subtitle file",
    "ass": "the file is a subtitle file",
    "sdp": "the file is a network stream description (SDP)",
}
MAX_ASPECT_RATIO = 10
_NOT_ON_WHITELIST = re.compile(r"^\[([a-z0-9_]+) @ 0x[0-9a-f]+\] Format not on whitelist")


def inspect_upload(path: Path, limits: Limits, *, ffprobe: str = "ffprobe", timeout: float = 60) -> VideoInfo:
    """Probe an upload and refuse it, with a reason a person understands, unless it is a usable video."""
    sniff(path)
    try:
        data = probe_json(path, ffprobe=ffprobe, timeout=timeout)
    except ToolFailedError as err:
        if err.retryable:
            raise
        raise InvalidMediaError(explain_probe_failure(err.stderr_tail), path=str(path), stderr_tail=err.stderr_tail)
    info = parse_probe(data, path=str(path))
    check_limits(data, info, path, limits)
    if not info.has_video:
        return info
    counted = probe_json(
        path,
        ffprobe=ffprobe,
        timeout=timeout,
        args=(
            "-f",
            info.demuxer,
            "-count_packets",
            "-select_streams",
            str(info.video_stream),
            "-show_entries",
            "stream=nb_read_packets",
        ),
    )
    packets = int(counted["streams"][0].get("nb_read_packets") or 0) if counted.get("streams") else 0
    check_packets(info, packets, path)
    return info


@dataclass(frozen=True)
class Limits:
    """What an upload may be. Defaults: 4K pixels, 120 fps, 4 hours, 20 GiB, 16 streams."""

    max_pixels: int = 8_294_400
    max_frame_rate: float = 120.0
    max_duration_seconds: float = 4 * 3600
    max_file_bytes: int = 20 * 2**30
    max_streams: int = 16


def sniff(path: Path) -> None:
    """Refuse empty files and text (playlists, concat lists, notes) before ffprobe sees them."""
    size = path.stat().st_size
    if size == 0:
        raise InvalidMediaError("not a video: the file is empty", path=str(path))
    head = path.open("rb").read(4096)
    if b"\0" in head:
        return
    try:
        text = head.decode("utf-8").lstrip("\ufeff").lstrip()
    except UnicodeDecodeError:
        return
    if text.startswith("#EXTM3U"):
        reason = "the file is an HLS playlist"
    elif text.startswith("ffconcat") or re.match(r"(?m)^\s*file\s+\S", text):
        reason = "the file is an ffmpeg concat list"
    elif text.startswith("YUV4MPEG2"):
        return
    else:
        reason = "the file is text"
    raise InvalidMediaError(f"not a video: {reason}", path=str(path))


def explain_probe_failure(stderr_tail: list[str]) -> str:
    """A person-readable reason from ffprobe's last words."""
    text = "\n".join(stderr_tail)
    for line in stderr_tail:
        match = _NOT_ON_WHITELIST.match(line)
        if match:
            fmt = match.group(1)
            if fmt.endswith("_pipe"):
                return f"not a video: the file is a still image ({fmt.removesuffix('_pipe')})"
            return "not a video: " + REFUSED_FORMATS.get(fmt, f"the {fmt} format is not accepted")
    if "moov atom not found" in text:
        return "the file is incomplete: its MP4 index (moov box) is missing, so the upload was probably cut short"
    if "Invalid data found when processing input" in text:
        return "not a video: ffprobe found no media it can read in the file"
    return "not a readable video: ffprobe could not parse the file"


def check_limits(data: dict, info: VideoInfo, path: Path, limits: Limits) -> None:
    """Refuse what exceeds the configured limits, judging by the header's own claims."""
    streams = data.get("streams", [])
    if len(streams) > limits.max_streams:
        raise InvalidMediaError(f"{len(streams)} streams exceed the limit of {limits.max_streams}", path=str(path))
    if info.size_bytes > limits.max_file_bytes:
        raise InvalidMediaError(
            f"{_size(info.size_bytes)} exceeds the {_size(limits.max_file_bytes)} file size limit", path=str(path)
        )
    if info.width * info.height > limits.max_pixels:
        raise InvalidMediaError(
            f"{info.width}×{info.height} exceeds the {limits.max_pixels:,}-pixel limit", path=str(path)
        )
    if info.has_video and max(info.display_width, info.display_height) > MAX_ASPECT_RATIO * info.short_side:
        raise InvalidMediaError(
            f"a {info.display_width}×{info.display_height} picture (stored {info.width}×{info.height} with pixel "
            f"aspect ratio {info.sample_aspect_ratio}) is more elongated than {MAX_ASPECT_RATIO}:1",
            path=str(path),
        )
    if info.frame_rate > limits.max_frame_rate:
        raise InvalidMediaError(
            f"{float(info.frame_rate):g} frames per second exceeds the limit of {limits.max_frame_rate:g}",
            path=str(path),
        )
    if info.duration > limits.max_duration_seconds:
        raise InvalidMediaError(
            f"{clock(info.duration)} exceeds the {clock(limits.max_duration_seconds)} duration limit", path=str(path)
        )


def check_packets(info: VideoInfo, video_packets: int, path: Path) -> None:
    """Cross-check the header's duration against the video packets actually in the file.

    A truncated upload keeps its header, and a hostile one can claim hours it does not
    hold: either way far fewer frames are present than the header promises.
    """
    rate = float(info.avg_frame_rate or info.frame_rate or 0)  # the average: right for variable-rate video
    expected = info.duration * rate
    if video_packets == 0:
        raise InvalidMediaError("the file holds no video frames", path=str(path))
    if expected and video_packets < 0.9 * expected - 2:
        present = video_packets / rate
        raise InvalidMediaError(
            f"the file holds {present:.1f} s of video but its header claims {clock(info.duration)} "
            "(truncated or corrupt upload)",
            path=str(path),
        )


def _size(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def clock(seconds: float) -> str:
    """``3725.4`` → ``"01:02:05"``."""
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
