"""The ``thumbnails`` group: the first decoded frame, read from as little of the original as it can."""

import dagster as dg
from PIL import Image

from vidpipe.defs.assets.common import (
    THUMBNAIL_CODE_VERSION,
    failures_for_people,
    made_by,
    video_asset,
)
from vidpipe.defs.catalog import CatalogResource
from vidpipe.defs.resources import FFmpegResource
from vidpipe.defs.storage import VideoStorage
from vidpipe.media.manifest import (
    THUMBNAILS_FOLDER,
    SourceVideo,
)
from vidpipe.media.thumbnail import preview_data_uri, write_thumbnails


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
            **made_by(),
        },
    )


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
