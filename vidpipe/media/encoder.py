"""One ffmpeg process for the whole ladder: decode once, split, scale and encode per rung."""

from __future__ import annotations

import os
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import ffmpeg

from vidpipe.media.errors import InvalidMediaError, StorageFullError, ToolFailedError
from vidpipe.media.ffmpeg_calls import DEFAULT_TOOLS, STDERR_TAIL_LINES, Node, Tools, run_tool
from vidpipe.media.files import fsync_dir, publish, temporary_sibling
from vidpipe.media.ladder import KEYFRAME_INTERVAL_SECONDS, PlannedRendition, Rung
from vidpipe.media.priority import CpuPriority
from vidpipe.media.probe import VideoInfo

# No -xerror: the encode decodes past a damaged unit (the gate has refused what is truncated or
# has no decoder), and ``DecodeWatcher`` counts what was lost. "repeat" keeps ffmpeg from folding
# a repeated message into "Last message repeated N times"; "level" tags each line with its level.
GLOBAL_ARGS = ("-hide_banner", "-nostdin", "-y", "-loglevel", "repeat+level+warning", "-nostats", "-progress", "pipe:1")
DISK_FULL_MARKER = "No space left on device"
SDR_BT709_TAGS = {"color_primaries": "bt709", "color_trc": "bt709", "colorspace": "bt709"}
CODEC_NAMES = {"h264": "H.264", "hevc": "HEVC", "vp9": "VP9", "vp8": "VP8", "av1": "AV1", "mpeg4": "MPEG-4"}


@dataclass(frozen=True)
class Progress:
    """How far an encode has got, in seconds of output, and how fast (× real time)."""

    seconds_done: float
    seconds_total: float
    speed: float | None
    finished: bool

    @property
    def fraction(self) -> float:
        if self.finished:
            return 1.0
        return min(1.0, self.seconds_done / self.seconds_total) if self.seconds_total > 0 else 0.0


@dataclass(frozen=True)
class EncodeCommand:
    source: Path
    argv: list[str]
    temporary_outputs: dict[str, Path]
    final_outputs: dict[str, Path]

    def argv_for_people(self, source_name: str, outputs_folder: str) -> list[str]:
        """The command as it can be published: the program's name, the source as ``source_name`` and
        each output as ``outputs_folder/<its final name>``, so no server path shows."""
        names = {os.fspath(self.source): source_name}
        names.update(
            {
                os.fspath(temporary): f"{outputs_folder}/{self.final_outputs[name].name}"
                for name, temporary in self.temporary_outputs.items()
            }
        )
        return [os.path.basename(self.argv[0]), *(names.get(arg, arg) for arg in self.argv[1:])]


@dataclass(frozen=True)
class DecodeReport:
    """What decoding the source met: decoder error messages, and video frames that came out
    damaged (concealed by the decoder) or not at all."""

    expected_frames: int
    """The source's duration times its frame rate; 0 for audio."""
    errors: int = 0
    damaged_frames: int = 0
    lost_frames: int = 0
    lost_audio_packets: int = 0

    @property
    def clean(self) -> bool:
        return not (self.errors or self.damaged_frames or self.lost_frames or self.lost_audio_packets)

    @property
    def lost_anything(self) -> bool:
        """Some frame or audio packet came out damaged or not at all (not merely an error message)."""
        return bool(self.damaged_frames or self.lost_frames or self.lost_audio_packets)

    @property
    def bad_fraction(self) -> float:
        """The share of the expected video frames that came out damaged or not at all."""
        return (self.damaged_frames + self.lost_frames) / self.expected_frames if self.expected_frames else 0.0

    def summary(self) -> str:
        """``"decoded with 5 errors, 1 frame lost"`` and so on, for people."""
        if self.clean:
            return "decoded without errors"
        counts = [_count(self.errors, "error"), _count(self.lost_frames, "frame") + " lost"]
        if self.damaged_frames:
            counts.append(_count(self.damaged_frames, "frame") + " damaged")
        if self.lost_audio_packets:
            counts.append(_count(self.lost_audio_packets, "audio packet") + " lost")
        return f"decoded with {', '.join(counts)}"

    def counts(self) -> dict[str, int]:
        return {
            "decode_errors": self.errors,
            "frames_damaged": self.damaged_frames,
            "frames_lost": self.lost_frames,
            "audio_packets_lost": self.lost_audio_packets,
        }

    def as_metadata(self) -> dict[str, int | str]:
        return {"decoding": self.summary(), **self.counts()}


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


_DAMAGED_FRAME = re.compile(r": corrupt decoded frame in stream (\d+)$")
_LOST_PACKET = re.compile(r"\[error\] Error while decoding stream #\d+:(\d+):")


