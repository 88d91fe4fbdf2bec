"""The one ``Definitions`` object: assets, jobs, sensors and resources."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource

from vidpipe import settings
from vidpipe.defs.assets import build_publish_asset, build_rendition_asset, source_video, thumbnail
from vidpipe.defs.catalog import CatalogResource
from vidpipe.defs.console import operator_console
from vidpipe.defs.executor import deployment_executor, executor_run_config
from vidpipe.defs.rejections import forget_rejected_uploads
from vidpipe.defs.resources import FFmpegResource, FolderInbox, InboxResource, S3Inbox, step_values
from vidpipe.defs.sensors import build_upload_sensor, failed_video_runs, retired_videos
from vidpipe.defs.storage import LocalVideoStorage, S3VideoStorage, VideoStorage
from vidpipe.media.ladder import DEFAULT_LADDER, Rung

PROCESS_JOB_NAME = "process_video"


def build_assets(ladder: tuple[Rung, ...] = DEFAULT_LADDER) -> list[dg.AssetsDefinition]:
    """The asset graph (with its checks), for ``Definitions`` and in-process ``materialize``."""
    return [
        source_video,
        build_rendition_asset(ladder),
        thumbnail,
        build_publish_asset(ladder),
    ]


def build_definitions(ladder: tuple[Rung, ...] = DEFAULT_LADDER) -> dg.Definitions:
    process_video = dg.define_asset_job(
        PROCESS_JOB_NAME,
        selection=dg.AssetSelection.all(),
        description="Everything vidpipe makes from one uploaded video.",
        config=executor_run_config(),  # backfills and the Launchpad
    )
    return dg.Definitions(
        assets=build_assets(ladder),
        executor=deployment_executor(),
        jobs=[process_video, forget_rejected_uploads],
        loggers={"console": operator_console},
        sensors=[build_upload_sensor(process_video), failed_video_runs, retired_videos],
        resources={
            **{name: fixed_by_deployment(resource) for name, resource in deployment_resources().items()},
            "io_manager": step_values,
        },
    )


def current_definitions() -> dg.Definitions:
    """``build_definitions()`` for this process's environment, which the settings are read from, built
    once per environment: the module's ``defs`` and ``process_video_job`` are one object while the
    environment stays as it was.

    Dagster builds a ``Definitions``' asset graph and jobs when they are first asked for, about 0.75 s of
    CPU on 2 cores. Step processes fork from a server that has already done it (``step_preload``),
    so each step finds them built instead of building them again."""
    return _definitions_for(frozenset(os.environ.items()))


@functools.cache
def _definitions_for(_environment: frozenset[tuple[str, str]]) -> dg.Definitions:
    return build_definitions()


def process_video_job() -> dg.JobDefinition:
    """The job the upload sensor runs, as a module-level function: ``dg.reconstructable`` needs one
    (scripts and tests that execute it the way the daemon's run worker does)."""
    return current_definitions().resolve_job_def(PROCESS_JOB_NAME)


def deployment_resources() -> dict[str, dg.ConfigurableResource]:
    """The resources this deployment's environment sets up (see ``settings``), for runs and for commands."""
    return {
        "storage": video_storage(settings.storage_location()),
        "catalog": CatalogResource(url=settings.catalog_url(), retire_after_days=settings.retire_after_days()),
        "ffmpeg": FFmpegResource(**settings.limit_overrides()),
        "inbox": upload_inbox(settings.inbox_location(), settle_seconds=settings.settle_seconds()),
    }


def video_storage(location: Path | settings.S3Location) -> VideoStorage:
    """The storage ``VIDPIPE_STORAGE`` names: a folder, or a bucket reached as the AWS variables say
    (``S3Resource`` with nothing set reads them, so no credential is ever part of its config)."""
    if isinstance(location, Path):
        return LocalVideoStorage(root=str(location))
    return S3VideoStorage(
        s3=S3Resource(), bucket=location.bucket, prefix=location.prefix, scratch=str(settings.scratch_dir())
    )


def upload_inbox(location: Path | settings.S3Location, settle_seconds: float) -> InboxResource:
    """The inbox ``VIDPIPE_INBOX`` names, a folder or an S3 prefix (reached as for ``video_storage``)."""
    if isinstance(location, Path):
        return FolderInbox(path=str(location), settle_seconds=settle_seconds)
    return S3Inbox(
        s3=S3Resource(),
        bucket=location.bucket,
        prefix=location.prefix,
        scratch=str(settings.scratch_dir()),
        settle_seconds=settle_seconds,
    )


def fixed_by_deployment(resource: dg.ConfigurableResource) -> dg.ResourceDefinition:
    """``resource`` exactly as configured here, from the environment; a run's config cannot change it.

    Anyone who can launch a run (the UI, the GraphQL API) could otherwise point the binaries
    at any executable or the inbox and storage at any folder: Dagster lets run config
    override a ``ConfigurableResource``'s fields. With an empty config schema such a run is
    refused before it starts.
    """
    return dg.ResourceDefinition(
        resource_fn=lambda _: resource,
        config_schema={},
        description=f"{type(resource).__name__}, set by the deployment's environment; not configurable per run.",
    )


defs = current_definitions()
