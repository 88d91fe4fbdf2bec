"""The ``renditions`` group: one asset per rung and the ladder, made by one op: the rung the video is first
published with in one ffmpeg run and the rest of the ladder in another beside it, at a lower CPU priority while
a first rung encodes on the machine; the playable milestone (``playable``) as soon as the first is made, then the rest."""

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import dagster as dg

from vidpipe.defs.assets.common import (
    LADDER_KEY,
    LADDER_OUTPUT,
    PROGRESS_LOG,
    SOURCE_VIDEO_KEY,
    THUMBNAIL_KEY,
    TRANSIENT_RETRIES,
    failures_for_people,
    made_by,
    rendition_key,
    table,
)
from vidpipe.defs.assets.playable import PLAYABLE_KEY, PLAYABLE_OUT, PLAYABLE_OUTPUT, publish_playable, still_complete
from vidpipe.defs.catalog import CatalogResource
from vidpipe.defs.executor import ENCODE_QUEUE, QUEUE_TAG
from vidpipe.defs.partitions import videos
from vidpipe.defs.resources import FFmpegResource
from vidpipe.defs.storage import VideoStorage
from vidpipe.media.encoder import DecodeReport, EncodeCommand, Encoded, Progress, output_filename
from vidpipe.media.ladder import LadderPlan, PlannedRendition, Rung, plan_ladder, playable_rendition
from vidpipe.media.manifest import (
    COMPLETE,
    RENDITIONS_FOLDER,
    RenditionFile,
    RenditionSet,
    SourceVideo,
    manifest_state,
)
from vidpipe.media.priority import CpuPriority, urgent, urgent_work_running
from vidpipe.media.probe import VideoInfo
from vidpipe.media.thumbnail import ThumbnailFile


def build_rendition_asset(ladder: tuple[Rung, ...]) -> dg.AssetsDefinition:
    """One asset per rung, ``renditions/ladder`` (the video's set of renditions) and ``playable``, all made by
    one op. With ``playable`` selected, the op encodes the rung the video is first published with in one ffmpeg
    run and the other selected rungs in a second one beside it (decoded once, at ``REST_NICENESS`` while urgent work runs), publishes the
    playable milestone as soon as the first is made, then waits for the rest; without it (a one-rung backfill),
    only the latter. The first rung's run decodes the source a second time: for a 30 s 1080p clip on 2 cores
    ~9 s of CPU, and the ladder ends ~3 s (8 %) later than in one ffmpeg run (benchmarks/README.md, S12). That
    rung is not encoded again.

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

    outs[PLAYABLE_OUTPUT] = PLAYABLE_OUT
    audio_kbps = {rung.name: rung.audio_kbps for rung in ladder}

    @dg.multi_asset(
        name="renditions",
        outs=outs,
        ins={
            "source_video": dg.AssetIn(key=SOURCE_VIDEO_KEY),
            # The playable milestone lists the thumbnails: the thumbnail step goes first (it takes ~0.2 s).
            "thumbnail": dg.AssetIn(key=THUMBNAIL_KEY),
        },
        internal_asset_deps={
            LADDER_OUTPUT: {SOURCE_VIDEO_KEY, *(rendition_key(rung) for rung in ladder)},
            PLAYABLE_OUTPUT: {SOURCE_VIDEO_KEY, THUMBNAIL_KEY},
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
        thumbnail: list[ThumbnailFile],
        ffmpeg: FFmpegResource,
        storage: VideoStorage,
        catalog: CatalogResource,
    ) -> Iterator[dg.Output]:
        key = source_video.key
        plan = plan_ladder(source_video.info, ladder)
        planned = [p for p in plan.renditions if rendition_key(p.rung) in context.selected_asset_keys]
        first, complete = _first_pass(context, plan, planned, storage, key)
        rest_planned = [p for p in planned if p is not first]
        with (
            failures_for_people(context, storage, catalog, key, making="the renditions"),
            storage.fetch(key, source_video.file) as original,
        ):
            encode = _Encoder(context, source_video, original, ffmpeg, storage)
            made: dict[str, RenditionFile] = {}
            if complete is not None:
                yield still_complete(complete)
            if first is not None:
                reused = _made_by_this_run(context, first, ffmpeg, storage, key)
                with encode.alongside(rest_planned, start_now=not reused) as rest_done:
                    with urgent():
                        made = reused or encode([first], terminal_progress=not rest_planned)
                        yield _output(made[first.rung.name], storage, key)
                        yield publish_playable(
                            context,
                            source_video,
                            made[first.rung.name],
                            thumbnail,
                            audio_kbps,
                            ffmpeg,
                            storage,
                            catalog,
                        )
                    rest = rest_done()
            else:
                rest = encode(rest_planned)
            made |= rest
            made_set = None
            if LADDER_KEY in context.selected_asset_keys:
                made_set = _rendition_set(ladder, plan.skipped, made, key, ffmpeg, storage)
        for rendition in rest.values():
            yield _output(rendition, storage, key)
        for rung in ladder:
            if rung.name in plan.skipped and rendition_key(rung) in context.selected_asset_keys:
                context.log.debug(f"{rung.name} is not made for this video: {plan.skipped[rung.name]}")
        if made_set is not None:
            yield dg.Output(made_set, output_name=LADDER_OUTPUT, metadata=_ladder_metadata(made_set))

    return renditions


def _first_pass(
    context: dg.AssetExecutionContext,
    plan: LadderPlan,
    planned: list[PlannedRendition],
    storage: VideoStorage,
    key: str,
) -> tuple[PlannedRendition | None, dict | None]:
    """What to encode alone, first, to publish the playable milestone (``playable``), if it is selected: its
    rendition (``playable_rendition``), or, for a video already published complete, that manifest instead (it
    stays published while everything is made again)."""
    if PLAYABLE_KEY not in context.selected_asset_keys:
        return None, None
    published = storage.manifest(key)
    if published is not None and manifest_state(published) == COMPLETE:
        return None, published
    first = playable_rendition(plan)
    if first is None or first not in planned:
        raise dg.Failure(
            description=f"playable needs the rung video {key} is first published with: select it too "
            f"({rendition_key(first.rung).to_user_string() if first else 'an H.264 or AAC rung'})",
            allow_retries=False,
        )
    return first, None


def _made_by_this_run(
    context: dg.AssetExecutionContext, first: PlannedRendition, ffmpeg: FFmpegResource, storage: VideoStorage, key: str
) -> dict[str, RenditionFile]:
    """``first``'s rendition, if this run or one it retries made it (a retry after the playable milestone,
    when the machine failed, encodes only the rest); else nothing."""
    record = storage.rendition_records(key).get(first.rung.name)
    file = f"{RENDITIONS_FOLDER}/{output_filename(first.rung)}"
    if record is None or record.get("run_group") != _run_group(context) or storage.stored_size(key, file) is None:
        return {}
    context.log.info(f"{first.rung.name} was encoded by an earlier attempt of this run: taken as it is")
    with storage.fetch(key, file) as local:
        info = ffmpeg.probe(local)
    return {first.rung.name: _from_record(first.rung, info, record)}


def _run_group(context: dg.AssetExecutionContext) -> str:
    """The id shared by a run and its retries: the first run's."""
    return context.run.root_run_id or context.run.run_id


