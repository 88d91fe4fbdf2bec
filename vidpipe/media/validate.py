"""The validation gate: cheap checks that refuse hostile or broken uploads before any encode.

ffmpeg chooses its demuxer from a file's content, not its name: a text HLS playlist or a
concat list saved as ``clip.mp4`` makes it open other local files. So every ffmpeg and
ffprobe call here reads local files only, through an allow-list of real container
demuxers, and later calls force the demuxer the probe found. Header values are not
trusted: sizes are checked against limits and durations against the packets present.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

from vidpipe.media.errors import InvalidMediaError, ToolFailedError
from vidpipe.media.ffmpeg_calls import DEFAULT_TOOLS, Limits, Tools, run_tool
from vidpipe.media.probe import Json, VideoInfo, format_tag, has_decoder, parse_probe, probe_json

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
MAX_PLAUSIBLE_FRAME_RATE = 240
UNSUPPORTED_CODECS = {"vvc1": "vvc (H.266)", "vvi1": "vvc (H.266)", "av02": "AV2", "evc1": "EVC (MPEG-5)"}
"""Sample-entry tags of formats newer than this ffmpeg, by name."""
_OVER_PIXEL_LIMIT = re.compile(r"Picture size (\d+)x(\d+) exceeds specified max pixel count (\d+)")
_NOT_ON_WHITELIST = re.compile(r"^\[([a-z0-9_]+) @ 0x[0-9a-f]+\] Format not on whitelist")


def validate_upload(path: Path, tools: Tools = DEFAULT_TOOLS) -> VideoInfo:
    """Probe an upload and refuse it, with a reason a person understands, unless it is a usable video.

    The header is read first and its sizes checked against the limits; then the main stream
    (video, else audio) is read packet by packet, and its duration and frame rate are what
    the packets say whenever the header's claims are implausible (a container's time base
    taken for a frame rate, a fragmented MP4's "unknown" duration). A file whose data ends
    before its index or its demuxer says it should is refused as truncated.
    """
    sniff(path)
    try:
        data = probe_json(path, tools)
    except ToolFailedError as err:
        if err.retryable:
            raise
        raise InvalidMediaError(
            explain_probe_failure(err.stderr_tail), path=str(path), stderr_tail=err.stderr_tail
        ) from err
    refuse_undecodable_video(data, path)
    info = parse_probe(data, path=str(path))
    check_size_limits(data, info, path, tools.limits)
    main = info.video_stream if info.has_video else info.audio_stream
    content = read_stream_content(path, info, main, tools)
    check_complete(info, content, indexed_packets(data, main), path)
    info = believe_the_packets(info, content)
    check_time_limits(info, path, tools.limits)
    return info


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
    oversized = _OVER_PIXEL_LIMIT.search(text)
    if oversized:
        width, height, limit = (int(group) for group in oversized.groups())
        return f"{width}×{height} exceeds the {limit:,}-pixel limit"
    if "moov atom not found" in text:
        return "the file is incomplete: its MP4 index (moov box) is missing, so the upload was probably cut short"
    if "Invalid data found when processing input" in text:
        return "not a video: ffprobe found no media it can read in the file"
    return "not a readable video: ffprobe could not parse the file"


def check_size_limits(data: Json, info: VideoInfo, path: Path, limits: Limits) -> None:
    """Refuse what exceeds the size limits, judging by the header's own claims (``-max_pixels`` holds
    the decoder to the same pixel limit whatever the header said)."""
    streams = data.get("streams", [])
    if len(streams) > limits.max_streams:
        raise InvalidMediaError(f"{len(streams)} streams exceed the limit of {limits.max_streams}", path=str(path))
    if info.size_bytes > limits.max_file_bytes:
        raise InvalidMediaError(
            f"{_bytes_for_people(info.size_bytes)} exceeds the {_bytes_for_people(limits.max_file_bytes)} file size limit",
            path=str(path),
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


def check_time_limits(info: VideoInfo, path: Path, limits: Limits) -> None:
    """Refuse what exceeds the frame rate and duration limits, as the packets tell them."""
    if info.frame_rate > limits.max_frame_rate:
        raise InvalidMediaError(
            f"{float(info.frame_rate):g} frames per second exceeds the limit of {limits.max_frame_rate:g}",
            path=str(path),
        )
    if info.duration > limits.max_duration_seconds:
        raise InvalidMediaError(
            f"{clock(info.duration)} exceeds the {clock(limits.max_duration_seconds)} duration limit", path=str(path)
        )


@dataclass(frozen=True)
class StreamContent:
    """What one stream of a file really holds, read packet by packet."""

    packets: int
    start: float | None
    last: float | None
    """The last packet's timestamp."""
    end: float | None
    """The last packet's timestamp plus its duration."""
    cut_short: bool
    """The demuxer said the data stops before the file's structure says it should."""

    @property
    def seconds(self) -> float:
        return self.end - self.start if self.start is not None and self.end is not None else 0.0

    @property
    def frame_rate(self) -> Fraction:
        """Packets per second from the intervals between them; for video, frames per second."""
        if self.packets < 2 or self.start is None or self.last is None or self.last <= self.start:
            return Fraction(0)
        return Fraction((self.packets - 1) / (self.last - self.start)).limit_denominator(1001)


