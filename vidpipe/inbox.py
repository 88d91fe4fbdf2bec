"""Finding finished uploads in the inbox, a folder or an S3 prefix, with a cursor that stays small.

An upload counts as finished once it has not changed for ``settle_seconds``: in a folder,
its inode (contents, size, name or metadata: its ctime); in S3, its object (a finished PUT
or multipart upload replaces it whole, with a new LastModified). The cursor holds a
watermark — every upload changed before it has been handled — plus the few handled uploads
changed after it, so its size depends on how many uploads are in flight, never on how many
the inbox has seen.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote_to_bytes

from vidpipe.media.errors import UploadError
from vidpipe.media.files import HASH_CHUNK, sha256_file

SETTLE_SECONDS = 2.0
"""How long an upload must stay unchanged before it is taken (``VIDPIPE_SETTLE_SECONDS``)."""
EMPTY_SETTLE_SECONDS = 60.0
"""How long an empty file must stay empty: uploaders often create the file first and write it later."""
HASH_BUDGET_SECONDS = 20.0
"""How long one scan may spend hashing uploads (after at least one per pass)."""
TEMPORARY_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".download", ".filepart", "~")
READABLE_NAME_CHARS = 200
_NAME_REF_SAFE = " !#$&'()+,;=@[]^`{}~"


@dataclass(frozen=True)
class Upload:
    name: str
    """Its name in the inbox: a file name, or an object's key after the inbox's prefix."""
    sha256: str
    size: int
    changed_ns: int

    @property
    def readable_name(self) -> str:
        return readable_name(self.name)


@dataclass
class InboxCursor:
    watermark_ns: int = 0
    handled: dict[str, str] = field(default_factory=dict)
    """Name → the version (``Seen.version``) handled, for uploads changed at or after the watermark."""

    def to_json(self) -> str:
        return json.dumps({"watermark_ns": self.watermark_ns, "handled": self.handled}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> InboxCursor:
        if not text:
            return cls()
        data = json.loads(text)
        # Cursors written before versions were kept hold a folder's ctime as a number: the same version.
        return cls(watermark_ns=int(data["watermark_ns"]), handled={k: str(v) for k, v in data["handled"].items()})


@dataclass(frozen=True)
class InboxScan:
    uploads: list[Upload]
    waiting: list[str]
    unreadable: dict[str, str]
    cursor: InboxCursor
    settled_in_seconds: float | None = None
    """How long until every non-empty upload now waiting only to settle can be taken (None: none is)."""

    def then(self, later: InboxScan) -> InboxScan:
        """This scan followed by ``later``, a scan made from this one's cursor."""
        return InboxScan(
            uploads=self.uploads + later.uploads,
            waiting=later.waiting,
            unreadable={**self.unreadable, **later.unreadable},
            cursor=later.cursor,
            settled_in_seconds=later.settled_in_seconds,
        )


def name_ref(name: str) -> str:
    """A file name as printable ASCII that ``resolve_upload`` turns back into the same bytes.

    Names are bytes on Linux: not necessarily UTF-8, possibly with control characters.
    Percent-encoding keeps ordinary names readable (``My Holiday.mp4`` stays as it is) and
    lets any name travel in run tags and JSON.
    """
    return quote(os.fsencode(name), safe=_NAME_REF_SAFE)


def readable_name(name: str) -> str:
    """A name for people, logs and metadata: valid UTF-8, control characters escaped, bounded.

    A newline shows as the two characters ``\\n``; a byte that is not UTF-8 as ``\\xff``.
    """
    text = os.fsencode(name).decode("utf-8", errors="backslashreplace")
    text = "".join(
        char.encode("unicode_escape").decode("ascii") if unicodedata.category(char) == "Cc" else char for char in text
    )
    return text if len(text) <= READABLE_NAME_CHARS else text[: READABLE_NAME_CHARS - 1] + "…"


def upload_name(ref: str) -> str:
    """The name ``ref`` stands for, if it can name an upload directly inside an inbox.

    A reference comes from a run tag, which anyone who can launch runs can set: a path or a
    name with a slash is refused with a plain reason.
    """
    name = os.fsdecode(unquote_to_bytes(ref))
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise UploadError(f"'{readable_name(name)}' is not the name of a file in the upload inbox")
    return name