def _output(rendition: RenditionFile, storage: VideoStorage, key: str) -> dg.Output:
    location = storage.location(key, f"{RENDITIONS_FOLDER}/{rendition.file}")
    return dg.Output(rendition, output_name=rendition.name, metadata=_rendition_metadata(rendition, location))


REST_NICENESS = 10
"""The CPU niceness of the rest of the ladder's ffmpeg while urgent work (a first rung, a playable stream:
``priority.urgent``) runs on the machine, this video's or another's. The first rung's ffmpeg runs at the usual
priority and is decoding-bound (about 1.6 of 2 cores for a 1080p source): beside it the rest takes what is left,
and gets the usual priority back as soon as nothing urgent runs (checked every second)."""


class _Encoder:
    """Encodes sets of ``source``'s rungs, each set in one ffmpeg run, from ``original`` (its local copy), and
    records how each rung was made."""

    def __init__(
        self,
        context: dg.AssetExecutionContext,
        source: SourceVideo,
        original: Path,
        ffmpeg: FFmpegResource,
        storage: VideoStorage,
    ):
        self.context, self.source, self.original, self.ffmpeg, self.storage = context, source, original, ffmpeg, storage

    def __call__(self, planned: list[PlannedRendition], *, terminal_progress: bool = True) -> dict[str, RenditionFile]:
        """Encode ``planned`` now; the renditions made. ``terminal_progress``: the encode's progress also goes
        to ``PROGRESS_LOG`` (a terminal's progress bar), which follows one encode at a time."""
        if not planned:
            return {}
        self._announce(planned)
        return self._recorded(planned, *self._run(planned, _progress_logger(self.context, terminal=terminal_progress)))

    @contextmanager
    def alongside(
        self, planned: list[PlannedRendition], *, start_now: bool = True
    ) -> Iterator[Callable[[], dict[str, RenditionFile]]]:
        """Start encoding ``planned`` in the background (``REST_NICENESS``) and give the block a function
        that waits for it and returns the renditions made; with ``start_now`` False, that function encodes
        them itself. The run's log hears of the background encode from the op's own thread, while the block
        waits. An encode still running when the block ends (it raised) is stopped."""
        if not planned or not start_now:
            yield lambda: self(planned)
            return
        self._announce(planned, beside=True)
        latest: list[Progress] = []
        stop = threading.Event()
        priority = CpuPriority(REST_NICENESS)

        def on_progress(progress: Progress) -> None:
            PROGRESS_LOG.debug("encoding", extra={"progress": progress})
            latest[:] = [progress]

        def finished() -> dict[str, RenditionFile]:
            log = _progress_logger(self.context, terminal=False)
            while True:
                priority.set(REST_NICENESS if urgent_work_running() else 0)
                try:
                    result = future.result(timeout=1.0)
                except TimeoutError:
                    if latest:
                        log(latest[0])
                    continue
                if latest:
                    log(latest[0])
                return self._recorded(planned, *result)

        with ThreadPoolExecutor(max_workers=1) as background:
            future = background.submit(self._run, planned, on_progress, priority=priority, stop=stop)
            try:
                yield finished
            finally:
                stop.set()

    def _announce(self, planned: list[PlannedRendition], *, beside: bool = False) -> None:
        sizes = ", ".join(f"{p.rung.name} {p.width}x{p.height}" for p in planned)
        where = ", beside the first rung at a lower CPU priority" if beside else ""
        self.context.log.info(f"encoding {sizes} in one ffmpeg run{where}")

    def _run(
        self,
        planned: list[PlannedRendition],
        on_progress: Callable[[Progress], None],
        *,
        priority: CpuPriority | None = None,
        stop: threading.Event | None = None,
    ) -> tuple[EncodeCommand, Encoded, dict[str, VideoInfo]]:
        """One ffmpeg run of ``planned``, its files published; touches no Dagster context (it may run in a
        thread of its own)."""
        with self.storage.publishing(self.source.key, RENDITIONS_FOLDER) as out_dir:
            command, encoded = self.ffmpeg.encode(
                self.original, self.source.info, planned, out_dir, on_progress, priority=priority, stop=stop
            )
            # ffprobe is mostly process start-up: probing the outputs side by side saves ~1 s.
            with ThreadPoolExecutor(max_workers=4) as pool:
                infos = dict(zip(encoded.outputs, pool.map(self.ffmpeg.probe, encoded.outputs.values()), strict=True))
        return command, encoded, infos

    def _recorded(
        self, planned: list[PlannedRendition], command: EncodeCommand, encoded: Encoded, infos: dict[str, VideoInfo]
    ) -> dict[str, RenditionFile]:
        """The renditions of one ffmpeg run, each with the exact command, kept beside the original."""
        public_argv = command.argv_for_people(self.source.file, RENDITIONS_FOLDER)
        if not encoded.decoding.clean:
            self.context.log.warning(f"the source {encoded.decoding.summary()}; what decoded is published")
        record = {
            "argv": command.argv,
            "public_argv": public_argv,
            "decoding": asdict(encoded.decoding),
            "run_group": _run_group(self.context),
        }
        self.storage.record_renditions(self.source.key, {p.rung.name: record for p in planned})
        return {p.rung.name: _from_record(p.rung, infos[p.rung.name], record) for p in planned}


