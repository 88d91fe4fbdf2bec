"""Where originals, outputs and records live: one interface, a local and an S3 implementation.

A video's files sit under its key (``media.manifest``'s layout): ``source.<ext>``, the
records ``source.json``, ``encode.json`` and ``rejection.json`` and the values steps hand on,
``steps/…`` (private), ``renditions/…``,
``thumbnails/…`` and ``manifest.json`` (public). Assets only use ``VideoStorage``'s public
methods, and hand each other keys and names, never local paths: the next step may run on
another machine. Steps work on local files: ``fetch`` gives a local copy to read, and
``publishing`` a local folder whose files are published when the block ends without an
error, never before and never in part.

Each implementation provides the storage operations (``store_original``, ``fetch``,
``publishing``, ``location``, ``record_failed_run`` and the small ``_read``, ``_write``,
``_size``, ``_remove`` and ``_videos_with``); the records are written on top of those, once.
"""

from __future__ import annotations

import dataclasses
import errno
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
from botocore.exceptions import ClientError
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from vidpipe.media.errors import InvalidVideoKeyError, UploadError, VidpipeError
from vidpipe.media.files import (
    copy_atomically_with_sha256,
    process_alive,
    publication_order,
    remove_orphaned_temporaries,
    sha256_file,
    write_atomically,
)
from vidpipe.media.keys import content_hash_of, is_partition_key
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


def is_missing(err: ClientError) -> bool:
    """Whether an S3 request failed because there is no such object (GET says NoSuchKey, HEAD only 404)."""
    return err.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound")


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


@contextmanager
def downloaded(client: Any, bucket: str, key: str, scratch: str, name: str) -> Iterator[Path]:
    """Object ``key`` streamed into a scratch folder as ``name``, for the block's duration."""
    with scratch_folder(scratch, "fetch") as folder:
        local = folder / name
        client.download_file(bucket, key, str(local))
        yield local


def _now() -> str:
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
            "rejected_at": _now(),
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
        merged = {**self.rendition_records(key), **{name: {"encoded_at": _now(), **r} for name, r in records.items()}}
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
        stored = StoredOriginal(file=file, name=name, name_ref=name_ref, sha256=sha256, size=size, stored_at=_now())
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


class LocalVideoStorage(VideoStorage):
    """Everything under one folder: ``<root>/<video>/{source.*,renditions/,thumbnails/,manifest.json}``.

    Steps read and write these files in place: ``fetch`` gives the stored file itself, and
    ``publishing`` the output folder, where ffmpeg's and Pillow's writers publish each file
    by an atomic rename once it is complete.
    """

    root: str

    def video_dir(self, key: str) -> Path:
        return Path(self.root) / self.path(key)

    def store_original(self, key: str, upload: Path, name: str, name_ref: str) -> StoredOriginal:
        file = original_file_name(name)
        target = self.video_dir(key) / file
        sha256 = copy_atomically_with_sha256(upload, target, expected_sha256_prefix=content_hash_of(key))
        return self._source_record(key, file, name, name_ref, sha256, target.stat().st_size)

    @contextmanager
    def fetch(self, key: str, file: str) -> Iterator[Path]:
        path = self.video_dir(key) / file
        if not path.is_file():
            raise FileNotFoundError(errno.ENOENT, "not in storage", str(path))
        yield path

    @contextmanager
    def publishing(self, key: str, folder: str) -> Iterator[Path]:
        """The output folder itself; temporary files left by a killed writer are cleared first."""
        directory = self.video_dir(key) / folder
        directory.mkdir(parents=True, exist_ok=True)
        remove_orphaned_temporaries(directory)
        yield directory

    def location(self, key: str, file: str = "") -> str:
        return str(Path(self.root) / self.path(key, file))

    def delivery(self, key: str, file: str, expires_seconds: int) -> Path | str | None:
        path = Path(self.root) / self.path(key, file)
        return path if is_published(file) and path.is_file() else None

    def record_failed_run(self, entry: dict) -> None:
        """One JSON object per line in ``<root>/failed_runs.jsonl``; appends of one line are atomic."""
        root = Path(self.root)
        root.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"failed_at": _now(), **entry}, sort_keys=True) + "\n"
        with open(root / FAILED_RUNS_FILE, "a", encoding="utf-8") as log:
            log.write(line)

    def _read(self, path: str) -> bytes | None:
        try:
            return (Path(self.root) / path).read_bytes()
        except FileNotFoundError:
            return None

    def _write(self, path: str, data: bytes) -> None:
        target = Path(self.root) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, data)

    def _size(self, path: str) -> int | None:
        try:
            return (Path(self.root) / path).stat().st_size
        except FileNotFoundError:
            return None

    def _remove(self, path: str) -> None:
        target = Path(self.root) / path
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)

    def _videos_with(self, file: str) -> list[str]:
        return sorted(path.parent.name for path in Path(self.root).glob(f"*/{file}"))


