"""The storage interface, ``VideoStorage``, and what every storage shares: the layout of a video's folder,
the records written on the storage operations, which files are public, and scratch folders.

Each implementation provides the storage operations (``store_original``, ``fetch``,
``publishing``, ``location``, ``delivery``, ``record_failed_run`` and the small ``_read``, ``_write``,
``_size``, ``_remove`` and ``_videos_with``); the records are written on top of those, once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, get_args

import dagster as dg

from vidpipe.media.errors import InvalidVideoKeyError, VidpipeError
from vidpipe.media.files import (
    process_alive,
)
from vidpipe.media.keys import is_partition_key
from vidpipe.media.manifest import MANIFEST_FILE, RENDITIONS_FOLDER, STORYBOARD_FOLDER, STREAM_FOLDER, THUMBNAILS_FOLDER
from vidpipe.media.packaging import DASH_MIME_TYPE, HLS_MIME_TYPE, SEGMENT_MIME_TYPE
from vidpipe.media.storyboard import VTT_MIME_TYPE

REJECTION_FILE = "rejection.json"
ENCODE_RECORD_FILE = "encode.json"
SOURCE_RECORD_FILE = "source.json"
OUTPUT_FOLDERS = (RENDITIONS_FOLDER, THUMBNAILS_FOLDER, STREAM_FOLDER, STORYBOARD_FOLDER)
FAILED_RUNS_FILE = "failed_runs.jsonl"
STEP_VALUES_FOLDER = "steps"
CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".m4a": "audio/mp4",
    ".webm": "video/webm",
    ".jpg": "image/jpeg",
    ".webp": "image/webp",
    ".json": "application/json",
    ".m3u8": HLS_MIME_TYPE,
    ".mpd": DASH_MIME_TYPE,
    ".m4s": SEGMENT_MIME_TYPE,
    ".vtt": VTT_MIME_TYPE,
}
"""What players and browsers are told each published file is; anything else is ``application/octet-stream``."""


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


@contextmanager
def shared_copies(storage: VideoStorage, key: str) -> Iterator[Callable[[str], Path]]:
    """For the threads of one step: a function giving a local copy of ``key``'s stored file, fetched once
    however many threads ask for it (from S3, downloaded once), kept for the block's duration."""
    copies: dict[str, Path] = {}
    lock = threading.Lock()
    with ExitStack() as kept:

        def local(file: str) -> Path:
            with lock:
                if file not in copies:
                    copies[file] = kept.enter_context(storage.fetch(key, file))
                return copies[file]

        yield local


ScratchKind = Literal["fetch", "publish", "package", "quality"]
"""What a scratch folder holds: a download, outputs before their upload, a stream being packaged, or the
quality filters' per-frame statistics."""


@contextmanager
def scratch_folder(scratch: str, kind: ScratchKind) -> Iterator[Path]:
    """A fresh folder in this machine's ``scratch``, removed with what it holds when the block ends. Its
    name carries this process's id, so that ``sweep_scratch`` finds it if the process is killed first."""
    Path(scratch).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{kind}-{os.getpid()}-", dir=scratch))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


_SCRATCH_FOLDER = re.compile(rf"(?:{'|'.join(get_args(ScratchKind))})-(\d+)-\w+")


def sweep_scratch(scratch: Path) -> list[Path]:
    """Remove the scratch folders of processes that no longer run: a worker killed in the middle of a
    step leaves its download or its outputs behind. Returns what it removed."""
    swept = []
    for folder in scratch.glob("*-*-*"):
        found = _SCRATCH_FOLDER.fullmatch(folder.name)
        if found and folder.is_dir() and not process_alive(int(found[1])):
            shutil.rmtree(folder, ignore_errors=True)
            swept.append(folder)
    return swept


def utc_timestamp() -> str:
    """Now, for records: ISO 8601 in UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class PartialCopy:
    """A local file as long as a stored file, holding some of its bytes; the rest reads as zeros."""

    path: Path
    held: tuple[range, ...]
    """The byte ranges of the stored file that ``path`` holds."""

    @property
    def complete(self) -> bool:
        return self.held == (range(0, self.path.stat().st_size),)

    def holds(self, wanted: list[range]) -> bool:
        return all(any(h.start <= w.start and w.stop <= h.stop for h in self.held) for w in wanted)


@dataclass(frozen=True)
class StoredOriginal:
    file: str
    """The original's file name under the video's key (``source.<ext>``)."""
    name: str
    """The upload's name for people (see ``inbox.readable_name``)."""
    name_ref: str
    """The upload's exact name in the inbox, percent-encoded (see ``inbox.name_ref``)."""
    sha256: str
    size: int | None = None
    """Its size in bytes (absent from records written before it was kept)."""
    stored_at: str | None = None
    """When it was stored, ISO 8601 in UTC (absent from records written before it was kept)."""


