"""The ``ingest`` group: the upload taken into immutable storage, probed and validated (``source_video``)."""

import dagster as dg

from vidpipe.defs.assets.common import (
    failures_for_people,
    made_by,
    video_asset,
)
from vidpipe.defs.catalog import CatalogResource, record_original
from vidpipe.defs.partitions import PARTITION_TAG, UPLOAD_FILE_TAG, UPLOAD_NAME_TAG
from vidpipe.defs.resources import FFmpegResource, InboxResource
from vidpipe.defs.storage import VideoStorage
from vidpipe.media.errors import UploadError
from vidpipe.media.manifest import (
    SourceVideo,
)


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
            **made_by(),
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
