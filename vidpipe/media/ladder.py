"""The rendition ladder: what to encode, declared in one place, and how it fits a source.

Edit ``DEFAULT_LADDER`` to change what every video gets. Each rung's ``code_version``
is derived from its settings, so the orchestrator marks exactly the edited rungs stale.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from fractions import Fraction

from vidpipe.media.probe import VideoInfo

KEYFRAME_INTERVAL_SECONDS = 2
MAX_OUTPUT_FRAME_RATE = 60
"""Renditions never exceed this rate (a 120 fps source is encoded at 60); uploads have their own limit,
``ffmpeg_calls.Limits.max_frame_rate``."""


@dataclass(frozen=True)
class OutputFormat:
    """A container with its video and audio encoders and their fixed options (no video encoder: audio only)."""

    name: str
    container: str
    extension: str
    video_encoder: str | None
    audio_encoder: str
    video_options: dict[str, str | int] = field(default_factory=dict)
    audio_options: dict[str, str | int] = field(default_factory=dict)
    muxer_options: dict[str, str | int] = field(default_factory=dict)


H264_MP4 = OutputFormat(
    name="h264",
    container="mp4",
    extension="mp4",
    video_encoder="libx264",
    audio_encoder="aac",
    video_options={"preset": "veryfast", "profile:v": "high", "sc_threshold": 0},
    audio_options={"ac": 2, "ar": 48000},
    muxer_options={"movflags": "+faststart"},
)

# VP9 speed, measured on a 2-core machine (10 s 1080p30 testsrc2 → 720p, crf 33, 1800k cap):
#   deadline good, cpu-used 4:     18.9 s, SSIM 0.9787, 1.86 MB
#   deadline good, cpu-used 5..8:  25.2 s, SSIM 0.9785, 1.83 MB (libvpx clamps good to 5)
#   deadline realtime, cpu-used 6:  5.5 s, SSIM 0.9751, 2.05 MB   <- chosen
#   deadline realtime, cpu-used 8:  5.0 s, SSIM 0.9731, 1.75 MB
#   (x264 veryfast 720p on the same clip: 5.2 s)
# realtime/6 is 3.5x faster than good/4 for an SSIM loss of 0.004, and keeps VP9 at the
# cost of one more H.264 rung; cpu-used 8 starts to cost visible quality.
VP9_WEBM = OutputFormat(
    name="vp9",
    container="webm",
    extension="webm",
    video_encoder="libvpx-vp9",
    audio_encoder="libopus",
    video_options={"deadline": "realtime", "cpu-used": 6, "row-mt": 1, "tile-columns": 2},
    audio_options={"ac": 2, "ar": 48000},
)

AAC_M4A = OutputFormat(
    name="aac",
    container="mp4",
    extension="m4a",
    video_encoder=None,
    audio_encoder="aac",
    audio_options={"ac": 2, "ar": 48000},
    muxer_options={"movflags": "+faststart"},
)
OPUS_WEBM = OutputFormat(
    name="opus", container="webm", extension="webm", video_encoder=None, audio_encoder="libopus",
    audio_options={"ac": 2, "ar": 48000},
)  # fmt: skip


@dataclass(frozen=True)
class Rung:
    """One rendition: a format at a size (lines on the short side) and quality.

    Audio-only rungs (a format without video encoder) have no size; they are made for
    audio-only uploads, whose video rungs are skipped.
    """

    name: str
    format: OutputFormat
    short_side: int
    crf: int
    max_video_kbps: int
    audio_kbps: int

    @property
    def is_audio_only(self) -> bool:
        return self.format.video_encoder is None

    def describe(self) -> str:
        if self.is_audio_only:
            fmt = self.format
            return f"{fmt.name.upper()} audio in .{fmt.extension}, {self.audio_kbps} kbit/s (audio-only uploads)"
        return f"{self.format.name.upper()} in {self.format.container.upper()}, {self.short_side} lines"

    @property
    def code_version(self) -> str:
        """Changes whenever anything that shapes this rung's output changes."""
        settings = asdict(self) | {"keyframe_interval": KEYFRAME_INTERVAL_SECONDS, "max_fps": MAX_OUTPUT_FRAME_RATE}
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        return digest[:16]


DEFAULT_LADDER: tuple[Rung, ...] = (
    Rung("h264_1080p", H264_MP4, 1080, crf=23, max_video_kbps=5000, audio_kbps=128),
    Rung("h264_720p", H264_MP4, 720, crf=23, max_video_kbps=3000, audio_kbps=128),
    Rung("h264_480p", H264_MP4, 480, crf=23, max_video_kbps=1500, audio_kbps=96),
    Rung("h264_360p", H264_MP4, 360, crf=24, max_video_kbps=800, audio_kbps=96),
    Rung("h264_240p", H264_MP4, 240, crf=25, max_video_kbps=400, audio_kbps=64),
    Rung("vp9_720p", VP9_WEBM, 720, crf=33, max_video_kbps=2000, audio_kbps=96),
    Rung("vp9_360p", VP9_WEBM, 360, crf=36, max_video_kbps=600, audio_kbps=64),
    Rung("aac_128k", AAC_M4A, 0, crf=0, max_video_kbps=0, audio_kbps=128),
    Rung("opus_96k", OPUS_WEBM, 0, crf=0, max_video_kbps=0, audio_kbps=96),
)


