"""The per-video manifest: everything a web player needs, as one JSON document."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vidpipe.media.encoder import DecodeReport
from vidpipe.media.packaging import DASH_MIME_TYPE, HLS_MIME_TYPE, StreamPackage
from vidpipe.media.probe import VideoInfo
from vidpipe.media.quality import SSIM_FLOOR, QualityReport
from vidpipe.media.storyboard import Storyboard
from vidpipe.media.thumbnail import ThumbnailFile

MANIFEST_VERSION = 1

# A video's files, the same in every storage: under the video's key, the original (``source.<ext>``),
# these two folders and the manifest, which lists the folders' files by these relative names.
RENDITIONS_FOLDER = "renditions"
THUMBNAILS_FOLDER = "thumbnails"
STREAM_FOLDER = "stream"
STORYBOARD_FOLDER = "storyboard"
MANIFEST_FILE = "manifest.json"

PLAYABLE = "playable"
"""A manifest's ``state`` while only the first rendition is published (with its stream and the thumbnails)."""
COMPLETE = "complete"
"""A manifest's ``state`` once every rendition, the storyboard and the quality report are published."""


@dataclass(frozen=True)
class SourceVideo:
    """An upload taken into storage: its immutable copy's file name under the video's key, and what it contains."""

    key: str
    name: str
    sha256: str
    file: str
    info: VideoInfo


@dataclass(frozen=True)
class RenditionFile:
    """One encoded rendition as ffprobe sees it, and the command that produced it (paths relative to the
    video's folder: the manifest is public)."""

    name: str
    file: str
    """Its name in ``RENDITIONS_FOLDER``."""
    container: str
    info: VideoInfo
    argv: tuple[str, ...]
    decoding: DecodeReport
    """What decoding the source met in the encode that made this file."""


@dataclass(frozen=True)
class RenditionSet:
    """Every rendition made for one video, in ladder order, and why each other rung was not made."""

    files: tuple[RenditionFile, ...]
    not_made: dict[str, str]
    """Rung name → why the video has no rendition of it (the source is too small, it is audio only, ...)."""


def worst_decoding(renditions: list[RenditionFile]) -> DecodeReport:
    """The least clean decode among the encodes that made ``renditions`` (usually there is one)."""
    reports = [r.decoding for r in renditions] or [DecodeReport(expected_frames=0)]
    return max(reports, key=lambda d: (d.bad_fraction, d.lost_audio_packets, d.errors))


def build_manifest(
    source: SourceVideo,
    renditions: list[RenditionFile],
    thumbnails: list[ThumbnailFile],
    stream: StreamPackage | None = None,
    storyboard: Storyboard | None = None,
    quality: QualityReport | None = None,
    state: str = COMPLETE,
) -> dict[str, Any]:
    """Paths are relative to the video's folder, where the manifest itself is written. ``streams`` is empty
    and ``storyboard`` null when the video has none (no H.264/AAC rendition; no picture); ``quality`` says
    how each rung compares with the source. ``state`` is ``PLAYABLE`` or ``COMPLETE``."""
    return {
        "manifest_version": MANIFEST_VERSION,
        "video": source.key,
        "state": state,
        "source": _source_entry(source, renditions),
        "renditions": [_rendition_entry(r) for r in renditions],
        "thumbnails": [
            {"path": f"{THUMBNAILS_FOLDER}/{t.file}", "format": t.format, "width": t.width, "height": t.height}
            for t in thumbnails
        ],
        "streams": _streams_entry(stream) if stream else {},
        "storyboard": _storyboard_entry(storyboard) if storyboard else None,
        "quality": _quality_entry(quality) if quality else None,
        "ffmpeg": _commands_entry(renditions),
    }


def _streams_entry(stream: StreamPackage) -> dict[str, Any]:
    levels = []
    for variant in stream.variants:
        width, _, height = variant.resolution.partition("x")
        levels.append(
            {
                "playlist": f"{STREAM_FOLDER}/{variant.playlist}",
                "width": int(width) if width.isdigit() else None,
                "height": int(height) if height.isdigit() else None,
                "bandwidth": variant.bandwidth,
                "average_bandwidth": variant.average_bandwidth,
                "codecs": variant.codecs,
                "frame_rate": variant.frame_rate,
            }
        )
    return {
        "hls": {"path": f"{STREAM_FOLDER}/{stream.hls}", "mime_type": HLS_MIME_TYPE, "levels": levels},
        "dash": {"path": f"{STREAM_FOLDER}/{stream.dash}", "mime_type": DASH_MIME_TYPE},
        "segment_seconds": stream.segment_seconds,
    }


