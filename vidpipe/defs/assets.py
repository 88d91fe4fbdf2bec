"""Assets: the upload taken into storage, its renditions, its thumbnail, its storyboard, its adaptive
stream, its quality report and its manifest."""

import errno
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
from PIL import Image

from vidpipe import settings
from vidpipe.defs.catalog import CatalogResource, published, record_original, refused
from vidpipe.defs.executor import ENCODE_QUEUE, QUEUE_TAG
from vidpipe.defs.partitions import PARTITION_TAG, UPLOAD_FILE_TAG, UPLOAD_NAME_TAG, videos
from vidpipe.defs.resources import FFmpegResource, InboxResource, kept_value
from vidpipe.defs.storage import VideoStorage, scratch_folder, shared_copies
from vidpipe.media.encoder import DecodeReport, Progress, output_filename
from vidpipe.media.errors import InvalidMediaError, StorageFullError, ToolFailedError, UploadError, VidpipeError
from vidpipe.media.files import publish_tree
from vidpipe.media.ladder import PlannedRendition, Rung, plan_ladder
from vidpipe.media.manifest import (
    MANIFEST_FILE,
    RENDITIONS_FOLDER,
    STORYBOARD_FOLDER,
    STREAM_FOLDER,
    THUMBNAILS_FOLDER,
    RenditionFile,
    RenditionSet,
    SourceVideo,
    build_manifest,
    manifest_problems,
    worst_decoding,
)
from vidpipe.media.packaging import StreamInput, StreamPackage
from vidpipe.media.quality import SSIM_FLOOR, QualityReport, Rendition
from vidpipe.media.storyboard import Storyboard
from vidpipe.media.thumbnail import ThumbnailFile, preview_data_uri, write_thumbnails

# Per-partition checks are a preview feature in Dagster 1.13; they are what makes the UI show
# a check result for each video rather than only for the latest one.
warnings.filterwarnings(
    "ignore", category=dg.PreviewWarning, message="Specifying a partitions_def on an AssetCheckSpec"
)

MANIFEST_CHECK = "manifest_outputs_complete"
DECODING_CHECK = "source_decoded_cleanly"
THUMBNAIL_CODE_VERSION = "1"
STORYBOARD_CODE_VERSION = "2"
STREAM_CODE_VERSION = "1"
QUALITY_CODE_VERSION = "1"
MANIFEST_CODE_VERSION = "3"
SOURCE_VIDEO_KEY = dg.AssetKey("source_video")
PROGRESS_LOG = logging.getLogger("vidpipe.progress")
"""Every encode progress update (``Progress`` in the record's ``progress``), for a command that runs
the op in its own process: ``vidpipe process`` shows them on a terminal."""
K = TypeVar("K")
T = TypeVar("T")
TRANSIENT_RETRIES = dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL)


LADDER_OUTPUT = "ladder"
LADDER_KEY = dg.AssetKey(["renditions", LADDER_OUTPUT])


def video_asset(group_name: str, code_version: str) -> Any:
    """``@dg.asset`` for a per-video asset: partitioned by video, retried on transient failures (a killed
    or timed-out tool), in ``group_name``."""
    return dg.asset(
        partitions_def=videos, group_name=group_name, code_version=code_version, retry_policy=TRANSIENT_RETRIES
    )


@contextmanager
def failures_for_people(
    context: dg.AssetExecutionContext, storage: VideoStorage, catalog: CatalogResource, key: str, making: str
) -> Iterator[None]:
    """Turn vidpipe's typed errors into a Dagster ``Failure`` the UI shows as is.

    Errors about the input itself are final (``allow_retries=False``): the gate's refusals,
    and ffmpeg failing on a file that passed the gate (not killed, not timed out). They
    leave the kept original and a ``rejection.json`` beside it and nothing else: the catalog's row
    says ``rejected`` and outputs other steps of the video published are withdrawn (``refused``). An observation of ``source_video``
    says why, on the asset's Events tab. A full disk is final for this run too (an
    immediate retry would fail the same way) and said plainly; the video can be re-run
    once there is space. A killed or timed-out ffmpeg goes through the retry policy.
    """
    try:
        try:
            yield
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise StorageFullError(f"no space left in storage while writing {making}", path=err.filename) from err
    except VidpipeError as err:
        if isinstance(err, InvalidMediaError) or (isinstance(err, ToolFailedError) and not err.retryable):
            refused(catalog.catalog(), storage, key, err)
            context.log_event(
                dg.AssetObservation(
                    asset_key=SOURCE_VIDEO_KEY, partition=key, metadata={"rejected": True, "reason": err.message}
                )
            )
        raise dg.Failure(
            description=err.message,
            metadata={k: dg.MetadataValue.text(v) for k, v in err.context().items()},
            allow_retries=err.retryable,
        ) from err