@dataclass(frozen=True)
class PlannedRendition:
    """A rung fitted to one source: the exact picture size and frame rate to encode."""

    rung: Rung
    width: int
    height: int
    frame_rate: Fraction
    has_audio: bool

    @property
    def keyframe_interval_frames(self) -> int:
        return max(1, round(self.frame_rate * KEYFRAME_INTERVAL_SECONDS))


@dataclass(frozen=True)
class LadderPlan:
    renditions: tuple[PlannedRendition, ...]
    skipped: dict[str, str]


def plan_ladder(info: VideoInfo, ladder: tuple[Rung, ...] = DEFAULT_LADDER) -> LadderPlan:
    """Pick the rungs that fit ``info`` and size them.

    Rungs are chosen by the short side of the upright picture, so portrait video gets
    portrait renditions. Nothing is upscaled: a rung taller than the source is skipped,
    and a source smaller than every rung of a format gets that format's lowest rung at
    its own size, so each format always has exactly one rendition at least.

    Audio-only rungs are made only for uploads without a picture, and then only they are.
    """
    renditions: list[PlannedRendition] = []
    skipped: dict[str, str] = {}
    for rung in ladder:
        if rung.is_audio_only and info.has_video:
            skipped[rung.name] = "a video upload carries its audio in every video rendition"
        elif rung.is_audio_only:
            renditions.append(PlannedRendition(rung=rung, width=0, height=0, frame_rate=Fraction(0), has_audio=True))
        elif not info.has_video:
            skipped[rung.name] = "audio-only upload: there is no picture to encode"
    if info.has_video:
        renditions += _plan_video_rungs(info, [r for r in ladder if not r.is_audio_only], skipped)
    order = {rung.name: i for i, rung in enumerate(ladder)}
    renditions.sort(key=lambda p: order[p.rung.name])
    return LadderPlan(renditions=tuple(renditions), skipped=skipped)


def _plan_video_rungs(info: VideoInfo, ladder: list[Rung], skipped: dict[str, str]) -> list[PlannedRendition]:
    source_short = info.short_side
    renditions = []
    formats = {rung.format.name: rung.format for rung in ladder}
    for fmt_name in formats:
        rungs = sorted((r for r in ladder if r.format.name == fmt_name), key=lambda r: r.short_side)
        fitting = [r for r in rungs if r.short_side <= source_short]
        if not fitting:
            fitting = [rungs[0]]
        for rung in rungs:
            if rung in fitting:
                renditions.append(_sized(info, rung, min(rung.short_side, source_short)))
            else:
                skipped[rung.name] = (
                    f"source is {source_short} px on its short side; {rung.name} needs "
                    f"{rung.short_side} and vidpipe never upscales"
                )
    return renditions


STANDARD_FRAME_RATES = tuple(
    Fraction(rate) for rate in ("24000/1001", "24", "25", "30000/1001", "30", "48", "50", "60000/1001", "60")
)


def output_frame_rate(info: VideoInfo) -> Fraction:
    """The source's rate snapped to a standard rate within 1 %, capped at 60.

    Variable-rate sources are encoded at this constant rate (frames duplicated or dropped
    by timestamp, so audio stays in sync).
    """
    rate = info.frame_rate or Fraction(30)
    nearest = min(STANDARD_FRAME_RATES, key=lambda std: abs(rate - std))
    snapped = nearest if abs(rate - nearest) <= nearest / 100 else rate
    return min(snapped, Fraction(MAX_OUTPUT_FRAME_RATE))


def _sized(info: VideoInfo, rung: Rung, short_side: int) -> PlannedRendition:
    src_w, src_h = info.display_width, info.display_height
    short = _floor_even(short_side)
    if src_w >= src_h:
        width, height = _long_side(short, src_w, src_h), short
    else:
        width, height = short, _long_side(short, src_h, src_w)
    return PlannedRendition(
        rung=rung, width=width, height=height, frame_rate=output_frame_rate(info), has_audio=info.has_audio
    )


def _long_side(short: int, src_long: int, src_short: int) -> int:
    exact = short * src_long / src_short
    return max(2, min(2 * round(exact / 2), _floor_even(src_long)))


def _floor_even(value: int) -> int:
    return max(2, math.floor(value / 2) * 2)


PLAYABLE_MIN_SHORT_SIDE = 360
"""The rung a video is first published with (``playable_rendition``) is the smallest H.264 one with at least
this many lines: watchable on a phone, and quick to encode (a 360p rung is a sixth of a 1080p rung's pixels)."""


def playable_rendition(plan: LadderPlan) -> PlannedRendition | None:
    """The rendition encoded first, alone, so that the video can be published as playable while the rest of its
    ladder is encoded: the smallest H.264 rendition with ``PLAYABLE_MIN_SHORT_SIDE`` lines or more, else the
    largest (a source smaller than that gets its own size); for an upload without a picture, its AAC rung.
    None when there is nothing of the kind to play (a ladder without H.264 or AAC rungs)."""
    h264 = sorted((p for p in plan.renditions if p.rung.format is H264_MP4), key=lambda p: min(p.width, p.height))
    if h264:
        tall_enough = [p for p in h264 if min(p.width, p.height) >= PLAYABLE_MIN_SHORT_SIDE]
        return tall_enough[0] if tall_enough else h264[-1]
    return next((p for p in plan.renditions if p.rung.format is AAC_M4A), None)
