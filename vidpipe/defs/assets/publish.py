"""The storyboard, the adaptive stream, the quality report and the manifest, made by one op (``publish``)
after the encode."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from vidpipe import settings
from vidpipe.defs.assets.common import (
    DECODING_CHECK,
    LADDER_KEY,
    MANIFEST_CHECK,
    MANIFEST_CODE_VERSION,
    MANIFEST_KEY,
    QUALITY_CODE_VERSION,
    QUALITY_KEY,
    SOURCE_VIDEO_KEY,
    STORYBOARD_CODE_VERSION,
    STORYBOARD_KEY,
    STREAM_CODE_VERSION,
    STREAM_KEY,
    THUMBNAIL_KEY,
    TRANSIENT_RETRIES,
    failures_for_people,
    made_by,
    selected,
    table,
)
from vidpipe.defs.assets.streams import make_stream
from vidpipe.defs.catalog import CatalogResource, published
from vidpipe.defs.partitions import videos
from vidpipe.defs.resources import FFmpegResource, kept_value
from vidpipe.defs.storage import VideoStorage, scratch_folder, shared_copies
from vidpipe.media.ladder import Rung
from vidpipe.media.manifest import (
    MANIFEST_FILE,
    RENDITIONS_FOLDER,
    STORYBOARD_FOLDER,
    RenditionSet,
    SourceVideo,
    build_manifest,
    manifest_problems,
    worst_decoding,
)
from vidpipe.media.quality import SSIM_FLOOR, QualityReport, Rendition
from vidpipe.media.storyboard import Storyboard
from vidpipe.media.thumbnail import ThumbnailFile
from vidpipe.threads import side_by_side

QUALITY_FLOOR_CHECK = "rungs_above_quality_floor"
KEYFRAMES_CHECK = "rung_keyframes_aligned"
SYNC_CHECK = "picture_and_sound_in_step"
MAKING = {STORYBOARD_KEY: "the storyboard", STREAM_KEY: "the adaptive stream", QUALITY_KEY: "the quality report"}
"""What each part of ``publish`` makes, in words for its errors."""

PUBLISH_CHECKS = [
    dg.AssetCheckSpec(
        QUALITY_FLOOR_CHECK,
        asset=QUALITY_KEY,
        partitions_def=videos,
        description=f"Every rung's SSIM against the source scaled to its size is at least {SSIM_FLOOR} "
        "(media/quality.py SSIM_FLOOR). A rung under it is still published, and flagged here and in the manifest.",
    ),
    dg.AssetCheckSpec(
        KEYFRAMES_CHECK,
        asset=QUALITY_KEY,
        partitions_def=videos,
        description="Every video rung has a keyframe every 2 s from 0, at the same times as the others: what "
        "lets a player switch rungs at any segment boundary.",
    ),
    dg.AssetCheckSpec(
        SYNC_CHECK,
        asset=QUALITY_KEY,
        partitions_def=videos,
        description="In every rendition, picture and sound start together and last as long as the source "
        "(within 50 ms).",
    ),
    dg.AssetCheckSpec(
        MANIFEST_CHECK,
        asset=MANIFEST_KEY,
        partitions_def=videos,
        description="Every file the manifest lists exists (renditions with their listed size; the stream's "
        "playlists and the storyboard), and every rendition lasts as long as the source.",
    ),
    dg.AssetCheckSpec(
        DECODING_CHECK,
        asset=MANIFEST_KEY,
        partitions_def=videos,
        description="The source decoded without errors. A source with a few damaged or lost frames is still "
        "published (up to FFmpegResource.max_damaged_fraction of its frames): this check warns, saying how many.",
    ),
]


def build_publish_asset(ladder: tuple[Rung, ...]) -> dg.AssetsDefinition:
    """``storyboard``, ``stream``, ``quality`` and ``video_manifest``: what a player needs beside the
    renditions, and the manifest that lists everything, made by one op (``publish``) after the encode.

    Each is an asset of its own, with its group, code version, metadata and checks, materialized alone
    or with any of the others: the op makes only the selected ones, and the manifest reads the values
    an earlier run kept for those not selected. One step makes them because a step each would cost a
    process and Dagster's start-up (about 1.2 s of CPU per step on 2 cores, most of it SQL) for a few
    seconds of tool time. The storyboard, the stream and the quality report run side by side in
    threads (each mostly waits on its tool's process); the manifest follows them.
    """
    audio_kbps = {rung.name: rung.audio_kbps for rung in ladder}
    outs = {
        "storyboard": _optional_out(
            STORYBOARD_KEY,
            "previews",
            STORYBOARD_CODE_VERSION,
            "Seek previews: a small frame every few seconds in sprite sheets, and the WebVTT track a "
            "player reads them from while scrubbing (none for an audio-only upload). Made from the smallest "
            "H.264 rendition, or from the original when there is no video rendition: decoding the original "
            "again would cost a tenth of its encode (a 12 Mbit/s 1080p original), the 240p rung a "
            "two-hundredth, and tiles 160 px wide lose nothing by it.",
        ),
        "stream": _optional_out(
            STREAM_KEY,
            "streaming",
            STREAM_CODE_VERSION,
            "The H.264/AAC renditions (AAC alone for an audio-only upload) as one CMAF stream: an HLS "
            "master playlist and a DASH MPD over the same fMP4 segments, by stream copy (media/packaging.py). "
            "The VP9/Opus renditions stay progressive files.",
        ),
        "quality": _optional_out(
            QUALITY_KEY,
            "quality",
            QUALITY_CODE_VERSION,
            "Each rung's SSIM and PSNR against the source, the rungs' keyframe alignment, and picture "
            "and sound in step (media/quality.py). A rung under the floor is flagged, not withheld: its check "
            "fails, the manifest marks it and the run log warns, and the video is still published, because a "
            "viewer on a slow connection is better served by a soft rung than by none, and the floor is "
            "measured against a source that may itself be soft. An operator re-encodes it with a changed rung.",
        ),
        "video_manifest": _optional_out(
            MANIFEST_KEY,
            "manifest",
            MANIFEST_CODE_VERSION,
            "The JSON document a web app reads to build its player: every output of one video, "
            "published after every file it lists. Its checks run on the files just listed.",
        ),
    }

    @dg.multi_asset(
        name="publish",
        outs=outs,
        ins={
            "source_video": dg.AssetIn(key=SOURCE_VIDEO_KEY),
            "ladder": dg.AssetIn(key=LADDER_KEY),
            "thumbnail": dg.AssetIn(key=THUMBNAIL_KEY),
        },
        internal_asset_deps={
            "storyboard": {SOURCE_VIDEO_KEY, LADDER_KEY},
            "stream": {LADDER_KEY},
            "quality": {SOURCE_VIDEO_KEY, LADDER_KEY},
            "video_manifest": {SOURCE_VIDEO_KEY, LADDER_KEY, THUMBNAIL_KEY, STORYBOARD_KEY, STREAM_KEY, QUALITY_KEY},
        },
        check_specs=PUBLISH_CHECKS,
        partitions_def=videos,
        can_subset=True,
        retry_policy=TRANSIENT_RETRIES,
    )
    def publish(
        context: dg.AssetExecutionContext,
        source_video: SourceVideo,
        ladder: RenditionSet,
        thumbnail: list[ThumbnailFile],
        ffmpeg: FFmpegResource,
        storage: VideoStorage,
        catalog: CatalogResource,
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        key = source_video.key
        with shared_copies(storage, key) as local:  # a rendition two parts read is fetched once
            parts: dict[dg.AssetKey, Callable[[], tuple[Any, dict[str, Any]]]] = {
                STORYBOARD_KEY: lambda: _make_storyboard(source_video, ladder, ffmpeg, storage, local),
                STREAM_KEY: lambda: make_stream(key, list(ladder.files), audio_kbps, ffmpeg, storage, local),
                QUALITY_KEY: lambda: _measure_quality(source_video, ladder, ffmpeg, local),
            }
            ended = side_by_side({asset: make for asset, make in parts.items() if asset in context.selected_asset_keys})
        made = {}
        for asset, part in ended.items():  # the first failure, now that no part is still running
            with failures_for_people(context, storage, catalog, key, making=MAKING[asset]):
                made[asset] = part.result()
        for asset, (value, metadata) in made.items():
            yield dg.Output(value, output_name=asset.path[-1], metadata=metadata)
        if QUALITY_KEY in made:
            yield from selected(context, _quality_checks(context, made[QUALITY_KEY][0]))
        if MANIFEST_KEY in context.selected_asset_keys:
            values: dict[dg.AssetKey, Any] = {
                asset: made[asset][0] if asset in made else kept_value(storage, key, asset) for asset in parts
            }
            manifest = build_manifest(
                source_video,
                list(ladder.files),
                thumbnail,
                values[STREAM_KEY],
                values[STORYBOARD_KEY],
                values[QUALITY_KEY],
            )
            yield from _manifest_outputs(context, storage, catalog, manifest, ladder)

    return publish


def _optional_out(key: dg.AssetKey, group_name: str, code_version: str, description: str) -> dg.AssetOut:
    """An output of ``publish``: made only when selected."""
    return dg.AssetOut(
        key=key, group_name=group_name, code_version=code_version, is_required=False, description=description
    )


def _make_storyboard(
    source_video: SourceVideo,
    ladder: RenditionSet,
    ffmpeg: FFmpegResource,
    storage: VideoStorage,
    local: Callable[[str], Path],
) -> tuple[Storyboard | None, dict[str, Any]]:
    """The storyboard, from the smallest H.264 rendition (see ``build_publish_asset``), and its metadata."""
    key = source_video.key
    if not source_video.info.has_video:
        return None, {"tiles": 0, "why_none": "the upload has no video"}
    pictures = [r for r in ladder.files if r.info.has_video]
    smallest = min(pictures, key=lambda r: (r.info.video_codec != "h264", r.info.width * r.info.height), default=None)
    file, info = (
        (f"{RENDITIONS_FOLDER}/{smallest.file}", smallest.info) if smallest else (source_video.file, source_video.info)
    )
    with storage.publishing(key, STORYBOARD_FOLDER) as out_dir:
        made = ffmpeg.storyboard(local(file), info, out_dir)
    plan = made.plan
    return made, {
        "tiles": plan.tiles,
        "interval_seconds": plan.interval,
        "tile_size": f"{plan.tile_width}x{plan.tile_height}",
        "sheets": len(made.images),
        "vtt": dg.MetadataValue.path(storage.location(key, f"{STORYBOARD_FOLDER}/{made.vtt}")),
        "made_from": file,
        **made_by(),
    }


def _measure_quality(
    source_video: SourceVideo, ladder: RenditionSet, ffmpeg: FFmpegResource, local: Callable[[str], Path]
) -> tuple[QualityReport, dict[str, Any]]:
    """The quality report of the video's renditions (``media/quality.py``), and its metadata."""
    renditions = [Rendition(r.name, local(f"{RENDITIONS_FOLDER}/{r.file}"), r.info) for r in ladder.files]
    with scratch_folder(str(settings.scratch_dir()), "quality") as work:
        report = ffmpeg.quality_report(local(source_video.file), source_video.info, renditions, work)
    return report, {
        **_ssim_values(report),
        **{f"psnr_{rung.name}": dg.MetadataValue.float(rung.psnr) for rung in report.rungs},
        "rungs": table(
            ("rung", "size", "SSIM", "PSNR dB", "frames compared"),
            [(r.name, f"{r.width}x{r.height}", r.ssim, r.psnr, r.frames_compared) for r in report.rungs],
        ),
        "lowest_ssim": dg.MetadataValue.float(min((r.ssim for r in report.rungs), default=1.0)),
        **made_by(),
    }


def _ssim_values(report: QualityReport) -> dict[str, dg.MetadataValue]:
    return {f"ssim_{rung.name}": dg.MetadataValue.float(rung.ssim) for rung in report.rungs}


def _quality_checks(context: dg.AssetExecutionContext, report: QualityReport) -> list[dg.AssetCheckResult]:
    """The quality report's checks; a rung under the floor is also a warning in the run's log."""
    for rung in report.below_floor():
        context.log.warning(f"{rung.name} is below the quality floor: SSIM {rung.ssim} < {SSIM_FLOOR}")
    offsets = {f"av_offset_{t.name}": t.av_offset for t in report.timings if t.av_offset is not None}
    return [
        dg.AssetCheckResult(
            asset_key=QUALITY_KEY,
            check_name=QUALITY_FLOOR_CHECK,
            passed=not report.below_floor(),
            description=", ".join(f"{r.name} SSIM {r.ssim}" for r in report.below_floor()) or None,
            metadata=_ssim_values(report),  # the check's Plots draw each rung's SSIM across videos
        ),
        dg.AssetCheckResult(
            asset_key=QUALITY_KEY,
            check_name=KEYFRAMES_CHECK,
            passed=not report.keyframe_problems,
            description="; ".join(report.keyframe_problems) or None,
            metadata={"keyframes": max((len(t.keyframes) for t in report.timings), default=0)},
        ),
        dg.AssetCheckResult(
            asset_key=QUALITY_KEY,
            check_name=SYNC_CHECK,
            passed=not report.sync_problems,
            description="; ".join(report.sync_problems) or None,
            metadata={name: dg.MetadataValue.float(value) for name, value in offsets.items()},
        ),
    ]


def _manifest_outputs(
    context: dg.AssetExecutionContext,
    storage: VideoStorage,
    catalog: CatalogResource,
    manifest: dict[str, Any],
    ladder: RenditionSet,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Publish ``manifest``, last of the video's files, then its catalog row; its output and its selected checks."""
    key = manifest["video"]
    published(catalog.catalog(), storage, key, manifest)
    location = storage.location(key, MANIFEST_FILE)
    context.log.info(
        f"video {key} ('{manifest['source']['name']}') is ready: {len(manifest['renditions'])} renditions, "
        f"{len(manifest['thumbnails'])} thumbnails, manifest at {location}"
    )
    yield dg.Output(
        manifest,
        output_name="video_manifest",
        metadata={
            "manifest_file": dg.MetadataValue.path(location),
            "renditions": table(
                ("name", "size", "bitrate", "bytes"),
                [(r["name"], f"{r['width']}x{r['height']}", r["bitrate"], r["bytes"]) for r in manifest["renditions"]],
            ),
            "manifest": dg.MetadataValue.json(manifest),
        },
    )
    problems = manifest_problems(manifest, lambda file: storage.stored_size(key, file))
    decoding = worst_decoding(list(ladder.files))
    yield from selected(
        context,
        [
            dg.AssetCheckResult(
                asset_key=MANIFEST_KEY,
                check_name=MANIFEST_CHECK,
                passed=not problems,
                metadata={
                    "files_checked": len(manifest["renditions"]) + len(manifest["thumbnails"]),
                    "problems": "\n".join(problems) or "none",
                },
            ),
            dg.AssetCheckResult(
                asset_key=MANIFEST_KEY,
                check_name=DECODING_CHECK,
                passed=decoding.clean,
                severity=dg.AssetCheckSeverity.WARN,
                description=decoding.summary(),
                metadata=decoding.as_metadata(),
            ),
        ],
    )
