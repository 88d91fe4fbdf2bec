"""The one ``Definitions`` object: assets, job, sensor and resources."""

from __future__ import annotations

import dagster as dg

from vidpipe import settings
from vidpipe.defs.assets import build_manifest_asset, build_rendition_asset, source_video, thumbnail
from vidpipe.defs.executor import step_executor
from vidpipe.defs.resources import FFmpegResource, InboxResource, LocalVideoStorage
from vidpipe.defs.sensors import build_upload_sensor, failed_video_runs
from vidpipe.media.ladder import DEFAULT_LADDER, Rung

PROCESS_JOB_NAME = "process_video"


def build_assets(ladder: tuple[Rung, ...] = DEFAULT_LADDER) -> list[dg.AssetsDefinition]:
    """The asset graph (with its checks), for ``Definitions`` and in-process ``materialize``."""
    return [source_video, build_rendition_asset(ladder), thumbnail, build_manifest_asset(ladder)]


def build_definitions(ladder: tuple[Rung, ...] = DEFAULT_LADDER) -> dg.Definitions:
    process_video = dg.define_asset_job(
        PROCESS_JOB_NAME,
        selection=dg.AssetSelection.all(),
        description="Everything vidpipe makes from one uploaded video.",
    )
    return dg.Definitions(
        assets=build_assets(ladder),
        executor=step_executor,
        jobs=[process_video],
        sensors=[build_upload_sensor(process_video), failed_video_runs],
        resources={
            "storage": LocalVideoStorage(root=str(settings.storage_dir())),
            "ffmpeg": FFmpegResource(**settings.limit_overrides()),
            "inbox": InboxResource(path=str(settings.inbox_dir()), settle_seconds=settings.settle_seconds()),
        },
    )


defs = build_definitions()
