"""Storage in one local folder (``VIDPIPE_STORAGE=/path``)."""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vidpipe.defs.storage.base import (
    FAILED_RUNS_FILE,
    StoredOriginal,
    VideoStorage,
    is_published,
    original_file_name,
    utc_timestamp,
)
from vidpipe.media.files import (
    copy_atomically_with_sha256,
    remove_orphaned_temporaries,
    write_atomically,
)
from vidpipe.media.keys import content_hash_of


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
        line = json.dumps({"failed_at": utc_timestamp(), **entry}, sort_keys=True) + "\n"
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