def rendition_key(rung: Rung) -> dg.AssetKey:
    return dg.AssetKey(["renditions", rung.name])


@video_asset("ingest", "1")
def source_video(
    context: dg.AssetExecutionContext,
    storage: VideoStorage,
    catalog: CatalogResource,
    ffmpeg: FFmpegResource,
    inbox: InboxResource,
) -> dg.Output:
    """The upload, copied into immutable storage, probed and validated.

    The validation gate refuses hostile, broken and oversized uploads before any encode;
    the original is kept, with a ``rejection.json`` saying why.

    The upload is taken only from the inbox, by the name the upload sensor put in the
    run's tags; a run without that tag (a backfill, a re-run) reuses the original already
    in storage, or else the upload named by the latest earlier run of the same video.
    """
    key = context.partition_key
    with failures_for_people(context, storage, catalog, key, making="the original"):
        videos_now = catalog.catalog()  # a catalog that is missing or outdated stops the run here, plainly
        stored = storage.stored_original(key)
        if stored is None:
            file_ref, name = _upload_of(context, key)
            with inbox.fetch(file_ref) as upload:
                stored = storage.store_original(key, upload, name, file_ref)
        with storage.fetch(key, stored.file) as original:
            info = ffmpeg.validate_upload(original)
    storage.clear_rejection(key)
    record_original(videos_now, key, stored)
    source = SourceVideo(key=key, name=stored.name, sha256=stored.sha256, file=stored.file, info=info)
    return dg.Output(
        source,
        metadata={
            "original_name": stored.name,
            "original_name_ref": stored.name_ref,
            "sha256": stored.sha256,
            "stored_at": dg.MetadataValue.path(storage.location(key, stored.file)),
            **_made_by(),
            **info.as_metadata(),
        },
    )


def _upload_of(context: dg.AssetExecutionContext, key: str) -> tuple[str, str]:
    """The inbox name (percent-encoded) and readable name of ``key``'s upload, from this run's tags
    or, for a backfill, from the newest earlier run of the same video that has them."""
    runs = [context.run, *context.instance.get_runs(dg.RunsFilter(tags={PARTITION_TAG: key}), limit=100)]
    for run in runs:
        if UPLOAD_FILE_TAG in run.tags:
            return run.tags[UPLOAD_FILE_TAG], run.tags.get(UPLOAD_NAME_TAG, run.tags[UPLOAD_FILE_TAG])
    raise UploadError(
        f"video {key} has no stored original and no upload recorded for it: drop the file into the inbox again"
    )


