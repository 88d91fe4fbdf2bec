"""Finding finished uploads in the inbox folder, with a cursor that stays small.

A file counts as finished once its inode has not changed (contents, size, name or
metadata: its ctime) for ``settle_seconds``. The cursor holds a watermark — every file
changed before it has been handled — plus the few handled files changed after it, so
its size depends on how many uploads are in flight, never on how many the inbox has
seen.
"""

from __future__ import annotations

import json
import os
import stat
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote_to_bytes

from vidpipe.media.errors import UploadError
from vidpipe.media.files import sha256_file

TEMPORARY_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".download", ".filepart", "~")
READABLE_NAME_CHARS = 200
_NAME_REF_SAFE = " !#$&'()+,;=@[]^`{}~"


@dataclass(frozen=True)
class Upload:
    path: Path
    sha256: str
    size: int
    changed_ns: int

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def readable_name(self) -> str:
        return readable_name(self.name)


@dataclass
class InboxCursor:
    watermark_ns: int = 0
    handled: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"watermark_ns": self.watermark_ns, "handled": self.handled}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> InboxCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(watermark_ns=int(data["watermark_ns"]), handled={k: int(v) for k, v in data["handled"].items()})


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


def resolve_upload(inbox: Path, ref: str) -> Path:
    """The regular file that ``ref`` names directly inside ``inbox``; nothing else is accepted.

    A reference comes from a run tag, which anyone who can launch runs can set: a path, a
    name with a slash, a symlink, a folder or a device are refused with a plain reason.
    """
    name = os.fsdecode(unquote_to_bytes(ref))
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise UploadError(f"'{readable_name(name)}' is not the name of a file in the upload inbox")
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


def scan_inbox(
    inbox: Path,
    cursor: InboxCursor,
    *,
    settle_seconds: float,
    empty_settle_seconds: float = 60.0,
    hash_budget_seconds: float = 20.0,
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
    started = time.monotonic_ns()
    now_ns = time.time_ns() if now_ns is None else now_ns
    rules = _SettleRules(settle_seconds, empty_settle_seconds, started / 1e9 + hash_budget_seconds)
    scan = _scan_once(inbox, cursor, rules, now_ns)
    if scan.settled_in_seconds is not None and scan.settled_in_seconds < wait_for_settling_seconds:
        time.sleep(max(scan.settled_in_seconds, 0))
        scan = scan.then(_scan_once(inbox, scan.cursor, rules, now_ns + time.monotonic_ns() - started))
    return scan


@dataclass(frozen=True)
class _SettleRules:
    settle_seconds: float
    empty_settle_seconds: float
    hash_deadline: float
    """``time.monotonic()`` past which no more files are hashed (after one per pass)."""


def _scan_once(inbox: Path, cursor: InboxCursor, rules: _SettleRules, now_ns: int) -> InboxScan:
    present, empty = _list_candidates(inbox)
    pending = sorted(
        (changed, name)
        for name, changed in present.items()
        if changed >= cursor.watermark_ns and cursor.handled.get(name) != changed
    )
    uploads: list[Upload] = []
    waiting: list[tuple[int, str]] = []
    settled_at_ns: int | None = None
    unreadable: dict[str, str] = {}
    handled = {name: changed for name, changed in cursor.handled.items() if present.get(name) == changed}
    for changed, name in pending:
        over_budget = bool(uploads) and time.monotonic() > rules.hash_deadline
        settles_at = changed + int((rules.empty_settle_seconds if name in empty else rules.settle_seconds) * 1e9)
        if over_budget or now_ns < settles_at:
            waiting.append((changed, name))
            if not over_budget and name not in empty:
                settled_at_ns = settles_at  # pending is oldest first: the last one settles last
            continue
        path = inbox / name
        try:
            uploads.append(Upload(path=path, sha256=sha256_file(path), size=path.stat().st_size, changed_ns=changed))
        except FileNotFoundError:
            continue
        except OSError as err:
            unreadable[name] = err.strerror or str(err)
        handled[name] = changed
    return InboxScan(
        uploads=uploads,
        waiting=[name for _, name in waiting],
        unreadable=unreadable,
        cursor=_next_cursor(cursor, pending, waiting, handled),
        settled_in_seconds=None if settled_at_ns is None else (settled_at_ns - now_ns) / 1e9,
    )


def _list_candidates(inbox: Path) -> tuple[dict[str, int], set[str]]:
    """The inbox's candidate files with their ctime (ns), and which of them are empty."""
    present: dict[str, int] = {}
    empty: set[str] = set()
    with os.scandir(inbox) as entries:
        for entry in entries:
            if is_candidate_name(entry.name) and entry.is_file(follow_symlinks=False):
                info = entry.stat(follow_symlinks=False)
                present[entry.name] = info.st_ctime_ns
                if info.st_size == 0:
                    empty.add(entry.name)
    return present, empty


def _next_cursor(
    cursor: InboxCursor, pending: list[tuple[int, str]], waiting: list[tuple[int, str]], handled: dict[str, int]
) -> InboxCursor:
    """The watermark moves up to the oldest file still waiting (or past every file seen); only
    files handled above it are kept by name."""
    if waiting:
        watermark = min(changed for changed, _ in waiting)
    else:
        watermark = max([cursor.watermark_ns, *(changed for changed, _ in pending)])
    return InboxCursor(
        watermark_ns=watermark,
        handled={name: changed for name, changed in handled.items() if changed >= watermark},
    )
