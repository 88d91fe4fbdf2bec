"""ffprobe → a typed ``VideoInfo``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from vidpipe.media.errors import InvalidMediaError, ToolFailedError
from vidpipe.media.ffmpeg_calls import DEFAULT_TOOLS, Tools, run_tool

Json = dict[str, Any]
"""A JSON object as ffprobe writes it."""
SHOW_ALL = ("-show_format", "-show_streams")


@dataclass(frozen=True)
class VideoInfo:
    """Facts about an uploaded file, as ffprobe reports them.

    ``width``/``height`` are the stored (coded) picture size; ``rotation`` is how many
    degrees clockwise the picture must be turned to display upright, so the upright
    display size is ``display_width`` × ``display_height``.
    """

    container: str
    duration: float
    width: int
    height: int
    rotation: int
    sample_aspect_ratio: Fraction
    avg_frame_rate: Fraction
    nominal_frame_rate: Fraction
    pixel_format: str | None
    color_transfer: str | None
    field_order: str | None
    video_codec: str | None
    video_stream: int | None
    audio_stream: int | None
    has_audio: bool
    audio_codec: str | None
    audio_channels: int | None
    bit_rate: int | None
    size_bytes: int
    ignored_streams: tuple[str, ...] = ()
    """Why streams a player might have used are left out (no decoder for their format)."""

    @property
    def demuxer(self) -> str:
        """The demuxer ffprobe used (``"mov"`` for ``"mov,mp4,m4a,…"``), to force on later calls."""
        return self.container.split(",")[0]

    @property
    def frame_rate(self) -> Fraction:
        """The rate to show frames at.

        The nominal rate when it is plausible (variable-rate phone video has a nominal
        rate at or somewhat above its average), else the average rate: a nominal rate of
        more than 1.5 times the average is a guess from jittery timestamps, not the video's.
        """
        nominal, average = self.nominal_frame_rate, self.avg_frame_rate
        if nominal and nominal <= 240 and (not average or average * Fraction(99, 100) <= nominal <= average * 3 / 2):
            return nominal
        return average or nominal

    @property
    def display_width(self) -> int:
        """Upright width in square pixels."""
        return self._upright()[0]

    @property
    def display_height(self) -> int:
        """Upright height in square pixels."""
        return self._upright()[1]

    @property
    def has_video(self) -> bool:
        return self.video_stream is not None

    @property
    def is_hdr(self) -> bool:
        """PQ (HDR10, Dolby Vision base layer) or HLG transfer: needs tone-mapping for SDR outputs."""
        return self.color_transfer in ("smpte2084", "arib-std-b67")

    @property
    def is_interlaced(self) -> bool:
        return self.field_order in ("tt", "bb", "tb", "bt")

    @property
    def short_side(self) -> int:
        return min(self._upright())

    def _upright(self) -> tuple[int, int]:
        square_width = round(self.width * self.sample_aspect_ratio)
        if self.rotation in (90, 270):
            return self.height, square_width
        return square_width, self.height

    def as_metadata(self) -> dict[str, str | int | float | None]:
        """Plain values for logs, UI metadata and manifests."""
        return {
            "container": self.container,
            "duration": round(self.duration, 3),
            "width": self.display_width,
            "height": self.display_height,
            "coded_width": self.width,
            "coded_height": self.height,
            "rotation": self.rotation,
            "sample_aspect_ratio": f"{self.sample_aspect_ratio.numerator}:{self.sample_aspect_ratio.denominator}",
            "frame_rate": round(float(self.frame_rate), 3),
            "nominal_frame_rate": str(self.nominal_frame_rate),
            "pixel_format": self.pixel_format,
            "color_transfer": self.color_transfer,
            "field_order": self.field_order,
            "video_codec": self.video_codec,
            "has_audio": self.has_audio,
            "audio_codec": self.audio_codec,
            "audio_channels": self.audio_channels,
            "bit_rate": self.bit_rate,
            "bytes": self.size_bytes,
            **({"ignored_streams": "; ".join(self.ignored_streams)} if self.ignored_streams else {}),
        }


def probe(path: str | os.PathLike[str], tools: Tools = DEFAULT_TOOLS) -> VideoInfo:
    """Probe a file vidpipe trusts (its own outputs); uploads go through ``validate.validate_upload``."""
    path = os.fspath(path)
    try:
        data = probe_json(path, tools)
    except ToolFailedError as err:
        if err.retryable:
            raise
        raise InvalidMediaError(
            "not a readable video: ffprobe could not parse the file", path=path, stderr_tail=err.stderr_tail
        ) from err
    return parse_probe(data, path=path)


def probe_json(path: str | os.PathLike[str], tools: Tools = DEFAULT_TOOLS, args: tuple[str, ...] = SHOW_ALL) -> Json:
    """ffprobe's JSON for ``path``, read through the input guards (``Tools.ffprobe_argv``).

    ffmpeg-python's ``probe()`` passes its keyword options before the file name but has no
    time limit and would run ffprobe outside ``run_tool`` (no process group, no parent-death
    signal, no plain-words errors), so the same ffprobe call runs through ``run_tool``.
    """
    argv = tools.ffprobe_argv(path, *args, "-of", "json")
    output = run_tool(argv, timeout=tools.probe_timeout_seconds, subject=os.fspath(path))
    data: Json = json.loads(output or b"{}")
    return data


def parse_probe(data: Json, *, path: str) -> VideoInfo:
    """Turn ffprobe's JSON into ``VideoInfo``; refuse files with neither video nor audio."""
    fmt = data.get("format", {})
    video, audio, ignored = _choose_streams(data, path)
    picture = video or {}
    width, height = int(picture.get("width") or 0), int(picture.get("height") or 0)
    if video is not None and (width <= 0 or height <= 0):
        raise InvalidMediaError("not a video: the video stream has no picture size", path=path)
    main = video or audio or {}
    duration = _float(main.get("duration")) or _float(fmt.get("duration")) or 0.0
    return VideoInfo(
        container=fmt.get("format_name", "unknown"),
        duration=duration,
        width=width,
        height=height,
        rotation=_rotation(picture),
        sample_aspect_ratio=_ratio(picture.get("sample_aspect_ratio"), default=Fraction(1)),
        avg_frame_rate=_ratio(picture.get("avg_frame_rate")),
        nominal_frame_rate=_ratio(picture.get("r_frame_rate")),
        pixel_format=picture.get("pix_fmt"),
        color_transfer=picture.get("color_transfer"),
        field_order=picture.get("field_order"),
        video_codec=picture.get("codec_name"),
        video_stream=int(video["index"]) if video else None,
        audio_stream=int(audio["index"]) if audio else None,
        has_audio=audio is not None,
        audio_codec=audio.get("codec_name") if audio else None,
        audio_channels=int(audio["channels"]) if audio and audio.get("channels") else None,
        bit_rate=int(fmt["bit_rate"]) if str(fmt.get("bit_rate", "")).isdigit() else None,
        size_bytes=int(fmt["size"]) if str(fmt.get("size", "")).isdigit() else os.path.getsize(path),
        ignored_streams=ignored,
    )