class DecodeWatcher:
    """Counts, from ffmpeg's ``-loglevel repeat+level+…`` stderr, what decoding one source met."""

    def __init__(self, info: VideoInfo):
        self.video_stream = info.video_stream
        expected = round(info.duration * float(info.frame_rate)) if info.has_video else 0
        self.report = DecodeReport(expected_frames=expected)
        self.error_lines: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

    def feed(self, line: str) -> None:
        r = self.report
        damaged, lost = _DAMAGED_FRAME.search(line), _LOST_PACKET.search(line)
        if "[error]" in line:
            r = replace(r, errors=r.errors + 1)
            self.error_lines.append(line)
        if damaged and int(damaged.group(1)) == self.video_stream:
            r = replace(r, damaged_frames=r.damaged_frames + 1)
        elif lost and int(lost.group(1)) == self.video_stream:
            r = replace(r, lost_frames=r.lost_frames + 1)
        elif lost:
            r = replace(r, lost_audio_packets=r.lost_audio_packets + 1)
        self.report = r


@dataclass(frozen=True)
class Encoded:
    outputs: dict[str, Path]
    """Rung name → its published file."""
    decoding: DecodeReport


def condition_picture(video: Node, info: VideoInfo) -> Node:
    """Deinterlace interlaced sources; tone-map HDR (PQ/HLG) to SDR BT.709 for 8-bit rungs."""
    if info.is_interlaced:
        video = video.filter("bwdif", mode="send_frame", parity="auto", deint="all")
    if info.is_hdr:
        video = (
            video.filter("zscale", t="linear", npl=100)
            .filter("format", "gbrpf32le")
            .filter("zscale", p="bt709")
            .filter("tonemap", tonemap="hable", desat=0)
            .filter("zscale", t="bt709", m="bt709", r="tv")
        )
    return video


def output_filename(rung: Rung) -> str:
    return f"{rung.name}.{rung.format.extension}"


def build_encode_command(
    source: Path,
    info: VideoInfo,
    plans: list[PlannedRendition],
    out_dir: Path,
    tools: Tools = DEFAULT_TOOLS,
) -> EncodeCommand:
    """Build the single ffmpeg command that writes every planned rendition.

    ffmpeg's default autorotation turns the decoded picture upright before the split,
    and every branch scales to square pixels, so outputs need no rotation metadata.
    Before the split the picture is deinterlaced and tone-mapped when needed and brought
    to a constant frame rate, once for all rungs. ffmpeg itself stops (exit status 69)
    once more than ``Limits.max_damaged_fraction`` of all decode attempts, audio included, fail.
    """
    if not plans:
        raise ValueError("nothing to encode")
    stream = tools.input(source, info.demuxer)
    video_plans = [p for p in plans if not p.rung.is_audio_only]
    pictures = _scaled_pictures(stream, info, video_plans) if video_plans else {}
    outputs = []
    temporary, final = {}, {}
    for plan in plans:
        final[plan.rung.name] = out_dir / output_filename(plan.rung)
        temporary[plan.rung.name] = temporary_sibling(final[plan.rung.name])
        inputs = [pictures[plan.rung.name]] if plan.rung.name in pictures else []
        if plan.has_audio and info.audio_stream is not None:
            inputs.append(stream[f"{info.audio_stream}"])
        options = _output_options(plan, tools.threads, tone_mapped=info.is_hdr)
        outputs.append(ffmpeg.output(*inputs, os.fspath(temporary[plan.rung.name]), **options))
    argv = [
        tools.ffmpeg, *GLOBAL_ARGS, "-max_error_rate", f"{tools.limits.max_damaged_fraction:g}",
        *ffmpeg.merge_outputs(*outputs).get_args(),
    ]  # fmt: skip
    return EncodeCommand(source=source, argv=argv, temporary_outputs=temporary, final_outputs=final)


def _scaled_pictures(stream: Node, info: VideoInfo, plans: list[PlannedRendition]) -> dict[str, Node]:
    """Rung name → its picture: conditioned once, then scaled down the ladder one size at a time.

    Each distinct size is scaled once (rungs of two formats share it), from the next larger
    size rather than from the source: for a 1080p source's ladder, scaling takes ~1.4 s of
    CPU per 10 s of video instead of ~5.6 s, and each rung's SSIM against the source moves
    by 0.0005 at most (benchmarks/run.py).
    """
    picture = condition_picture(stream[f"{info.video_stream}"], info).filter("fps", str(plans[0].frame_rate))
    sizes = sorted({(p.width, p.height) for p in plans}, key=lambda size: size[0] * size[1], reverse=True)
    pictures = {}
    for index, (width, height) in enumerate(sizes):
        # The first scale turns a tone-mapped (RGB) picture into YUV: with BT.709 weights, as the
        # outputs are tagged (swscale's default would be BT.601's), clipped to the nominal range.
        matrix = {"out_color_matrix": "bt709", "out_range": "tv"} if info.is_hdr and index == 0 else {}
        picture = picture.filter("scale", width, height, **matrix).filter("setsar", 1).filter("format", "yuv420p")
        users = [plan.rung.name for plan in plans if (plan.width, plan.height) == (width, height)]
        has_smaller = index + 1 < len(sizes)
        copies = len(users) + has_smaller
        branches = picture.filter_multi_output("split", copies) if copies > 1 else None
        for copy, name in enumerate(users):
            pictures[name] = branches[copy] if branches is not None else picture
        if has_smaller:  # then there are at least two copies, so a split
            assert branches is not None
            picture = branches[len(users)]
    return pictures


