"""Refused uploads: kept in storage but out of the asset graph; listed, re-tried or forgotten in one place.

A refused upload's partition is removed once its run has failed (``failed_video_runs``):
one bad upload among thousands must not show every asset as failed. Its original and
``rejection.json`` stay in storage, which is where rejections are listed from. The same
functions serve the ``vidpipe rejections | rerun | forget`` commands and the
``forget_rejected_uploads`` job of the UI.
"""

import dagster as dg

from vidpipe.catalog import Catalog
from vidpipe.defs.catalog import CatalogResource
from vidpipe.defs.partitions import VIDEOS
from vidpipe.defs.storage import VideoStorage
from vidpipe.media.errors import UnknownVideoError


def withdraw_partition(instance: dg.DagsterInstance, key: str) -> None:
    """Take a refused upload's partition out of the asset graph (its runs and events stay in the instance)."""
    if instance.has_dynamic_partition(VIDEOS, key):
        instance.delete_dynamic_partition(VIDEOS, key)


def restore_partitions(instance: dg.DagsterInstance, storage: VideoStorage, keys: list[str]) -> None:
    """Add back the partitions of ``keys`` whose original is kept (refused uploads to re-try)."""
    missing = [key for key in keys if not instance.has_dynamic_partition(VIDEOS, key)]
    unknown = [key for key in missing if storage.stored_original(key) is None]
    if unknown:
        raise UnknownVideoError(f"no video {', '.join(unknown)}: neither a partition nor a kept original")
    if missing:
        instance.add_dynamic_partitions(VIDEOS, missing)


def forget_rejected(instance: dg.DagsterInstance, storage: VideoStorage, catalog: Catalog, keys: list[str]) -> None:
    """Remove refused uploads for good: their kept original, their records, their catalog row and their partition.

    Only refused uploads can be forgotten this way (a mistyped key must not delete a good video).
    An upload forgotten and dropped into the inbox again is processed as new.
    """
    not_refused = [key for key in keys if storage.rejection_reason(key) is None]
    if not_refused:
        raise UnknownVideoError(f"not a refused upload: {', '.join(not_refused)} (see `vidpipe rejections`)")
    for key in keys:
        storage.forget(key)
        catalog.forget(key)
        withdraw_partition(instance, key)


class ForgetConfig(dg.Config):
    videos: list[str]
    """Keys of refused uploads, as `vidpipe rejections` or the runs' `dagster/partition` tags list them."""


@dg.op
def forget_uploads(
    context: dg.OpExecutionContext, config: ForgetConfig, storage: VideoStorage, catalog: CatalogResource
) -> None:
    forget_rejected(context.instance, storage, catalog.catalog(), config.videos)
    context.log.info(f"forgot {len(config.videos)} refused upload(s): {', '.join(config.videos)}")


@dg.job(
    name="forget_rejected_uploads",
    executor_def=dg.in_process_executor,
    description="Remove refused uploads for good: their kept original, rejection record and partition. "
    "Launchpad config: `ops: {forget_uploads: {config: {videos: [KEY, ...]}}}`.",
)
def forget_rejected_uploads() -> None:
    forget_uploads()