def build_rendition_asset(ladder: tuple[Rung, ...]) -> dg.AssetsDefinition:
    """One asset per rung, and ``renditions/ladder`` (the video's set of renditions), all made by one op
    that encodes the selected rungs in one ffmpeg run.

    A rung the video gets no rendition of (too small a source, audio-only rungs for a video)
    is not materialized for it: its partition stays missing, and the ladder asset says why.
    The manifest reads the ladder asset, so it never waits on a rung that is not made.
    """
    outs = {
        rung.name: dg.AssetOut(
            key=rendition_key(rung),
            code_version=rung.code_version,
            is_required=False,
            group_name="renditions",
            description=rung.describe(),
            metadata={
                "short_side": rung.short_side,
                "crf": rung.crf,
                "max_video_kbps": rung.max_video_kbps,
                "audio_kbps": rung.audio_kbps,
            },
        )
        for rung in ladder
    }
    outs[LADDER_OUTPUT] = dg.AssetOut(
        key=LADDER_KEY,
        is_required=False,
        group_name="renditions",
        description="Every rendition made for the video, and why each other rung was not: what the manifest lists.",
    )

    @dg.multi_asset(
        name="renditions",
        outs=outs,
        internal_asset_deps={
            LADDER_OUTPUT: {SOURCE_VIDEO_KEY, *(rendition_key(rung) for rung in ladder)},
            **{rung.name: {SOURCE_VIDEO_KEY} for rung in ladder},
        },
        partitions_def=videos,
        can_subset=True,
        pool="ffmpeg",
        op_tags={QUEUE_TAG: ENCODE_QUEUE},
        retry_policy=TRANSIENT_RETRIES,
    )
    def renditions(
        context: dg.AssetExecutionContext,
        source_video: SourceVideo,
        ffmpeg: FFmpegResource,
        storage: VideoStorage,
        catalog: CatalogResource,
    ) -> Iterator[dg.Output]:
        plan = plan_ladder(source_video.info, ladder)
        planned = [p for p in plan.renditions if rendition_key(p.rung) in context.selected_asset_keys]
        with failures_for_people(context, storage, catalog, source_video.key, making="the renditions"):
            made, argv = _encode(context, source_video, planned, ffmpeg, storage)
            made_set = None
            if LADDER_KEY in context.selected_asset_keys:
                made_set = _rendition_set(ladder, plan.skipped, made, source_video.key, ffmpeg, storage)
        for name, rendition in made.items():
            location = storage.location(source_video.key, f"{RENDITIONS_FOLDER}/{rendition.file}")
            yield dg.Output(rendition, output_name=name, metadata=_rendition_metadata(rendition, argv, location))
        for rung in ladder:
            if rung.name in plan.skipped and rendition_key(rung) in context.selected_asset_keys:
                context.log.debug(f"{rung.name} is not made for this video: {plan.skipped[rung.name]}")
        if made_set is not None:
            yield dg.Output(made_set, output_name=LADDER_OUTPUT, metadata=_ladder_metadata(made_set))

    return renditions


def _encode(
    context: dg.AssetExecutionContext,
    source: SourceVideo,
    planned: list[PlannedRendition],
    ffmpeg: FFmpegResource,
    storage: VideoStorage,
) -> tuple[dict[str, RenditionFile], list[str]]:
    """Encode ``planned`` in one ffmpeg run; the renditions made, and the exact command."""
    if not planned:
        return {}, []
    sizes = ", ".join(f"{p.rung.name} {p.width}x{p.height}" for p in planned)
    context.log.info(f"encoding {sizes} in one ffmpeg run")
    with (
        storage.fetch(source.key, source.file) as original,
        storage.publishing(source.key, RENDITIONS_FOLDER) as out_dir,
    ):
        command, encoded = ffmpeg.encode(original, source.info, planned, out_dir, _progress_logger(context))
        # ffprobe is mostly process start-up: probing the outputs side by side saves ~1 s.
        with ThreadPoolExecutor(max_workers=4) as pool:
            infos = dict(zip(encoded.outputs, pool.map(ffmpeg.probe, encoded.outputs.values()), strict=True))
    public_argv = command.argv_for_people(source.file, RENDITIONS_FOLDER)
    if not encoded.decoding.clean:
        context.log.warning(f"the source {encoded.decoding.summary()}; what decoded is published")
    made = {
        p.rung.name: RenditionFile(
            name=p.rung.name,
            file=encoded.outputs[p.rung.name].name,
            container=p.rung.format.container,
            info=infos[p.rung.name],
            argv=tuple(public_argv),
            decoding=encoded.decoding,
        )
        for p in planned
    }
    record = {"argv": command.argv, "public_argv": public_argv, "decoding": asdict(encoded.decoding)}
    storage.record_renditions(source.key, dict.fromkeys(made, record))
    return made, command.argv


def _rendition_set(
    ladder: tuple[Rung, ...],
    skipped: dict[str, str],
    made: dict[str, RenditionFile],
    key: str,
    ffmpeg: FFmpegResource,
    storage: VideoStorage,
) -> RenditionSet:
    """The video's renditions in ladder order: those just made, and those an earlier run made (a partial
    re-encode), described again from their files and the records kept beside the original."""
    records = storage.rendition_records(key)
    files, not_made = [], {}
    for rung in ladder:
        earlier = f"{RENDITIONS_FOLDER}/{output_filename(rung)}"
        if rung.name in made:
            files.append(made[rung.name])
        elif rung.name in skipped:
            not_made[rung.name] = skipped[rung.name]
        elif rung.name in records and storage.stored_size(key, earlier) is not None:
            record = records[rung.name]
            with storage.fetch(key, earlier) as local:
                info = ffmpeg.probe(local)
            files.append(
                RenditionFile(
                    name=rung.name,
                    file=output_filename(rung),
                    container=rung.format.container,
                    info=info,
                    argv=tuple(record["public_argv"]),
                    decoding=DecodeReport(**record["decoding"]),
                )
            )
        else:
            not_made[rung.name] = f"not encoded yet: materialize {rendition_key(rung).to_user_string()} for it"
    return RenditionSet(files=tuple(files), not_made=not_made)