def _choose_streams(data: Json, path: str) -> tuple[Json | None, Json | None, tuple[str, ...]]:
    """The video and audio streams vidpipe uses (each the default one of its kind that ffmpeg can
    decode), and a sentence for each stream left out because nothing can decode it."""
    streams = [s for s in data.get("streams", []) if has_decoder(s)]
    ignored = tuple(
        f"{s['codec_type']} stream {s.get('index')} is in a format ffmpeg cannot decode ({format_tag(s)}): left out"
        for s in data.get("streams", [])
        if s.get("codec_type") in ("video", "audio") and not has_decoder(s)
    )
    video, audio = _default_stream(streams, "video"), _default_stream(streams, "audio")
    if video is None and audio is None:
        raise InvalidMediaError("not a video: the file has no video or audio stream", path=path)
    return video, audio, ignored


def format_tag(stream: Json) -> str:
    """The container's name for a stream's format (``vvc1``), or ``unknown`` when it has none."""
    tag = stream.get("codec_tag_string") or ""
    return tag if tag.isprintable() and not tag.startswith("[") else "unknown"


def has_decoder(stream: Json) -> bool:
    """Whether ffmpeg knows the stream's format (ffprobe names no codec for formats it cannot decode)."""
    return stream.get("codec_name") not in (None, "", "none", "unknown")


def _default_stream(streams: list[Json], codec_type: str) -> Json | None:
    """The stream a player would pick: the one marked default, else the first.

    Cover art (an attached picture) is not a video stream.
    """
    candidates = [
        s for s in streams if s.get("codec_type") == codec_type and not s.get("disposition", {}).get("attached_pic")
    ]
    for stream in candidates:
        if stream.get("disposition", {}).get("default"):
            return stream
    return candidates[0] if candidates else None


def _rotation(stream: Json) -> int:
    """Clockwise display rotation, snapped to a multiple of 90.

    ffprobe reports a display matrix as a counter-clockwise angle; older files carry a
    clockwise ``rotate`` tag instead.
    """
    for side_data in stream.get("side_data_list", []):
        if "rotation" in side_data:
            return _snap(-float(side_data["rotation"]))
    rotate_tag = stream.get("tags", {}).get("rotate")
    return _snap(float(rotate_tag)) if rotate_tag else 0


def _snap(degrees: float) -> int:
    return round(degrees / 90.0) * 90 % 360


def _ratio(text: str | None, default: Fraction = Fraction(0)) -> Fraction:
    try:
        num, _, den = (text or "").partition(":" if ":" in (text or "") else "/")
        value = Fraction(int(num), int(den or 1))
    except (ValueError, ZeroDivisionError):
        return default
    return value if value > 0 else default


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