def resolve_upload(inbox: Path, ref: str) -> Path:
    """The regular file that ``ref`` names directly inside ``inbox``; nothing else is accepted
    (``upload_name``; nor a symlink, a folder or a device)."""
    name = upload_name(ref)
    path = inbox / name
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        raise UploadError(f"the upload '{readable_name(name)}' is no longer in the inbox") from None
    if not stat.S_ISREG(mode):
        raise UploadError(f"'{readable_name(name)}' in the upload inbox is not a regular file")
    return path


def is_candidate_name(name: str) -> bool:
    """Hidden files and the temporary names browsers and copy tools use are not uploads."""
    return not name.startswith((".", "~")) and not name.lower().endswith(TEMPORARY_SUFFIXES)


@dataclass(frozen=True)
class Seen:
    """An upload as a listing shows it."""

    changed_ns: int
    """When it last changed."""
    version: str
    """Differs whenever its content may have changed, also within one tick of ``changed_ns``'s clock."""
    empty: bool


class InboxListing(Protocol):
    """What a scan needs from where uploads arrive: ``FolderListing`` or ``S3Listing``."""

    def candidates(self) -> dict[str, Seen]:
        """Upload name → how it is now."""
        ...

    def unfinished_since_ns(self) -> int | None:
        """The oldest ``changed_ns`` an upload still being written may show once it is listed; None if none."""
        ...

    def sha256(self, name: str) -> tuple[str, int]:
        """One upload's content hash and size, read in full; ``FileNotFoundError`` if it is gone."""
        ...


