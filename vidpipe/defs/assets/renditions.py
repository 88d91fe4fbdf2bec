"""The ``renditions`` group: one asset per rung and the ladder, made by one op in one ffmpeg run."""

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

import dagster as dg

from vidpipe.defs.assets.common import (
    LADDER_KEY,
    LADDER_OUTPUT,
    PROGRESS_LOG,
    SOURCE_VIDEO_KEY,
    TRANSIENT_RETRIES,
    failures_for_people,
    made_by,
    rendition_key,
    table,
)
from vidpipe.defs.catalog import CatalogResource
from vidpipe.defs.executor import ENCODE_QUEUE, QUEUE_TAG
from vidpipe.defs.partitions import videos
from vidpipe.defs.resources import FFmpegResource
from vidpipe.defs.storage import VideoStorage
from vidpipe.media.encoder import DecodeReport, Progress, output_filename
from vidpipe.media.ladder import PlannedRendition, Rung, plan_ladder
from vidpipe.media.manifest import (
    RENDITIONS_FOLDER,
    RenditionFile,
    RenditionSet,
    SourceVideo,
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
        **made_by(),
        **rendition.decoding.as_metadata(),
    }


def _ladder_metadata(made: RenditionSet) -> dict[str, Any]:
    return {
        "made": ", ".join(f.name for f in made.files) or "none",
        "not_made": table(("rung", "why not"), list(made.not_made.items())),
        "count": len(made.files),
    }


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