def _rendition_metadata(rendition: RenditionFile, argv: list[str], location: str) -> dict[str, Any]:
    info = rendition.info
    return {
        "file": dg.MetadataValue.path(location),
        "width": info.display_width,
        "height": info.display_height,
        "duration": round(info.duration, 3),
        "bitrate": info.bit_rate or 0,
        "bytes": info.size_bytes,
        "ffmpeg_argv": dg.MetadataValue.json(argv),
        **_made_by(),
        **rendition.decoding.as_metadata(),
    }


def _made_by() -> dict[str, str]:
    """Which machine or worker (``settings.worker_name``) and process made an output."""
    return {"made_by": f"{settings.worker_name()}, pid {os.getpid()}"}


def _ladder_metadata(made: RenditionSet) -> dict[str, Any]:
    return {
        "made": ", ".join(f.name for f in made.files) or "none",
        "not_made": _table(("rung", "why not"), list(made.not_made.items())),
        "count": len(made.files),
    }


def _table(header: tuple[str, ...], rows: list[tuple[object, ...]]) -> dg.MetadataValue:
    """A Markdown table, as the UI shows metadata tables."""
    lines = [header, tuple("---" for _ in header), *rows]
    return dg.MetadataValue.md("\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines))


def _progress_logger(context: dg.AssetExecutionContext, every_seconds: float = 5.0):
    """Encode progress into the run's log every ``every_seconds``, and every update to ``PROGRESS_LOG``."""
    last = [0.0]

    def log(progress: Progress) -> None:
        PROGRESS_LOG.debug("encoding", extra={"progress": progress})
        now = time.monotonic()
        if progress.finished or now - last[0] >= every_seconds:
            last[0] = now
            speed = f" at {progress.speed:g}x" if progress.speed else ""
            done, total = progress.seconds_done, progress.seconds_total
            context.log.info(f"encoding {progress.fraction:.0%} ({done:.1f} of {total:.1f} s){speed}")

    return log


@video_asset("thumbnails", THUMBNAIL_CODE_VERSION)
def thumbnail(
    context: dg.AssetExecutionContext,
    source_video: SourceVideo,
    ffmpeg: FFmpegResource,
    storage: VideoStorage,
    catalog: CatalogResource,
) -> dg.Output:
    """The first decoded frame, upright, as JPEG and WebP at a few widths (a waveform for audio-only uploads)."""
    with failures_for_people(context, storage, catalog, source_video.key, making="the thumbnails"):
        frame, read = first_frame_of(source_video, ffmpeg, storage)
        context.log.debug(f"first frame read from {read}")
        with storage.publishing(source_video.key, THUMBNAILS_FOLDER) as out_dir:
            files = write_thumbnails(frame, out_dir)
    _withdraw_if_refused(storage, source_video.key)
    return dg.Output(
        files,
        metadata={
            "preview": dg.MetadataValue.md(f"![first frame]({preview_data_uri(frame)})"),
            "width": frame.width,
            "height": frame.height,
            "files": len(files),
            "folder": dg.MetadataValue.path(storage.location(source_video.key, THUMBNAILS_FOLDER)),
            **_made_by(),
        },
    )


STORYBOARD_KEY = dg.AssetKey("storyboard")
STREAM_KEY = dg.AssetKey("stream")
QUALITY_KEY = dg.AssetKey("quality")
MANIFEST_KEY = dg.AssetKey("video_manifest")
THUMBNAIL_KEY = dg.AssetKey("thumbnail")
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
                STREAM_KEY: lambda: _make_stream(key, ladder, audio_kbps, ffmpeg, storage, local),
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
            yield from _selected(context, _quality_checks(context, made[QUALITY_KEY][0]))
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


def side_by_side(parts: dict[K, Callable[[], T]]) -> dict[K, Future[T]]:
    """Run ``parts`` at once, each in a thread, and wait until every one has ended: what each returned or
    raised. (A failed part never leaves another still writing while the failure is handled.)"""
    with ThreadPoolExecutor(max_workers=max(len(parts), 1)) as pool:
        return {name: pool.submit(make) for name, make in parts.items()}


def _selected(
    context: dg.AssetExecutionContext, results: Iterable[dg.AssetCheckResult]
) -> Iterator[dg.AssetCheckResult]:
    """The check results of the checks this run selected."""
    for result in results:
        assert result.asset_key is not None and result.check_name is not None  # every result here names both
        if dg.AssetCheckKey(result.asset_key, result.check_name) in context.selected_asset_check_keys:
            yield result


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
        **_made_by(),
    }