def _quality_entry(quality: QualityReport) -> dict[str, Any]:
    """Per rung SSIM and PSNR against the source and whether it is at the floor; what the checks found."""
    return {
        "ssim_floor": SSIM_FLOOR,
        "rungs": {
            r.name: {"ssim": r.ssim, "psnr": r.psnr, "passed": r.passed, "frames_compared": r.frames_compared}
            for r in quality.rungs
        },
        "keyframes_aligned": not quality.keyframe_problems,
        "in_sync": not quality.sync_problems,
        "problems": [*quality.keyframe_problems, *quality.sync_problems],
    }


def _storyboard_entry(storyboard: Storyboard) -> dict[str, Any]:
    plan = storyboard.plan
    return {
        "vtt": f"{STORYBOARD_FOLDER}/{storyboard.vtt}",
        "images": [f"{STORYBOARD_FOLDER}/{image}" for image in storyboard.images],
        "interval": plan.interval,
        "tile_width": plan.tile_width,
        "tile_height": plan.tile_height,
    }


def _source_entry(source: SourceVideo, renditions: list[RenditionFile]) -> dict[str, Any]:
    """The original as the packets show it, and what decoding it met."""
    return {
        "name": source.name,
        "sha256": source.sha256,
        "width": source.info.display_width or None,
        "height": source.info.display_height or None,
        "duration": round(source.info.duration, 3),
        "rotation": source.info.rotation,
        "frame_rate": round(float(source.info.frame_rate), 3) or None,
        "has_video": source.info.has_video,
        "has_audio": source.info.has_audio,
        "decoding": worst_decoding(renditions).counts(),
    }


def _rendition_entry(rendition: RenditionFile) -> dict[str, Any]:
    info = rendition.info
    return {
        "name": rendition.name,
        "path": f"{RENDITIONS_FOLDER}/{rendition.file}",
        "container": rendition.container,
        "mime_type": f"{'video' if info.has_video else 'audio'}/{rendition.container}",
        "video_codec": info.video_codec,
        "audio_codec": info.audio_codec,
        "width": info.display_width or None,
        "height": info.display_height or None,
        "frame_rate": round(float(info.frame_rate), 3) or None,
        "bitrate": info.bit_rate,
        "duration": round(info.duration, 3),
        "bytes": info.size_bytes,
    }


def _commands_entry(renditions: list[RenditionFile]) -> dict[str, Any]:
    """The ffmpeg command(s) that made the renditions: ``argv`` when one did, and which made which."""
    commands: list[tuple[str, ...]] = []
    for rendition in renditions:
        if rendition.argv not in commands:
            commands.append(rendition.argv)
    return {
        "argv": list(commands[0]) if len(commands) == 1 else None,
        "commands": [
            {"argv": list(argv), "renditions": [r.name for r in renditions if r.argv == argv]} for argv in commands
        ],
    }


def manifest_problems(manifest: dict[str, Any], stored_size: Callable[[str], int | None]) -> list[str]:
    """What is wrong between a manifest and the files beside it; empty when all is well.

    ``stored_size`` gives the size of a file by its path in the manifest (``None``: there is
    none). Every listed file must exist (renditions with their listed size), and every
    rendition must last as long as the source, give or take a frame and an audio codec's padding.
    """
    problems = []
    source_duration = manifest["source"]["duration"]
    for rendition in manifest["renditions"]:
        size = stored_size(rendition["path"])
        if size is None:
            problems.append(f"{rendition['name']}: {rendition['path']} is missing")
            continue
        if size != rendition["bytes"]:
            problems.append(f"{rendition['name']}: {size} bytes stored, {rendition['bytes']} listed")
        tolerance = (1 / rendition["frame_rate"] if rendition["frame_rate"] else 0) + 0.05
        if abs(rendition["duration"] - source_duration) > tolerance:
            problems.append(f"{rendition['name']}: lasts {rendition['duration']} s, the source {source_duration} s")
    for thumbnail in manifest["thumbnails"]:
        if stored_size(thumbnail["path"]) is None:
            problems.append(f"thumbnail {thumbnail['path']} is missing")
    streams = manifest.get("streams") or {}
    indexes = [entry["path"] for entry in (streams.get("hls"), streams.get("dash")) if entry]
    indexes += [level["playlist"] for level in streams.get("hls", {}).get("levels", [])]
    if storyboard := manifest.get("storyboard"):
        indexes += [storyboard["vtt"], *storyboard["images"]]
    problems += [f"{path} is missing" for path in indexes if stored_size(path) is None]
    return problems


def manifest_state(manifest: dict[str, Any]) -> str:
    """``PLAYABLE`` or ``COMPLETE``; a manifest written before there were two milestones is complete."""
    return str(manifest.get("state", COMPLETE))


def smallest_jpeg_thumbnail(manifest: dict[str, Any]) -> str | None:
    """The path (under the video's folder) of the manifest's narrowest JPEG thumbnail, for lists of videos."""
    jpegs = [t for t in manifest["thumbnails"] if t["format"] == "jpeg"]
    return str(min(jpegs, key=lambda t: t["width"])["path"]) if jpegs else None
