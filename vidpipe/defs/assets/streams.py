"""The adaptive stream of a video's H.264/AAC renditions, published by the playable milestone (its first
rendition) and again by ``publish`` (every rendition), under the same names."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg

from vidpipe import settings
from vidpipe.defs.assets.common import made_by, table
from vidpipe.defs.resources import FFmpegResource
from vidpipe.defs.storage import VideoStorage, scratch_folder
from vidpipe.media.files import publish_tree
from vidpipe.media.manifest import RENDITIONS_FOLDER, STREAM_FOLDER, RenditionFile
from vidpipe.media.packaging import StreamInput, StreamPackage


def make_stream(
    key: str,
    renditions: list[RenditionFile],
    audio_kbps: dict[str, int],
    ffmpeg: FFmpegResource,
    storage: VideoStorage,
    local: Callable[[str], Path],
) -> tuple[StreamPackage | None, dict[str, Any]]:
    """The H.264/AAC renditions packaged as one CMAF stream (``media/packaging.py``), and its metadata."""
    chosen = [r for r in renditions if r.container == "mp4" and r.info.video_codec in ("h264", None)]
    if not chosen:
        return None, {"why_none": "no H.264/AAC rendition was made"}
    inputs = [
        StreamInput(
            name=r.name,
            path=local(f"{RENDITIONS_FOLDER}/{r.file}"),
            audio_kbps=audio_kbps[r.name] if r.info.has_audio else 0,
            video=r.info.has_video,
        )
        for r in chosen
    ]
    with (
        scratch_folder(str(settings.scratch_dir()), "package") as staged,
        storage.publishing(key, STREAM_FOLDER) as out_dir,
    ):
        package = ffmpeg.package_stream(inputs, staged)
        publish_tree(staged, out_dir)
    return package, stream_metadata(package, storage, key)


def stream_metadata(package: StreamPackage, storage: VideoStorage, key: str) -> dict[str, Any]:
    return {
        "hls": dg.MetadataValue.path(storage.location(key, f"{STREAM_FOLDER}/{package.hls}")),
        "dash": dg.MetadataValue.path(storage.location(key, f"{STREAM_FOLDER}/{package.dash}")),
        "segment_seconds": package.segment_seconds,
        "levels": table(
            ("playlist", "resolution", "peak bit/s", "average bit/s", "codecs", "fps"),
            [
                (v.playlist, v.resolution, v.bandwidth, v.average_bandwidth, v.codecs, v.frame_rate)
                for v in package.variants
            ],
        ),
        **made_by(),
    }