# What demuxers say when a file's data stops early: Matroska, MP4/MOV, and the generic reader.
TRUNCATION_WARNINGS = ("File ended prematurely", "partial file", "truncated")


def read_stream_content(path: Path, info: VideoInfo, stream: int | None, tools: Tools) -> StreamContent:
    """Read every packet of ``stream`` (through the input guards, with the demuxer the probe found)."""
    packets, start, last, end, cut_short = 0, None, None, None, False

    def on_packet(line: str) -> None:
        nonlocal packets, start, last, end
        pts, dts, duration = ([*line.split(","), "", ""])[:3]
        stamp = _seconds(pts) if _seconds(pts) is not None else _seconds(dts)
        packets += 1
        if stamp is not None:
            start = stamp if start is None else min(start, stamp)
            last = stamp if last is None else max(last, stamp)
            end = max(end or stamp, stamp + (_seconds(duration) or 0.0))

    def on_warning(line: str) -> None:
        nonlocal cut_short
        cut_short = cut_short or any(warning in line for warning in TRUNCATION_WARNINGS)

    argv = tools.ffprobe_argv(
        path, "-f", info.demuxer, "-select_streams", str(stream),
        "-show_entries", "packet=pts_time,dts_time,duration_time", "-of", "csv=p=0", loglevel="warning",
    )  # fmt: skip
    run_tool(
        argv,
        timeout=tools.probe_timeout_seconds,
        on_stdout_line=on_packet,
        on_stderr_line=on_warning,
        subject=str(path),
    )
    return StreamContent(packets=packets, start=start, last=last, end=end, cut_short=cut_short)


def indexed_packets(data: Json, stream: int | None) -> int:
    """How many packets the container's index lists for ``stream`` (MP4/MOV sample tables); 0 if unknown."""
    for entry in data.get("streams", []):
        if entry.get("index") == stream and str(entry.get("nb_frames", "")).isdigit():
            return int(entry["nb_frames"])
    return 0


def check_complete(info: VideoInfo, content: StreamContent, indexed: int, path: Path) -> None:
    """Refuse a file whose data stops early: a truncated upload keeps its header and index.

    Truncated means the demuxer found the data cut short, or far fewer packets than the
    index lists (10 % and two packets of slack). A header that merely claims more time than
    the packets hold, in a file that is complete, is not believed (``believe_the_packets``).
    """
    kind = "video" if info.has_video else "audio"
    if content.packets == 0:
        raise InvalidMediaError(f"the file holds no {kind} {'frames' if info.has_video else 'data'}", path=str(path))
    if content.cut_short or (indexed and content.packets < 0.9 * indexed - 2):
        raise InvalidMediaError(
            f"the file holds {content.seconds:.1f} s of {kind} but its header claims {clock(info.duration)} "
            "(truncated or corrupt upload)",
            path=str(path),
        )


def believe_the_packets(info: VideoInfo, content: StreamContent) -> VideoInfo:
    """``info`` with the duration and average frame rate the packets show, where the header's are implausible.

    The header's duration stands unless it is missing or claims far more than the packets
    hold (a fragmented MP4's "unknown" duration, 2**32 ticks, reads as 39 hours). A video's
    average frame rate stands unless it is missing, above 240, above the nominal rate
    (Matroska and FLV with millisecond timestamps report 1000 frames per second) or 1.5
    times off the rate the packets arrive at (a Matroska default duration of 1/30 s over
    3 frames a second).
    """
    duration = info.duration
    if content.seconds > 0 and (duration <= 0 or duration > 1.5 * content.seconds + 1):
        duration = content.seconds
    average, nominal, measured = info.avg_frame_rate, info.nominal_frame_rate, content.frame_rate
    implausible = (
        not average
        or average > MAX_PLAUSIBLE_FRAME_RATE
        or (nominal and average > nominal * Fraction(101, 100))
        or (measured and not measured * 2 / 3 <= average <= measured * 3 / 2)
    )
    if info.has_video and implausible and measured:
        average = measured
    return replace(info, duration=duration, avg_frame_rate=average)


def refuse_undecodable_video(data: Json, path: Path) -> None:
    """Refuse a file whose every video stream is in a format this ffmpeg cannot decode, saying which."""
    video = [s for s in data.get("streams", []) if s.get("codec_type") == "video"]
    if video and not any(has_decoder(s) for s in video):
        tag = format_tag(video[0])
        name = UNSUPPORTED_CODECS.get(tag, tag)
        raise InvalidMediaError(f"unsupported video codec: {name} — no decoder available", path=str(path))


def _seconds(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _bytes_for_people(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def clock(seconds: float) -> str:
    """``3725.4`` → ``"01:02:05"``."""
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
