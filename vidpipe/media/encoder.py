"""One ffmpeg process for the whole ladder: decode once, split, scale and encode per rung."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from vidpipe.media.files import fsync_dir, publish, temporary_sibling
from vidpipe.media.ladder import KEYFRAME_INTERVAL_SECONDS, PlannedRendition, Rung
from vidpipe.media.probe import VideoInfo
from vidpipe.media.tools import run_tool

GLOBAL_ARGS = ("-hide_banner", "-nostdin", "-y", "-loglevel", "warning", "-nostats", "-progress", "pipe:1")


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
    argv: list[str]
    temporary_outputs: dict[str, Path]
    final_outputs: dict[str, Path]


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
) -> EncodeCommand:
    """Build the single ffmpeg command that writes every planned rendition.

    ffmpeg's default autorotation turns the decoded picture upright before the split,
    and every branch scales to square pixels, so outputs need no rotation metadata.
    """
    if not plans:
        raise ValueError("nothing to encode")
    stream = ffmpeg.input(os.fspath(source))
    video = stream[f"{info.video_stream}"]
    max_rate = plans[0].frame_rate
    if info.frame_rate != max_rate:
        video = video.filter("fps", str(max_rate))
    branches = video.filter_multi_output("split", len(plans)) if len(plans) > 1 else None
    outputs = []
    temporary, final = {}, {}
    for index, plan in enumerate(plans):
        branch = branches[index] if branches is not None else video
        picture = branch.filter("scale", plan.width, plan.height).filter("setsar", 1).filter("format", "yuv420p")
        final[plan.rung.name] = out_dir / output_filename(plan.rung)
        temporary[plan.rung.name] = temporary_sibling(final[plan.rung.name])
        inputs = [picture]
        if plan.has_audio and info.audio_stream is not None:
            inputs.append(stream[f"{info.audio_stream}"])
        outputs.append(
            ffmpeg.output(*inputs, os.fspath(temporary[plan.rung.name]), **_output_options(plan, threads))
        )
    argv = [ffmpeg_bin, *GLOBAL_ARGS, *ffmpeg.merge_outputs(*outputs).get_args()]
    return EncodeCommand(argv=argv, temporary_outputs=temporary, final_outputs=final)


def _output_options(plan: PlannedRendition, threads: int) -> dict[str, object]:
    rung, fmt = plan.rung, plan.rung.format
    keyint = plan.keyframe_interval_frames
    options: dict[str, object] = {
        "f": fmt.container,
        "c:v": fmt.video_encoder,
        **fmt.video_options,
        "crf": rung.crf,
        **_bitrate_cap(rung),
        "g": keyint,
        "keyint_min": keyint,
        "force_key_frames": f"expr:gte(t,n_forced*{KEYFRAME_INTERVAL_SECONDS})",
        "map_metadata": -1,
        "map_chapters": -1,
        **fmt.muxer_options,
    }
    if threads:
        options["threads"] = threads
    if plan.has_audio:
        options.update({"c:a": fmt.audio_encoder, "b:a": f"{rung.audio_kbps}k", **fmt.audio_options})
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
    on_progress: Callable[[Progress], None] | None = None,
    subject: str | None = None,
) -> dict[str, Path]:
    """Run the command; publish every output only if ffmpeg succeeded, else leave none."""
    parser = _ProgressParser(duration, on_progress)
    try:
        run_tool(command.argv, timeout=timeout, on_stdout_line=parser.feed, subject=subject)
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

    def feed(self, line: str) -> None:
        key, _, value = line.partition("=")
        self.values[key.strip()] = value.strip()
        if key.strip() != "progress" or self.callback is None:
            return
        out_time_us = self.values.get("out_time_us", "")
        speed = self.values.get("speed", "").rstrip("x")
        self.callback(
            Progress(
                seconds_done=int(out_time_us) / 1e6 if out_time_us.lstrip("-").isdigit() else 0.0,
                seconds_total=self.duration,
                speed=float(speed) if speed.replace(".", "", 1).isdigit() else None,
                finished=value.strip() == "end",
            )
        )