def _output_options(plan: PlannedRendition, threads: int, *, tone_mapped: bool) -> dict[str, object]:
    rung, fmt = plan.rung, plan.rung.format
    options: dict[str, object] = {"f": fmt.container, "map_metadata": -1, "map_chapters": -1, **fmt.muxer_options}
    if plan.has_audio:
        options.update({"c:a": fmt.audio_encoder, "b:a": f"{rung.audio_kbps}k", **fmt.audio_options})
    if rung.is_audio_only:
        return options
    keyint = plan.keyframe_interval_frames
    options |= {
        "c:v": fmt.video_encoder,
        **fmt.video_options,
        "crf": rung.crf,
        **_bitrate_cap(rung),
        "g": keyint,
        "keyint_min": keyint,
        "force_key_frames": f"expr:gte(t,n_forced*{KEYFRAME_INTERVAL_SECONDS})",
        **(SDR_BT709_TAGS if tone_mapped else {}),
    }
    if threads:
        options["threads"] = threads
    return options


def _bitrate_cap(rung: Rung) -> dict[str, str]:
    """Quality-targeted (CRF) encoding with a ceiling so a player's bandwidth estimate holds."""
    if rung.format.video_encoder == "libvpx-vp9":
        return {"b:v": f"{rung.max_video_kbps}k"}
    return {"maxrate": f"{rung.max_video_kbps}k", "bufsize": f"{2 * rung.max_video_kbps}k"}


def run_encode(
    command: EncodeCommand,
    info: VideoInfo,
    tools: Tools = DEFAULT_TOOLS,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    subject: str | None = None,
    priority: CpuPriority | None = None,
    stop: threading.Event | None = None,
) -> Encoded:
    """Run the command; publish every output only if ffmpeg succeeded and enough decoded, else leave none.
    ``priority`` and ``stop`` go to ``run_tool``.

    Damaged units are decoded past and counted (``DecodeReport``). A source with more than
    ``Limits.max_damaged_fraction`` of its video frames damaged or lost, or that ffmpeg gave up on,
    is refused with a permanent ``InvalidMediaError`` saying how much.
    """
    parser = _ProgressParser(info.duration, on_progress)
    watcher = DecodeWatcher(info)
    codec = CODEC_NAMES.get(info.video_codec or "", info.video_codec or info.audio_codec or "media")
    try:
        try:
            run_tool(
                command.argv,
                timeout=tools.encode_timeout_seconds,
                on_stdout_line=parser.feed,
                on_stderr_line=watcher.feed,
                subject=subject,
                priority=priority,
                stop=stop,
            )
        except ToolFailedError as err:
            if any(DISK_FULL_MARKER in line for line in err.stderr_tail):
                raise StorageFullError(
                    "no space left in storage while writing the renditions",
                    path=subject,
                    stderr_tail=err.stderr_tail,
                ) from err
            if err.retryable or not watcher.report.lost_anything:
                raise
            raise InvalidMediaError(
                f"corrupt {codec} data: ffmpeg gave up ({watcher.report.summary()})",
                path=subject,
                stderr_tail=err.stderr_tail,
            ) from err
        decoding = watcher.report
        limit = tools.limits.max_damaged_fraction
        if decoding.bad_fraction > limit:
            raise InvalidMediaError(
                f"corrupt {codec} data: {decoding.damaged_frames + decoding.lost_frames} of "
                f"{decoding.expected_frames} frames damaged or lost (more than {limit:.0%} of the video)",
                path=subject,
                stderr_tail=list(watcher.error_lines),
            )
        for name, temporary in command.temporary_outputs.items():
            publish(temporary, command.final_outputs[name])
    finally:
        for temporary in command.temporary_outputs.values():
            temporary.unlink(missing_ok=True)
    if command.final_outputs:
        fsync_dir(next(iter(command.final_outputs.values())).parent)
    return Encoded(outputs=dict(command.final_outputs), decoding=decoding)


class _ProgressParser:
    """Reads ffmpeg's ``-progress`` key=value blocks; each ``progress=`` line ends one."""

    def __init__(self, duration: float, callback: Callable[[Progress], None] | None):
        self.duration = duration
        self.callback = callback
        self.values: dict[str, str] = {}
        self.seconds_done = 0.0

    def feed(self, line: str) -> None:
        key, _, value = line.partition("=")
        self.values[key.strip()] = value.strip()
        if key.strip() != "progress":
            return
        out_time_us = self.values.get("out_time_us", "")
        if out_time_us.isdigit():
            self.seconds_done = int(out_time_us) / 1e6
        if self.callback is None:
            return
        speed = self.values.get("speed", "").rstrip("x")
        self.callback(
            Progress(
                seconds_done=self.seconds_done,
                seconds_total=self.duration,
                speed=float(speed) if speed.replace(".", "", 1).isdigit() else None,
                finished=value.strip() == "end",
            )
        )