@dataclass(frozen=True)
class FolderListing:
    """An inbox folder: uploads are the regular files directly inside it, changed when their ctime is."""

    folder: Path

    def candidates(self) -> dict[str, Seen]:
        """Any write, rename or metadata change moves a file's ctime, which is its version."""
        present: dict[str, Seen] = {}
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if is_candidate_name(entry.name) and entry.is_file(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                    present[entry.name] = Seen(info.st_ctime_ns, str(info.st_ctime_ns), empty=info.st_size == 0)
        return present

    def unfinished_since_ns(self) -> int | None:
        return None  # a file being written is listed already, its ctime moving on

    def sha256(self, name: str) -> tuple[str, int]:
        path = self.folder / name
        return sha256_file(path), path.stat().st_size


@dataclass(frozen=True)
class S3Listing:
    """An inbox in S3: uploads are the objects directly under ``prefix``, changed when their LastModified is.

    ``client`` is a boto3 S3 client. Objects appear only once their upload is complete.
    """

    client: Any
    bucket: str
    prefix: str

    def candidates(self) -> dict[str, Seen]:
        """LastModified has whole seconds: an object replaced within the same second is told apart by
        its ETag and size."""
        present: dict[str, Seen] = {}
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"
        )
        for page in pages:
            for item in page.get("Contents", []):
                name = item["Key"][len(self.prefix) :]
                if name and is_candidate_name(name):
                    changed = int(item["LastModified"].timestamp() * 1e9)
                    etag = item["ETag"].strip('"')
                    version = f"{changed}:{item['Size']}:{etag}"
                    present[name] = Seen(changed, version, empty=item["Size"] == 0)
        return present

    def unfinished_since_ns(self) -> int | None:
        """A multipart upload's object shows, once complete, the time the upload was started (on AWS):
        the watermark must wait for it."""
        started: list[int] = []
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            started.extend(
                int(upload["Initiated"].timestamp() * 1e9)
                for upload in page.get("Uploads", [])
                if "/" not in upload["Key"][len(self.prefix) :]
            )
        return min(started, default=None)

    def sha256(self, name: str) -> tuple[str, int]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"]
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(name) from None
        digest, size = hashlib.sha256(), 0
        for chunk in body.iter_chunks(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        return digest.hexdigest(), size


def scan_inbox(
    inbox: Path | InboxListing,
    cursor: InboxCursor,
    *,
    settle_seconds: float = SETTLE_SECONDS,
    empty_settle_seconds: float = EMPTY_SETTLE_SECONDS,
    hash_budget_seconds: float = HASH_BUDGET_SECONDS,
    wait_for_settling_seconds: float = 0.0,
    now_ns: int | None = None,
) -> InboxScan:
    """Return the finished uploads not handled yet, oldest change first, and the new cursor.

    An empty file must stay unchanged for ``empty_settle_seconds`` instead: uploaders often
    create the file first and write it later. Hashing stops once ``hash_budget_seconds``
    are spent (after at least one file per pass), so a scan stays short however much
    arrives; the rest waits for the next scan. If the uploads still settling all settle
    within ``wait_for_settling_seconds``, the scan waits for them and looks again, within
    the same hashing budget.
    """
    listing = FolderListing(inbox) if isinstance(inbox, Path) else inbox
    started = time.monotonic_ns()
    now_ns = time.time_ns() if now_ns is None else now_ns
    rules = _SettleRules(settle_seconds, empty_settle_seconds, started / 1e9 + hash_budget_seconds)
    scan = _scan_once(listing, cursor, rules, now_ns)
    if scan.settled_in_seconds is not None and scan.settled_in_seconds < wait_for_settling_seconds:
        time.sleep(max(scan.settled_in_seconds, 0))
        scan = scan.then(_scan_once(listing, scan.cursor, rules, now_ns + time.monotonic_ns() - started))
    return scan


@dataclass(frozen=True)
class _SettleRules:
    settle_seconds: float
    empty_settle_seconds: float
    hash_deadline: float
    """``time.monotonic()`` past which no more files are hashed (after one per pass)."""


def _scan_once(listing: InboxListing, cursor: InboxCursor, rules: _SettleRules, now_ns: int) -> InboxScan:
    present = listing.candidates()
    pending = sorted(
        (seen.changed_ns, name)
        for name, seen in present.items()
        if seen.changed_ns >= cursor.watermark_ns and cursor.handled.get(name) != seen.version
    )
    uploads: list[Upload] = []
    waiting: list[tuple[int, str]] = []
    settled_at_ns: int | None = None
    unreadable: dict[str, str] = {}
    handled = {
        name: version
        for name, version in cursor.handled.items()
        if name in present and present[name].version == version
    }
    for changed, name in pending:
        over_budget = bool(uploads) and time.monotonic() > rules.hash_deadline
        empty = present[name].empty
        settles_at = changed + int((rules.empty_settle_seconds if empty else rules.settle_seconds) * 1e9)
        if over_budget or now_ns < settles_at:
            waiting.append((changed, name))
            if not over_budget and not empty:
                settled_at_ns = settles_at  # pending is oldest first: the last one settles last
            continue
        try:
            sha256, size = listing.sha256(name)
            uploads.append(Upload(name=name, sha256=sha256, size=size, changed_ns=changed))
        except FileNotFoundError:
            continue
        except OSError as err:
            unreadable[name] = err.strerror or str(err)
        handled[name] = present[name].version
    return InboxScan(
        uploads=uploads,
        waiting=[name for _, name in waiting],
        unreadable=unreadable,
        cursor=_next_cursor(cursor, pending, waiting, handled, present, listing.unfinished_since_ns()),
        settled_in_seconds=None if settled_at_ns is None else (settled_at_ns - now_ns) / 1e9,
    )


def _next_cursor(
    cursor: InboxCursor,
    pending: list[tuple[int, str]],
    waiting: list[tuple[int, str]],
    handled: dict[str, str],
    present: dict[str, Seen],
    unfinished_since_ns: int | None,
) -> InboxCursor:
    """The watermark moves up to the oldest upload still waiting (or past every upload seen), but
    not past the start of an upload not listed yet; only uploads handled above it are kept by name."""
    if waiting:
        watermark = min(changed for changed, _ in waiting)
    else:
        watermark = max([cursor.watermark_ns, *(changed for changed, _ in pending)])
    if unfinished_since_ns is not None:
        watermark = max(cursor.watermark_ns, min(watermark, unfinished_since_ns))
    return InboxCursor(
        watermark_ns=watermark,
        handled={name: version for name, version in handled.items() if present[name].changed_ns >= watermark},
    )
