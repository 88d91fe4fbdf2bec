"""Assets: the upload taken into storage, its renditions, its thumbnail, its storyboard, its adaptive
stream, its quality report and its manifest; one module per group.

- ``common``: the graph's keys and code versions, the per-video asset decorator, the retry policy, and
  ``failures_for_people`` (typed errors into failures a person reads, and refusals);
- ``ingest``: ``source_video``; ``renditions``: the ladder's op; ``thumbnails``: the first frame;
- ``publish``: the storyboard, the stream, the quality report and the manifest, one op after the encode.

A new asset calls a media function from a module of its group here and joins ``build_assets`` in
``vidpipe/definitions.py``.
"""

from vidpipe.defs.assets.common import PROGRESS_LOG
from vidpipe.defs.assets.ingest import source_video
from vidpipe.defs.assets.publish import build_publish_asset
from vidpipe.defs.assets.renditions import build_rendition_asset
from vidpipe.defs.assets.thumbnails import thumbnail

__all__ = ["PROGRESS_LOG", "build_publish_asset", "build_rendition_asset", "source_video", "thumbnail"]
