"""What every asset shares: the keys and code versions of the graph, the per-video asset decorator, the
retry policy, and how vidpipe's typed errors become failures a person reads (and refusals)."""

import errno
import logging
import os
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

from vidpipe import settings
from vidpipe.defs.catalog import CatalogResource, refused
from vidpipe.defs.partitions import videos
from vidpipe.defs.storage import VideoStorage
from vidpipe.media.errors import InvalidMediaError, StorageFullError, ToolFailedError, VidpipeError
from vidpipe.media.ladder import Rung

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
MANIFEST_CODE_VERSION = "4"
PLAYABLE_CODE_VERSION = "1"
SOURCE_VIDEO_KEY = dg.AssetKey("source_video")
PROGRESS_LOG = logging.getLogger("vidpipe.progress")
"""Every encode progress update (``Progress`` in the record's ``progress``), for a command that runs
the op in its own process: ``vidpipe process`` shows them on a terminal."""
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

    An interrupt of a run someone terminated (from the UI: the run is CANCELING) is final too:
    Dagster would otherwise hand it to the retry policy, and a run executing in one process would
    go on as if nothing had been asked; failed, the step ends the run, which Dagster marks
    canceled. Any other interrupt (vidpipe stopping) goes on as Dagster handles it: the run stays
    STARTED, to be re-run when vidpipe starts again.
    """
    try:
        try:
            yield
        except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError) as err:
            run = context.instance.get_run_by_id(context.run_id)
            if run is None or run.status != dg.DagsterRunStatus.CANCELING:
                raise
            raise dg.Failure(description="stopped: the run was terminated", allow_retries=False) from err
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


def made_by() -> dict[str, str]:
    """Which machine or worker (``settings.worker_name``) and process made an output."""
    return {"made_by": f"{settings.worker_name()}, pid {os.getpid()}"}


def table(header: tuple[str, ...], rows: list[tuple[object, ...]]) -> dg.MetadataValue:
    """A Markdown table, as the UI shows metadata tables."""
    lines = [header, tuple("---" for _ in header), *rows]
    return dg.MetadataValue.md("\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines))


STORYBOARD_KEY = dg.AssetKey("storyboard")
STREAM_KEY = dg.AssetKey("stream")
QUALITY_KEY = dg.AssetKey("quality")
MANIFEST_KEY = dg.AssetKey("video_manifest")
THUMBNAIL_KEY = dg.AssetKey("thumbnail")


def selected(
    context: dg.AssetExecutionContext, results: Iterable[dg.AssetCheckResult]
) -> Iterator[dg.AssetCheckResult]:
    """The check results of the checks this run selected."""
    for result in results:
        assert result.asset_key is not None and result.check_name is not None  # every result here names both
        if dg.AssetCheckKey(result.asset_key, result.check_name) in context.selected_asset_check_keys:
            yield result
