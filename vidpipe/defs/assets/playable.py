"""The ``playable`` milestone: a video published with its first rendition, its stream and its thumbnails, made
by the renditions op before it encodes the rest of the ladder (``renditions``), so that a viewer can watch
within seconds of the upload while the other rungs, the storyboard and the quality report are made.

What a later failure does (README, "Playable, then complete"):

- the upload is refused (the rest of the ladder finds it broken): every output is withdrawn, the playable
  version with them, as for any refusal;
- a machine failure (ffmpeg killed, a lost worker, a full disk): the playable version stays published, and the
  retry encodes only the rest; the first rendition is taken as it is when this run (or a run it retries)
  made it.
"""

import time
from typing import Any

import dagster as dg

from vidpipe.defs.assets.common import PLAYABLE_CODE_VERSION, made_by, table
from vidpipe.defs.assets.streams import make_stream
from vidpipe.defs.catalog import CatalogResource, published
from vidpipe.defs.resources import FFmpegResource
from vidpipe.defs.storage import VideoStorage, shared_copies
from vidpipe.media.ladder import PLAYABLE_MIN_SHORT_SIDE
from vidpipe.media.manifest import MANIFEST_FILE, PLAYABLE, RenditionFile, SourceVideo, build_manifest
from vidpipe.media.thumbnail import ThumbnailFile

PLAYABLE_OUTPUT = "playable"
PLAYABLE_KEY = dg.AssetKey(PLAYABLE_OUTPUT)
PLAYABLE_OUT = dg.AssetOut(
    key=PLAYABLE_KEY,
    code_version=PLAYABLE_CODE_VERSION,
    is_required=False,
    group_name="manifest",
    description="The video published as soon as it can be watched: its first rendition (the smallest H.264 rung "
    f"with {PLAYABLE_MIN_SHORT_SIDE} lines or more, encoded in an ffmpeg run of its own, the rest of the ladder beside it), that rendition's "
    'HLS master and DASH MPD, the thumbnails, and manifest.json saying "state": "playable". video_manifest '
    'publishes the same names again with everything, "state": "complete". Its value is the playable manifest.',
)


def publish_playable(
    context: dg.AssetExecutionContext,
    source: SourceVideo,
    first: RenditionFile,
    thumbnails: list[ThumbnailFile],
    audio_kbps: dict[str, int],
    ffmpeg: FFmpegResource,
    storage: VideoStorage,
    catalog: CatalogResource,
) -> dg.Output:
    """Publish ``first``'s stream, then the playable manifest listing it and the thumbnails, then the catalog
    row (``playable``); the ``playable`` output, with how long after its run was requested it was watchable."""
    key = source.key
    with shared_copies(storage, key) as local:
        package, stream = make_stream(key, [first], audio_kbps, ffmpeg, storage, local)
    manifest = build_manifest(source, [first], thumbnails, package, state=PLAYABLE)
    published(catalog.catalog(), storage, key, manifest)
    return dg.Output(manifest, output_name=PLAYABLE_OUTPUT, metadata=_metadata(context, manifest, storage, stream))


def _metadata(
    context: dg.AssetExecutionContext, manifest: dict[str, Any], storage: VideoStorage, stream: dict[str, Any]
) -> dict[str, Any]:
    key = manifest["video"]
    record = context.instance.get_run_record_by_id(context.run.run_id)
    since = time.time() - record.create_timestamp.timestamp() if record is not None else float("nan")
    rendition = manifest["renditions"][0]
    return {
        "state": PLAYABLE,
        "rendition": f"{rendition['name']} {rendition['width']}x{rendition['height']}",
        "seconds_after_run_requested": dg.MetadataValue.float(round(since, 2)),
        "manifest_file": dg.MetadataValue.path(storage.location(key, MANIFEST_FILE)),
        **{name: value for name, value in stream.items() if name in ("hls", "dash", "levels")},
        "thumbnails": table(
            ("path", "size"), [(t["path"], f"{t['width']}x{t['height']}") for t in manifest["thumbnails"]]
        ),
        **made_by(),
    }


def still_complete(manifest: dict[str, Any]) -> dg.Output:
    """The ``playable`` output of a run that re-makes a video already published complete: the complete version
    stays published until the new one replaces it (a re-run never falls back to one rendition)."""
    return dg.Output(
        manifest,
        output_name=PLAYABLE_OUTPUT,
        metadata={"state": "complete", "why": "already published complete; it stays so while it is made again"},
    )
