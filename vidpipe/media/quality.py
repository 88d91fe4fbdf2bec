"""What a published video is worth: each rung's SSIM and PSNR against the source, whether the rungs'
keyframes line up, and whether picture and sound last as long as the source and start together.

SSIM and PSNR come from ffmpeg's ``ssim`` and ``psnr`` filters (Debian's ffmpeg has no libvmaf), in
one ffmpeg run: the source is conditioned as the encode conditions it (deinterlaced, tone-mapped,
brought to the rung's frame rate), scaled to each rung's size (bicubic) and compared with that rung
frame by frame. Decoding is the cost (a 12 Mbit/s 1080p source alone decodes in a tenth of the
time its ladder encodes in), so a video longer than 12 s is compared over ``WINDOWS`` stretches of
one segment spread over it (``measurement_windows``), every frame of them, and a shorter one
whole: measuring stays a small share of the encode (benchmark S9); the benchmark's SSIM rows
compare every frame of the whole video beside it.

``SSIM_FLOOR`` is the one quality floor: a rung under it fails its check (the video is still
published, flagged; see ``defs/assets/publish.py``'s ``quality``).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import ffmpeg

from vidpipe.media.encoder import condition_picture
from vidpipe.media.ffmpeg_calls import DEFAULT_TOOLS, Tools, run_tool
from vidpipe.media.ladder import KEYFRAME_INTERVAL_SECONDS
from vidpipe.media.probe import VideoInfo, probe_json

SSIM_FLOOR = 0.95
"""The lowest SSIM (all planes, against the source scaled to the rung's size) a rung may have."""
WINDOWS = 3
COMPARE_EVERY = 7
"""Compare one frame in this many of a stretch (all are decoded; the comparisons run on one thread), from
the middle of each run of seven: a stretch starts with a keyframe, which encoders make better than the
frames around it and which the sample should not favour. Seven is a prime, so the sample does not line
up with other periodic better frames (libvpx's golden frames, every 10th, made a VP9 rung look 0.015
better than all its frames when every 10th frame was compared)."""
WINDOW_SECONDS = KEYFRAME_INTERVAL_SECONDS
"""Each compared stretch is one segment of every rung: it starts at a keyframe of each."""
KEYFRAME_TOLERANCE_SECONDS = 0.005
"""WebM keeps times in milliseconds: a keyframe at 2 s may read 2.001."""
SYNC_TOLERANCE_SECONDS = 0.05
"""How far apart the first video and audio timestamps, and each stream's end and the source's, may be."""


@dataclass(frozen=True)
class RungQuality:
    name: str
    width: int
    height: int
    ssim: float
    psnr: float
    frames_compared: int

    @property
    def passed(self) -> bool:
        return self.ssim >= SSIM_FLOOR


@dataclass(frozen=True)
class Timing:
    """A rendition's streams as its packets show them."""

    name: str
    keyframes: tuple[float, ...]
    """Presentation times of its video keyframes from its first video frame (empty: no video)."""
    video_start: float | None
    audio_start: float | None
    video_duration: float | None
    audio_duration: float | None

    @property
    def av_offset(self) -> float | None:
        """How much later the audio starts than the picture (None without one of them)."""
        if self.video_start is None or self.audio_start is None:
            return None
        return round(self.audio_start - self.video_start, 4)


@dataclass(frozen=True)
class QualityReport:
    rungs: tuple[RungQuality, ...]
    timings: tuple[Timing, ...]
    keyframe_problems: tuple[str, ...]
    sync_problems: tuple[str, ...]

    def below_floor(self) -> list[RungQuality]:
        return [rung for rung in self.rungs if not rung.passed]


@dataclass(frozen=True)
class Rendition:
    """A rendition to measure: its rung's name, local file and ffprobe description."""

    name: str
    path: Path
    info: VideoInfo


def quality_report(
    source: Path, info: VideoInfo, renditions: list[Rendition], out_dir: Path, tools: Tools = DEFAULT_TOOLS
) -> QualityReport:
    """Everything this module measures, for one video's renditions. The renditions' packets are read
    (``rendition_timing``: ffprobe, mostly starting up) while ffmpeg compares pictures."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        compared = pool.submit(measure_quality, source, info, renditions, out_dir, tools)
        timings = list(pool.map(lambda rendition: rendition_timing(rendition, tools), renditions))
        rungs = compared.result()
    return QualityReport(
        rungs=tuple(rungs),
        timings=tuple(timings),
        keyframe_problems=tuple(keyframe_problems(timings)),
        sync_problems=tuple(sync_problems(timings, info.duration)),
    )


def measure_quality(
    source: Path, info: VideoInfo, renditions: list[Rendition], out_dir: Path, tools: Tools = DEFAULT_TOOLS
) -> list[RungQuality]:
    """SSIM and PSNR of each video rendition against ``source`` over ``measurement_windows``, in one ffmpeg
    run; ``out_dir`` (empty) receives the filters' per-frame statistics."""
    videos = [r for r in renditions if r.info.has_video]
    if not videos or not info.has_video:
        return []
    rate = videos[0].info.frame_rate
    windows = measurement_windows(info.duration, source_keyframes(source, info, tools))
    outputs = []
    for number, (start, length) in enumerate(windows):
        stretch = {"ss": f"{start:.3f}", "t": f"{length:.3f}"}
        stream = tools.input(source.resolve(), info.demuxer, **stretch)  # ffmpeg runs in out_dir
        reference = _numbered(condition_picture(stream[f"{info.video_stream}"], info).filter("fps", str(rate)), rate)
        copies = reference.filter_multi_output("split", len(videos)) if len(videos) > 1 else None
        for index, rendition in enumerate(videos):
            size = (rendition.info.display_width, rendition.info.display_height)
            ref = (copies[index] if copies is not None else reference).filter("scale", *size, flags="bicubic")
            ref = ref.filter("setsar", 1).filter("format", "yuv420p").filter_multi_output("split", 2)
            picture = tools.input(rendition.path.resolve(), rendition.info.demuxer, **stretch)
            picture = picture[f"{rendition.info.video_stream}"]
            dist = _numbered(picture, rate).filter("format", "yuv420p").filter_multi_output("split", 2)
            for metric, other in (("ssim", 0), ("psnr", 1)):
                stats = f"{metric}-{rendition.name}-{number}.log"
                outputs.append(ffmpeg.filter([dist[other], ref[other]], metric, stats_file=stats).output("-", f="null"))
    argv = [tools.ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", *ffmpeg.merge_outputs(*outputs).get_args()]
    run_tool(argv, timeout=tools.encode_timeout_seconds, cwd=out_dir, subject=os.fspath(source))
    results = []
    for rendition in videos:
        ssim = [v for n in range(len(windows)) for v in _averages(out_dir / f"ssim-{rendition.name}-{n}.log", "All")]
        psnr = [
            v for n in range(len(windows)) for v in _averages(out_dir / f"psnr-{rendition.name}-{n}.log", "psnr_avg")
        ]
        results.append(
            RungQuality(
                name=rendition.name,
                width=rendition.info.display_width,
                height=rendition.info.display_height,
                ssim=round(sum(ssim) / len(ssim), 5) if ssim else 0.0,
                psnr=round(sum(psnr) / len(psnr), 3) if psnr else 0.0,
                frames_compared=len(ssim),
            )
        )
    return results


def measurement_windows(duration: float, source_keyframes: list[float]) -> list[tuple[float, float]]:
    """The stretches of the video that are compared, as (start, length) in seconds: the whole of a short
    video; else ``WINDOWS`` stretches of one segment each, spread over the video.

    Each starts at a rung keyframe (a multiple of the segment length: the renditions decode from there)
    chosen near its share of the video and soon after a keyframe of the source, which has to be
    decoded from its keyframe before the stretch: the source's keyframes are wherever the camera put
    them (every 8 s from x264's defaults)."""
    if duration <= WINDOWS * WINDOW_SECONDS * 2:
        return [(0.0, duration)]
    starts = [float(i * WINDOW_SECONDS) for i in range(int((duration - WINDOW_SECONDS) // WINDOW_SECONDS) + 1)]
    keyframes = sorted(source_keyframes) or [0.0]

    def lead_in(start: float) -> float:
        return start - max((k for k in keyframes if k <= start + KEYFRAME_TOLERANCE_SECONDS), default=0.0)

    chosen: list[float] = []
    for share in range(WINDOWS):
        target = (share + 0.5) * duration / WINDOWS - WINDOW_SECONDS / 2
        best = min((s for s in starts if s not in chosen), key=lambda s: lead_in(s) + abs(s - target) / 4)
        chosen.append(best)
    return [(start, float(WINDOW_SECONDS)) for start in sorted(chosen)]


def source_keyframes(source: Path, info: VideoInfo, tools: Tools = DEFAULT_TOOLS) -> list[float]:
    """Times of the source's video keyframes from its first frame, from its packets (nothing decoded)."""
    if info.video_stream is None:
        return []
    data = probe_json(
        source,
        tools,
        ("-select_streams", str(info.video_stream), "-show_entries", "stream=start_time:packet=pts_time,flags"),
    )
    start = _seconds((data.get("streams") or [None])[0], "start_time") or 0.0
    return sorted(
        round(float(p["pts_time"]) - start, 3)
        for p in data.get("packets", [])
        if "K" in p.get("flags", "") and p.get("pts_time") not in (None, "N/A")
    )


def _numbered(picture: ffmpeg.nodes.FilterableStream, rate: Fraction) -> ffmpeg.nodes.FilterableStream:
    """Frames timed by their number in a time base of one frame: the source (after ``fps``) and a rendition
    then pair frame for frame, whatever their streams' start times and time bases (in WebM's
    milliseconds, frame times of 30 fps round to 33 or 34 ms and would pair neighbours)."""
    return (
        picture.filter("settb", f"{rate.denominator}/{rate.numerator}")
        .filter("setpts", "N")
        .filter("select", f"eq(mod(n,{COMPARE_EVERY}),{COMPARE_EVERY // 2})")
    )


def _averages(stats: Path, field: str) -> list[float]:
    """The ``field:value`` of each line of a filter's stats file (``inf`` for identical frames is skipped)."""
    values = []
    for line in stats.read_text().splitlines():
        for item in line.split():
            name, _, value = item.partition(":")
            if name == field and value not in ("inf", "nan"):
                values.append(float(value))
    return values


def rendition_timing(rendition: Rendition, tools: Tools = DEFAULT_TOOLS) -> Timing:
    """Keyframe times and stream starts and durations of a rendition, from its packets (nothing decoded)."""
    data = probe_json(
        rendition.path,
        tools,
        ("-show_entries", "stream=index,codec_type,start_time,duration:packet=stream_index,pts_time,flags"),
    )
    streams = {s["index"]: s for s in data.get("streams", [])}
    video = streams.get(rendition.info.video_stream) if rendition.info.video_stream is not None else None
    audio = streams.get(rendition.info.audio_stream) if rendition.info.audio_stream is not None else None
    video_start = _seconds(video, "start_time")
    keyframes = sorted(
        float(p["pts_time"])
        for p in data.get("packets", [])
        if video is not None and p.get("stream_index") == video["index"] and "K" in p.get("flags", "")
    )
    return Timing(
        name=rendition.name,
        keyframes=tuple(round(time - (video_start or 0.0), 3) for time in keyframes),
        video_start=video_start,
        audio_start=_seconds(audio, "start_time"),
        video_duration=_seconds(video, "duration"),
        audio_duration=_seconds(audio, "duration"),
    )


def _seconds(stream: dict[str, Any] | None, field: str) -> float | None:
    if stream is None or stream.get(field) in (None, "N/A"):
        return None
    return round(float(stream[field]), 4)


def keyframe_problems(timings: list[Timing]) -> list[str]:
    """Why the video rungs cannot be switched between at every segment boundary; empty when they can:
    each has a keyframe every ``KEYFRAME_INTERVAL_SECONDS`` from 0, at the same times as the others."""
    videos = [t for t in timings if t.keyframes]
    problems = []
    for timing in videos:
        expected = tuple(float(i * KEYFRAME_INTERVAL_SECONDS) for i in range(len(timing.keyframes)))
        if not _same_times(timing.keyframes, expected):
            problems.append(
                f"{timing.name}: keyframes at {_listed(timing.keyframes)}, not every {KEYFRAME_INTERVAL_SECONDS} s"
            )
    if videos and not all(_same_times(t.keyframes, videos[0].keyframes) for t in videos):
        problems.append("the rungs' keyframes are not at the same times")
    return problems


def _same_times(times: tuple[float, ...], others: tuple[float, ...]) -> bool:
    return len(times) == len(others) and all(
        abs(a - b) <= KEYFRAME_TOLERANCE_SECONDS for a, b in zip(times, others, strict=True)
    )


def sync_problems(timings: list[Timing], source_duration: float) -> list[str]:
    """Streams that start apart or end away from the source's duration; empty when all are in step."""
    problems = []
    for timing in timings:
        offset = timing.av_offset
        if offset is not None and abs(offset) > SYNC_TOLERANCE_SECONDS:
            problems.append(f"{timing.name}: the sound starts {offset:+.3f} s from the picture")
        for kind, duration in (("picture", timing.video_duration), ("sound", timing.audio_duration)):
            if duration is not None and abs(duration - source_duration) > SYNC_TOLERANCE_SECONDS:
                problems.append(f"{timing.name}: the {kind} lasts {duration:.3f} s, the source {source_duration:.3f} s")
    return problems


def _listed(times: tuple[float, ...], most: int = 6) -> str:
    shown = ", ".join(f"{t:g}" for t in times[:most])
    return shown + (", …" if len(times) > most else "")
