"""Asset checks: shown per video on the asset's Checks tab."""

import json
import warnings

import dagster as dg

from vidpipe.defs.assets import videos
from vidpipe.defs.resources import VideoStorage
from vidpipe.media.manifest import manifest_problems

# Per-partition checks are a preview feature in Dagster 1.13; they are what makes the UI show
# a check result for each video rather than only for the latest one.
warnings.filterwarnings("ignore", category=dg.PreviewWarning, message="Specifying a partitions_def on an AssetCheckSpec")


@dg.asset_check(asset="video_manifest", partitions_def=videos)
def manifest_outputs_complete(context: dg.AssetCheckExecutionContext, storage: VideoStorage) -> dg.AssetCheckResult:
    """Every file the manifest lists exists with its listed size, and every rendition lasts as long as the source."""
    video_dir = storage.output_dir(context.partition_key)
    manifest = json.loads((video_dir / "manifest.json").read_text())
    problems = manifest_problems(manifest, video_dir)
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "files_checked": len(manifest["renditions"]) + len(manifest["thumbnails"]),
            "problems": "\n".join(problems) or "none",
        },
    )
