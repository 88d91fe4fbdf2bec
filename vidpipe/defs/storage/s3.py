"""Storage in an S3 bucket (``VIDPIPE_STORAGE=s3://bucket/prefix/``): any S3-compatible server."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from dagster_aws.s3 import S3Resource

from vidpipe.defs.storage.base import (
    PartialCopy,
    StoredOriginal,
    VideoStorage,
    content_type,
    is_published,
    original_file_name,
    scratch_folder,
)
from vidpipe.media.errors import UploadError
from vidpipe.media.files import (
    publication_order,
    sha256_file,
)
from vidpipe.media.keys import content_hash_of, is_partition_key

_CLIENTS: dict[tuple[int, str], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def shared_client(s3: S3Resource) -> Any:
    """This process's boto3 client for ``s3``'s settings, made once and shared (boto3 clients are thread-safe).

    dagster-aws makes a new session for every ``get_client()``, and with it parses botocore's S3 model again:
    ~0.2 s of CPU, which every step of a run and the sensor at every tick paid (benchmarks/README.md, C4). A
    forked process makes its own: a client's open connections are not to be shared across a fork."""
    key = (os.getpid(), s3.model_dump_json())
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            _CLIENTS[key] = s3.get_client()
        return _CLIENTS[key]


def is_missing(err: ClientError) -> bool:
    """Whether an S3 request failed because there is no such object (GET says NoSuchKey, HEAD only 404)."""
    return err.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound")


@contextmanager
def downloaded(client: Any, bucket: str, key: str, scratch: str, name: str) -> Iterator[Path]:
    """Object ``key`` streamed into a scratch folder as ``name``, for the block's duration."""
    with scratch_folder(scratch, "fetch") as folder:
        local = folder / name
        client.download_file(bucket, key, str(local))
        yield local


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
        return shared_client(self.s3)

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
