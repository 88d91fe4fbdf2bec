"""Files that appear whole or not at all, and content hashing."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path

from vidpipe.media.errors import UploadError

HASH_CHUNK = 1 << 20


_TEMPORARY_NAME = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.partial(\.[^.]*)?$")


def temporary_sibling(final: Path) -> Path:
    """A hidden, unique name next to ``final`` that keeps its extension and names its writer's pid."""
    return final.with_name(f".{final.stem}.{os.getpid()}-{secrets.token_hex(4)}.partial{final.suffix}")


def remove_orphaned_temporaries(directory: Path) -> list[Path]:
    """Delete temporary files whose writing process is gone (killed mid-write); return them."""
    removed = []
    for path in directory.iterdir():
        match = _TEMPORARY_NAME.match(path.name)
        if match and not _process_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    return True


def publish(temporary: Path, final: Path) -> None:
    """Atomically move a finished file into place and make the rename durable."""
    with open(temporary, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, final)
    fsync_dir(final.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(final: Path, data: bytes) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(final)
    try:
        temporary.write_bytes(data)
        publish(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_atomically_with_sha256(source: Path, final: Path, *, expected_sha256_prefix: str = "") -> str:
    """Copy ``source`` to ``final`` (temporary name, then rename), hashing while copying.

    The copy is published only if its hash starts with ``expected_sha256_prefix``.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(final)
    digest = hashlib.sha256()
    try:
        with open(source, "rb") as src, open(temporary, "wb") as dst:
            while chunk := src.read(HASH_CHUNK):
                digest.update(chunk)
                dst.write(chunk)
        if not digest.hexdigest().startswith(expected_sha256_prefix):
            raise UploadError(
                f"the upload changed after it was seen (sha256 {digest.hexdigest()[:12]}, "
                f"expected {expected_sha256_prefix})",
                path=str(source),
            )
        publish(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)
    return digest.hexdigest()
