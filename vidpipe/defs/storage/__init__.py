"""Where originals, outputs and records live: one interface, a local and an S3 implementation.

A video's files sit under its key (``media.manifest``'s layout): ``source.<ext>``, the
records ``source.json``, ``encode.json`` and ``rejection.json`` and the values steps hand on,
``steps/…`` (private), ``renditions/…``,
``thumbnails/…`` and ``manifest.json`` (public). Assets only use ``VideoStorage``'s public
methods, and hand each other keys and names, never local paths: the next step may run on
another machine. Steps work on local files: ``fetch`` gives a local copy to read, and
``publishing`` a local folder whose files are published when the block ends without an
error, never before and never in part.

- ``base``: ``VideoStorage`` (the storage operations each implementation provides, and the records
  written on top of them, once), which files are public, scratch folders;
- ``local``: ``LocalVideoStorage``, one folder;
- ``s3``: ``S3VideoStorage``, one bucket and prefix on any S3-compatible server.

Which videos exist and in what state is the catalog's question (``vidpipe.catalog``); storage keeps
the bytes and the per-video records the catalog is rebuilt from.
"""

from vidpipe.defs.storage.base import (
    StoredOriginal,
    VideoStorage,
    content_type,
    is_published,
    scratch_folder,
    shared_copies,
    sweep_scratch,
)
from vidpipe.defs.storage.local import LocalVideoStorage
from vidpipe.defs.storage.s3 import S3VideoStorage, downloaded, is_missing, shared_client

__all__ = [
    "LocalVideoStorage",
    "S3VideoStorage",
    "StoredOriginal",
    "VideoStorage",
    "content_type",
    "downloaded",
    "is_missing",
    "is_published",
    "scratch_folder",
    "shared_client",
    "shared_copies",
    "sweep_scratch",
]
