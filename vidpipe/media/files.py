"""Files that appear whole or not at all, and content hashing."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import stat
from pathlib import Path

from vidpipe.media.errors import UploadError

HASH_CHUNK = 1 << 20


_TEMPORARY_NAME = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.partial(\.[^.]*)?$")


MAX_NAME_BYTES = 255


def temporary_sibling(final: Path) -> Path:
    """A hidden, unique name next to ``final`` that keeps its extension and names its writer's pid.

    The stem is shortened when needed so the name fits the file system's 255-byte limit.
    """
    marker = f".{os.getpid()}-{secrets.token_hex(4)}.partial{final.suffix}"
    room = MAX_NAME_BYTES - 1 - len(os.fsencode(marker))
    stem = os.fsencode(final.stem)[: max(room, 0)]
    return final.with_name(f".{os.fsdecode(stem)}{marker}")


def remove_orphaned_temporaries(directory: Path) -> list[Path]:
    """Delete temporary files whose writing process is gone (killed mid-write); return them."""
    removed = []
    for path in directory.iterdir():
        match = _TEMPORARY_NAME.match(path.name)
        if match and not process_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs (a zombie counts: it has not been reaped yet)."""
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


INDEX_SUFFIXES = (".m3u8", ".mpd", ".vtt")
"""Files that point at other files (playlists, the DASH manifest, a WebVTT track of tiles)."""


def publication_order(files: list[Path], root: Path) -> list[Path]:
    """``files`` (under ``root``) in the order to publish them: every file before those that point at it,
    so that a reader who finds an index finds what it lists (media files, then the deepest indexes
    first: a rung's playlist before the master playlist that lists it)."""

    def rank(path: Path) -> tuple[bool, int, str]:
        relative = path.relative_to(root)
        return path.suffix in INDEX_SUFFIXES, -len(relative.parts), str(relative)

    return sorted(files, key=rank)


def publish_tree(staged: Path, final: Path) -> None:
    """Copy every file under ``staged`` to the same place under ``final``, each one atomically, in
    ``publication_order``: a reader never sees a partial file, nor an index before what it lists."""
    files = [path for path in staged.rglob("*") if path.is_file()]
    for path in publication_order(files, staged):
        target = final / path.relative_to(staged)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = temporary_sibling(target)
        try:
            shutil.copyfile(path, temporary)
            publish(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_atomically_with_sha256(source: Path, final: Path, *, expected_sha256_prefix: str = "") -> str:
    """Copy the regular file ``source`` to ``final`` (temporary name, then rename), hashing while copying.

    A symlink or anything but a regular file is refused, and the copy never gets wider
    permissions than the source (a 0600 upload is stored as 0600). The copy is published
    only if its hash starts with ``expected_sha256_prefix``; the refusal does not say
    what the hash was.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(final)
    digest = hashlib.sha256()
    try:
        source_fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UploadError("the upload is a symbolic link, not a file", path=str(source)) from None
        raise
    try:
        with open(source_fd, "rb") as src:
            mode = os.fstat(src.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise UploadError("the upload is not a regular file", path=str(source))
            target_fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IMODE(mode) & 0o666)
            with open(target_fd, "wb") as dst:
                while chunk := src.read(HASH_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
        if not digest.hexdigest().startswith(expected_sha256_prefix):
            raise UploadError(
                "the upload changed after it was seen: its content is not what was uploaded", path=str(source)
            )
        publish(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)
    return digest.hexdigest()