def _from_record(rung: Rung, info: VideoInfo, record: dict[str, Any]) -> RenditionFile:
    """``rung``'s rendition as ffprobe saw it (``info``), with how it was made (``record_renditions``)."""
    return RenditionFile(
        name=rung.name,
        file=output_filename(rung),
        container=rung.format.container,
        info=info,
        argv=tuple(record["public_argv"]),
        decoding=DecodeReport(**record["decoding"]),
    )


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
            with storage.fetch(key, earlier) as local:
                files.append(_from_record(rung, ffmpeg.probe(local), records[rung.name]))
        else:
            not_made[rung.name] = f"not encoded yet: materialize {rendition_key(rung).to_user_string()} for it"
    return RenditionSet(files=tuple(files), not_made=not_made)


def _rendition_metadata(rendition: RenditionFile, location: str) -> dict[str, Any]:
    info = rendition.info
    return {
        "file": dg.MetadataValue.path(location),
        "width": info.display_width,
        "height": info.display_height,
        "duration": round(info.duration, 3),
        "bitrate": info.bit_rate or 0,
        "bytes": info.size_bytes,
        "ffmpeg_argv": dg.MetadataValue.json(list(rendition.argv)),
        **made_by(),
        **rendition.decoding.as_metadata(),
    }


def _ladder_metadata(made: RenditionSet) -> dict[str, Any]:
    return {
        "made": ", ".join(f.name for f in made.files) or "none",
        "not_made": table(("rung", "why not"), list(made.not_made.items())),
        "count": len(made.files),
    }


def _progress_logger(context: dg.AssetExecutionContext, every_seconds: float = 5.0, *, terminal: bool = True):
    """Encode progress into the run's log every ``every_seconds``, and (``terminal``) every update to
    ``PROGRESS_LOG``."""
    last = [0.0]

    def log(progress: Progress) -> None:
        if terminal:
            PROGRESS_LOG.debug("encoding", extra={"progress": progress})
        now = time.monotonic()
        if progress.finished or now - last[0] >= every_seconds:
            last[0] = now
            speed = f" at {progress.speed:g}x" if progress.speed else ""
            done, total = progress.seconds_done, progress.seconds_total
            context.log.info(f"encoding {progress.fraction:.0%} ({done:.1f} of {total:.1f} s){speed}")

    return log