class S3VideoStorage(VideoStorage):
    """Everything in one bucket, under ``prefix``: ``<prefix><video>/{source.*,renditions/…,…}``.

    Credentials come from the environment (``AWS_ACCESS_KEY_ID``, an instance role, …), never
    from config; ``s3.endpoint_url`` points at any S3-compatible server (R2, B2, SeaweedFS, MinIO).
    Steps work in ``scratch``, a local folder of this machine's own: ``fetch`` downloads there
    and ``publishing`` uploads from there once the block has succeeded; both remove what they
    put there, also after a failure. Each object appears only when its upload is complete
    (S3 makes a single or multipart upload visible at once), under its final key.
    """

    s3: S3Resource
    bucket: str
    prefix: str = ""
    scratch: str
    """A local folder for downloads and outputs in the making; no other machine reads it."""
    _boto_client: Any = PrivateAttr(default=None)

    def store_original(self, key: str, upload: Path, name: str, name_ref: str) -> StoredOriginal:
        sha256 = sha256_file(upload)
        if not sha256.startswith(content_hash_of(key)):
            raise UploadError(f"the upload changed after it was seen: its content no longer matches {key}")
        file = original_file_name(name)
        self._upload(upload, self.path(key, file))
        return self._source_record(key, file, name, name_ref, sha256, upload.stat().st_size)

    @contextmanager
    def fetch(self, key: str, file: str) -> Iterator[Path]:
        with downloaded(
            self._client(), self.bucket, self._object(self.path(key, file)), self.scratch, Path(file).name
        ) as local:
            yield local

    @contextmanager
    def fetch_ends(self, key: str, file: str, head: int, tail: int) -> Iterator[PartialCopy]:
        """Two ranged reads into a sparse file of the object's size (holes take no disk), or the whole object
        when it is no longer than ``head`` + ``tail``."""
        client, name = self._client(), self._object(self.path(key, file))
        size = client.head_object(Bucket=self.bucket, Key=name)["ContentLength"]
        if size <= head + tail:
            with self.fetch(key, file) as whole:
                yield PartialCopy(whole, (range(0, size),))
            return
        held = (range(0, head), range(size - tail, size))
        with scratch_folder(self.scratch, "fetch") as folder:
            local = folder / Path(file).name
            with open(local, "wb") as out:
                out.truncate(size)
                for part in held:
                    body = client.get_object(Bucket=self.bucket, Key=name, Range=f"bytes={part.start}-{part.stop - 1}")
                    out.seek(part.start)
                    shutil.copyfileobj(body["Body"], out, 1 << 20)
            yield PartialCopy(local, held)

    @contextmanager
    def publishing(self, key: str, folder: str) -> Iterator[Path]:
        """Upload what the block left in its folder (subfolders too), each file under its final key, in
        ``publication_order`` (indexes after what they list); nothing on an error. Hidden files
        (temporaries) stay behind.

        Multipart uploads under the folder that a killed worker left unfinished are aborted first
        (one step at a time publishes a video's folder)."""
        target = self.path(key, folder)
        self._abort_unfinished_uploads(target + "/")
        with scratch_folder(self.scratch, "publish") as local:
            yield local
            files = [path for path in local.rglob("*") if path.is_file() and not path.name.startswith(".")]
            for path in publication_order(files, local):
                self._upload(path, f"{target}/{path.relative_to(local).as_posix()}")

    def location(self, key: str, file: str = "") -> str:
        return f"s3://{self.bucket}/{self._object(self.path(key, file))}"

    def delivery(self, key: str, file: str, expires_seconds: int) -> Path | str | None:
        if not is_published(file):
            return None
        params = {"Bucket": self.bucket, "Key": self._object(self.path(key, file))}
        return self._client().generate_presigned_url("get_object", Params=params, ExpiresIn=expires_seconds)

    def record_failed_run(self, entry: dict) -> None:
        """One object per failed run: ``<prefix>failed_runs/<time>-<run id>.json`` (objects cannot be appended to)."""
        now = datetime.now(timezone.utc)
        record = {"failed_at": now.isoformat(timespec="seconds"), **entry}
        stamp = now.strftime("%Y%m%dT%H%M%S")
        self._write(
            f"failed_runs/{stamp}-{entry.get('run_id', 'run')}.json", json.dumps(record, sort_keys=True).encode()
        )

    def _client(self) -> Any:
        """One boto3 client per storage (thread-safe; making one costs tens of milliseconds)."""
        if self._boto_client is None:
            self._boto_client = self.s3.get_client()
        return self._boto_client

    def _object(self, path: str) -> str:
        return f"{self.prefix}{path}"

    def _upload(self, local: Path, path: str) -> None:
        """A streamed upload (multipart for large files, aborted by boto3 if it fails)."""
        self._client().upload_file(
            str(local), self.bucket, self._object(path), ExtraArgs={"ContentType": content_type(local.name)}
        )

    def _abort_unfinished_uploads(self, path_prefix: str) -> None:
        client = self._client()
        listing = client.list_multipart_uploads(Bucket=self.bucket, Prefix=self._object(path_prefix))
        for upload in listing.get("Uploads", []):
            client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])

    def _read(self, path: str) -> bytes | None:
        client = self._client()
        try:
            return client.get_object(Bucket=self.bucket, Key=self._object(path))["Body"].read()
        except client.exceptions.NoSuchKey:
            return None

    def _write(self, path: str, data: bytes) -> None:
        self._client().put_object(Bucket=self.bucket, Key=self._object(path), Body=data, ContentType=content_type(path))

    def _size(self, path: str) -> int | None:
        client = self._client()
        try:
            return client.head_object(Bucket=self.bucket, Key=self._object(path))["ContentLength"]
        except ClientError as err:
            if is_missing(err):
                return None
            raise

    def _remove(self, path: str) -> None:
        client = self._client()
        keys = [self._object(path)]
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._object(path + "/")
        ):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def _videos_with(self, file: str) -> list[str]:
        """One listing of the videos' folders (not of their files), then one HEAD per video."""
        videos = []
        pages = (
            self._client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=self.prefix, Delimiter="/")
        )
        for page in pages:
            for folder in page.get("CommonPrefixes", []):
                video = folder["Prefix"][len(self.prefix) :].rstrip("/")
                if is_partition_key(video):
                    videos.append(video)
        return sorted(video for video in videos if self._size(self.path(video, file)) is not None)