def _make_stream(
    key: str,
    ladder: RenditionSet,
    audio_kbps: dict[str, int],
    ffmpeg: FFmpegResource,
    storage: VideoStorage,
    local: Callable[[str], Path],
) -> tuple[StreamPackage | None, dict[str, Any]]:
    """The H.264/AAC renditions packaged as one CMAF stream (``media/packaging.py``), and its metadata."""
    chosen = [r for r in ladder.files if r.container == "mp4" and r.info.video_codec in ("h264", None)]
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
    return package, _stream_metadata(package, storage, key)


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
        "rungs": _table(
            ("rung", "size", "SSIM", "PSNR dB", "frames compared"),
            [(r.name, f"{r.width}x{r.height}", r.ssim, r.psnr, r.frames_compared) for r in report.rungs],
        ),
        "lowest_ssim": dg.MetadataValue.float(min((r.ssim for r in report.rungs), default=1.0)),
        **_made_by(),
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
            "renditions": _table(
                ("name", "size", "bitrate", "bytes"),
                [(r["name"], f"{r['width']}x{r['height']}", r["bitrate"], r["bytes"]) for r in manifest["renditions"]],
            ),
            "manifest": dg.MetadataValue.json(manifest),
        },
    )
    problems = manifest_problems(manifest, lambda file: storage.stored_size(key, file))
    decoding = worst_decoding(list(ladder.files))
    yield from _selected(
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


def _stream_metadata(package: StreamPackage, storage: VideoStorage, key: str) -> dict[str, Any]:
    return {
        "hls": dg.MetadataValue.path(storage.location(key, f"{STREAM_FOLDER}/{package.hls}")),
        "dash": dg.MetadataValue.path(storage.location(key, f"{STREAM_FOLDER}/{package.dash}")),
        "segment_seconds": package.segment_seconds,
        "levels": _table(
            ("playlist", "resolution", "peak bit/s", "average bit/s", "codecs", "fps"),
            [
                (v.playlist, v.resolution, v.bandwidth, v.average_bandwidth, v.codecs, v.frame_rate)
                for v in package.variants
            ],
        ),
        **_made_by(),
    }


def _withdraw_if_refused(storage: VideoStorage, key: str) -> None:
    """For the thumbnail, which runs beside the encode: if the renditions step refused the upload meanwhile
    (and withdrew the outputs), withdraw again what this step just published; nothing may stay beside a
    refused original."""
    if refused := storage.rejection_reason(key):
        storage.withdraw_outputs(key)
        raise dg.Failure(description=f"not published: the upload was refused ({refused})", allow_retries=False)


FIRST_FRAME_HEAD_BYTES = 16 << 20
FIRST_FRAME_TAIL_BYTES = 8 << 20
"""How much of the original's start and end the thumbnail step reads first: a container keeps its
header and index at one end or the other, and the first frames follow the header."""


def first_frame_of(
    source: SourceVideo,
    ffmpeg: FFmpegResource,
    storage: VideoStorage,
    head: int = FIRST_FRAME_HEAD_BYTES,
    tail: int = FIRST_FRAME_TAIL_BYTES,
) -> tuple[Image.Image, str]:
    """The original's first frame, decoded from a copy of just its start and end when that holds every
    packet the decoding reads (from object storage, a large upload is not downloaded whole for one frame);
    else from a whole copy. With what it was read from, in words."""
    with storage.fetch_ends(source.key, source.file, head, tail) as partial:
        if partial.complete:
            return ffmpeg.first_frame(partial.path, source.info), "the whole original"
        needed = ffmpeg.first_frame_byte_ranges(partial.path, source.info)
        if needed and partial.holds(needed):
            held = sum(len(part) for part in partial.held)
            return ffmpeg.first_frame(partial.path, source.info), f"{held} bytes of the original's start and end"
    with storage.fetch(source.key, source.file) as original:
        return ffmpeg.first_frame(original, source.info), "the whole original (its first frame is not near an end)"