class VideoStorage(dg.ConfigurableResource):
    """Where originals and outputs live, by video key and a file's path under it."""

    # What each storage implements.

    @abstractmethod
    def store_original(self, key: str, upload: Path, name: str, name_ref: str) -> StoredOriginal:
        """Copy an upload into immutable storage; refuse it if its content no longer matches ``key``."""

    @abstractmethod
    def fetch(self, key: str, file: str) -> AbstractContextManager[Path]:
        """A local copy of ``key``'s ``file`` to read, for the block's duration."""

    @contextmanager
    def fetch_ends(self, key: str, file: str, head: int, tail: int) -> Iterator[PartialCopy]:
        """A local file holding at least the first ``head`` and the last ``tail`` bytes of ``key``'s ``file``,
        where containers keep their header and index, without copying the rest (object storage reads
        just those ranges); for the block's duration. A local storage's file is complete."""
        with self.fetch(key, file) as path:
            yield PartialCopy(path, (range(0, path.stat().st_size),))

    @abstractmethod
    def publishing(self, key: str, folder: str) -> AbstractContextManager[Path]:
        """A local folder; the files in it when the block ends without an error become ``key``'s
        ``folder/<name>``, replacing files of the same name."""

    @abstractmethod
    def location(self, key: str, file: str = "") -> str:
        """Where ``key``'s ``file`` (or, with none, the video's folder) is, for people: a path or a URL."""

    @abstractmethod
    def record_failed_run(self, entry: dict) -> None:
        """Append one failed run to the operators' log."""

    @abstractmethod
    def _read(self, path: str) -> bytes | None:
        """The content of ``path`` (``<key>/<file>``), ``None`` if there is none."""

    @abstractmethod
    def _write(self, path: str, data: bytes) -> None:
        """Store ``data`` at ``path``, whole or not at all."""

    @abstractmethod
    def _size(self, path: str) -> int | None:
        """The size of ``path``, ``None`` if there is none."""

    @abstractmethod
    def _remove(self, path: str) -> None:
        """Remove ``path``: a file, or a folder with everything under it; nothing if there is none."""

    @abstractmethod
    def _videos_with(self, file: str) -> list[str]:
        """The keys of the videos that have ``file``, in key order (a listing of every video: for the
        commands that list or rebuild everything, never for the sensor or a page)."""

    # Built on those, the same for every storage.

    def path(self, key: str, file: str = "") -> str:
        """``<key>/<file>``, for a key that cannot leave the storage's root."""
        if not is_partition_key(key):
            raise InvalidVideoKeyError(
                f"{json.dumps(key)} is not a video key: vidpipe's keys are a name and a 12-digit content hash, "
                "like holiday-0123456789ab"
            )
        return f"{key}/{file}" if file else key

    def stored_original(self, key: str) -> StoredOriginal | None:
        """The original already stored for ``key``, if any."""
        record = self._read_json(self.path(key, SOURCE_RECORD_FILE))
        if record is None:
            return None
        return StoredOriginal(
            file=record["file"],
            name=record["name"],
            name_ref=record.get("name_ref", ""),  # absent from records written before it was kept
            sha256=record["sha256"],
            size=record.get("size"),
            stored_at=record.get("stored_at"),
        )

    def publish_file(self, key: str, file: str, data: bytes) -> None:
        """Publish ``data`` as ``key``'s ``file``, whole or not at all."""
        self._write(self.path(key, file), data)

    def stored_size(self, key: str, file: str) -> int | None:
        """The size of ``key``'s ``file``; ``None`` if there is none."""
        return self._size(self.path(key, file))

    def record_rejection(self, key: str, error: VidpipeError) -> None:
        """Keep why ``key``'s upload was refused, next to its original."""
        stored = self.stored_original(key)
        record = {
            "video": key,
            "reason": error.message,
            "error": type(error).__name__,
            "original": stored.file if stored else None,
            "original_name": stored.name if stored else None,
            "rejected_at": utc_timestamp(),
            "ffmpeg_stderr_tail": error.stderr_tail,
        }
        self._write_json(self.path(key, REJECTION_FILE), record)

    def videos(self) -> list[str]:
        """The keys of every video whose original is stored, in key order."""
        return self._videos_with(SOURCE_RECORD_FILE)

    def manifest(self, key: str) -> dict | None:
        """``key``'s published manifest, if it has one."""
        try:
            return self._read_json(self.path(key, MANIFEST_FILE))
        except ValueError:  # being replaced
            return None

    def published_file(self, key: str, file: str) -> bytes | None:
        """The content of one of ``key``'s published files (``is_published``), if it exists."""
        return self._read(self.path(key, file)) if is_published(file) else None

    @abstractmethod
    def delivery(self, key: str, file: str, expires_seconds: int) -> Path | str | None:
        """How a browser gets one of ``key``'s published files (``is_published``): a local file to send, or a
        URL to send it to (S3: a presigned GET valid for ``expires_seconds``, which answers 404 itself for a
        file that is not there: no request is made to find out); None if it is not a file it may give."""

    def rejection(self, key: str) -> dict | None:
        """The record of why ``key``'s upload was refused (``record_rejection``), if it was."""
        return self._read_json(self.path(key, REJECTION_FILE))

    def rejection_reason(self, key: str) -> str | None:
        """Why ``key``'s upload was refused, if it was."""
        record = self.rejection(key)
        return None if record is None else record["reason"]

    def rejections(self) -> list[dict]:
        """Every recorded rejection (the content of each ``rejection.json``), in key order."""
        records = []
        for key in self._videos_with(REJECTION_FILE):
            try:
                record = self._read_json(self.path(key, REJECTION_FILE))
            except ValueError:  # being replaced
                continue
            if record is not None:  # not removed meanwhile
                records.append(record)
        return records

    def forget(self, key: str) -> None:
        """Remove everything kept for ``key``: original, records and outputs."""
        self._remove(self.path(key))

    def clear_rejection(self, key: str) -> None:
        """Forget an earlier rejection (the upload passed validation since, e.g. under new limits)."""
        self._remove(self.path(key, REJECTION_FILE))

    def withdraw_manifest(self, key: str) -> None:
        """Remove ``key``'s manifest (its other outputs stay, unlisted)."""
        self._remove(self.path(key, MANIFEST_FILE))

    def withdraw_outputs(self, key: str) -> None:
        """Remove every output of ``key`` (renditions, thumbnails, manifest); the original and records stay."""
        for file in (MANIFEST_FILE, *OUTPUT_FOLDERS):  # the manifest first: it must never list what is gone
            self._remove(self.path(key, file))

    def record_renditions(self, key: str, records: dict[str, dict]) -> None:
        """Keep, per rung, how ``key``'s rendition was made (the exact ffmpeg command, what decoding met)
        next to its original (private, never published); rungs not named keep their earlier record."""
        merged = {
            **self.rendition_records(key),
            **{name: {"encoded_at": utc_timestamp(), **r} for name, r in records.items()},
        }
        self._write_json(self.path(key, ENCODE_RECORD_FILE), {"video": key, "renditions": merged})

    def rendition_records(self, key: str) -> dict[str, dict]:
        """Rung name → the record kept by ``record_renditions``."""
        record = self._read_json(self.path(key, ENCODE_RECORD_FILE))
        return {} if record is None else record.get("renditions", {})

    def keep_step_value(self, key: str, name: str, data: bytes) -> None:
        """Keep a value one step hands to the next (private, under ``steps/``), replacing an earlier one."""
        self._write(self.path(key, f"{STEP_VALUES_FOLDER}/{name}.pickle"), data)

    def step_value(self, key: str, name: str) -> bytes | None:
        """The value kept by ``keep_step_value``, if any."""
        return self._read(self.path(key, f"{STEP_VALUES_FOLDER}/{name}.pickle"))

    def _source_record(self, key: str, file: str, name: str, name_ref: str, sha256: str, size: int) -> StoredOriginal:
        stored = StoredOriginal(
            file=file, name=name, name_ref=name_ref, sha256=sha256, size=size, stored_at=utc_timestamp()
        )
        self._write_json(self.path(key, SOURCE_RECORD_FILE), dataclasses.asdict(stored))
        return stored

    def _read_json(self, path: str) -> Any:
        data = self._read(path)
        return None if data is None else json.loads(data)

    def _write_json(self, path: str, record: object) -> None:
        self._write(path, json.dumps(record, indent=2).encode())


def is_published(file: str) -> bool:
    """Whether ``file`` (a path under a video's folder) is public: the manifest, or a file in one of the
    output folders. The original, the records and the step values are not."""
    parts = file.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return False
    return file == MANIFEST_FILE or (len(parts) > 1 and parts[0] in OUTPUT_FOLDERS)


def original_file_name(name: str) -> str:
    """``source.<extension of the upload's name>``, the extension reduced to a few safe characters."""
    return "source." + (re.sub(r"[^a-z0-9]", "", Path(name).suffix.lower())[:8] or "bin")
