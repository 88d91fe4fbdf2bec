"""One ffmpeg process for the whole ladder: decode once, split, scale and encode per rung."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from vidpipe.media.errors import InvalidMediaError, StorageFullError, ToolFailedError
from vidpipe.media.files import fsync_dir, publish, temporary_sibling
from vidpipe.media.ladder import KEYFRAME_INTERVAL_SECONDS, PlannedRendition, Rung
from vidpipe.media.probe import ALLOWED_DEMUXERS, VideoInfo
from vidpipe.media.tools import run_tool
from vidpipe.media.validate import Limits, clock

# -xerror: a decode error stops ffmpeg instead of being papered over (it exits 0 otherwise).
GLOBAL_ARGS = ("-hide_banner", "-nostdin", "-y", "-xerror", "-loglevel", "warning", "-nostats", "-progress", "pipe:1")
DISK_FULL_MARKER = "No space left on device"
_CORRUPTION_MARKERS = ("corrupt decoded frame", "corrupt input packet", "error while decoding", "Invalid NAL unit")
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

    def argv_relative_to(self, base: Path) -> list[str]:
        """The command as it can be published: the program's name, and the source and outputs
        relative to ``base`` (outputs under their final names), so no server path shows."""
        paths = {os.fspath(self.source): self.source}
        paths.update(
            {os.fspath(temporary): self.final_outputs[name] for name, temporary in self.temporary_outputs.items()}
        )
        return [
            os.path.basename(self.argv[0]),
            *(Path(os.path.relpath(paths[arg], base)).as_posix() if arg in paths else arg for arg in self.argv[1:]),
        ]


def guarded_input(source: Path, info: VideoInfo, max_pixels: int = Limits.max_pixels):
    """An ffmpeg-python input that reads only this local file, with the demuxer the probe found.

    ``max_pixels`` makes the decoder refuse frames larger than the limit, whatever the header said.
    """
    return ffmpeg.input(
        os.fspath(source),
        f=info.demuxer,
        protocol_whitelist="file",
        format_whitelist=",".join(ALLOWED_DEMUXERS),
        max_pixels=max_pixels,
    )


def condition_picture(video, info: VideoInfo):
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
    *,
    ffmpeg_bin: str = "ffmpeg",
    threads: int = 0,
    max_pixels: int = Limits.max_pixels,
) -> EncodeCommand:
    """Build the single ffmpeg command that writes every planned rendition.

    ffmpeg's default autorotation turns the decoded picture upright before the split,
    and every branch scales to square pixels, so outputs need no rotation metadata.
    Before the split the picture is deinterlaced and tone-mapped when needed and brought
    to a constant frame rate, once for all rungs.
    """
    if not plans:
        raise ValueError("nothing to encode")
    stream = guarded_input(source, info, max_pixels)
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
        options = _output_options(plan, threads, tone_mapped=info.is_hdr)
        outputs.append(ffmpeg.output(*inputs, os.fspath(temporary[plan.rung.name]), **options))
    argv = [ffmpeg_bin, *GLOBAL_ARGS, *ffmpeg.merge_outputs(*outputs).get_args()]
    return EncodeCommand(source=source, argv=argv, temporary_outputs=temporary, final_outputs=final)


def _scaled_pictures(stream, info: VideoInfo, plans: list[PlannedRendition]) -> dict[str, object]:
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
        picture = picture.filter("scale", width, height).filter("setsar", 1).filter("format", "yuv420p")
        users = [plan.rung.name for plan in plans if (plan.width, plan.height) == (width, height)]
        has_smaller = index + 1 < len(sizes)
        copies = len(users) + has_smaller
        branches = picture.filter_multi_output("split", copies) if copies > 1 else None
        for copy, name in enumerate(users):
            pictures[name] = branches[copy] if branches is not None else picture
        if has_smaller:  # then there are at least two copies, so a split
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
    *,
    duration: float,
    timeout: float,
    codec: str = "video",
    on_progress: Callable[[Progress], None] | None = None,
    subject: str | None = None,
) -> dict[str, Path]:
    """Run the command; publish every output only if ffmpeg succeeded, else leave none.

    A failure caused by corrupt input data becomes a permanent ``InvalidMediaError`` that
    says where in the video decoding broke.
    """
    parser = _ProgressParser(duration, on_progress)
    try:
        try:
            run_tool(command.argv, timeout=timeout, on_stdout_line=parser.feed, subject=subject)
        except ToolFailedError as err:
            if any(DISK_FULL_MARKER in line for line in err.stderr_tail):
                raise StorageFullError(
                    "no space left in storage while writing the renditions",
                    path=subject,
                    stderr_tail=err.stderr_tail,
                ) from err
            if err.retryable or not any(m in line for line in err.stderr_tail for m in _CORRUPTION_MARKERS):
                raise
            raise InvalidMediaError(
                f"corrupt {CODEC_NAMES.get(codec, codec)} data at {clock(parser.seconds_done)}",
                path=subject,
                stderr_tail=err.stderr_tail,
            ) from err
        for name, temporary in command.temporary_outputs.items():
            publish(temporary, command.final_outputs[name])
    finally:
        for temporary in command.temporary_outputs.values():
            temporary.unlink(missing_ok=True)
    if command.final_outputs:
        fsync_dir(next(iter(command.final_outputs.values())).parent)
    return dict(command.final_outputs)


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
