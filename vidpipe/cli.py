"""``vidpipe`` command line: upload files to the inbox, process one file without a daemon, re-run or forget
videos, or serve the gallery and player pages."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vidpipe import settings
from vidpipe.catalog.schema import STATES
from vidpipe.catalog.store import PAGE_SIZE
from vidpipe.inbox import is_candidate_name, readable_name
from vidpipe.media.errors import VidpipeError
from vidpipe.media.files import fsync_dir, sha256_file, temporary_sibling
from vidpipe.media.keys import is_partition_key, partition_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vidpipe", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    upload = commands.add_parser("upload", help="copy video files into the upload inbox")
    upload.add_argument("files", nargs="+", type=Path)
    upload.add_argument("--inbox", default=None, help="a folder or s3://bucket/prefix/; default: $VIDPIPE_INBOX")
    upload_url = commands.add_parser(
        "upload-url", help="print a presigned URL that uploads one file into the S3 inbox with an HTTP PUT"
    )
    upload_url.add_argument("name", help="the upload's name in the inbox")
    upload_url.add_argument("--expires", type=int, default=3600, help="seconds the URL stays valid (default 3600)")
    process = commands.add_parser("process", help="make every output for one file, in-process, no daemon")
    process.add_argument("file", type=Path)
    process.add_argument("--out", type=Path, required=True, help="output root; the video lands in OUT/<key>/")
    process.add_argument("--verbose", action="store_true", help="show Dagster's run log on stderr")
    rerun = commands.add_parser("rerun", help="process videos again (a backfill) on the instance in $DAGSTER_HOME")
    rerun.add_argument("videos", nargs="+", metavar="VIDEO", help="video keys, e.g. holiday-0123456789ab")
    rejections = commands.add_parser("rejections", help="list the refused uploads kept in storage, and why")
    rejections.add_argument("--json", action="store_true", help="one JSON array of the rejection records")
    forget = commands.add_parser("forget", help="remove refused uploads for good: kept original, records, partition")
    forget.add_argument("videos", nargs="+", metavar="VIDEO", help="keys of refused uploads")
    catalog = commands.add_parser("catalog", help="make, migrate or rebuild the catalog of videos ($VIDPIPE_CATALOG)")
    catalog.add_argument(
        "action", choices=["migrate", "rebuild"],
        help="migrate: make it or bring it to this vidpipe's schema (a new one is filled from storage); "
        "rebuild: every row made anew from what storage records",
    )  # fmt: skip
    videos = commands.add_parser("videos", help="list a page of the catalog's videos, newest first")
    videos.add_argument("--state", choices=STATES, default=None, help="only videos in this state")
    videos.add_argument("--search", default="", metavar="TEXT", help="only videos whose name holds every word of TEXT")
    videos.add_argument(
        "--limit", type=int, default=PAGE_SIZE, help=f"videos a page (default {PAGE_SIZE}, at most 100)"
    )
    videos.add_argument(
        "--after", default=None, metavar="CURSOR", help="the cursor a previous page printed: its next page"
    )
    videos.add_argument("--json", action="store_true", help="the page as JSON")
    serve = commands.add_parser("serve", help="the gallery of processed videos and their player pages (a web app)")
    serve.add_argument("--host", default=None, help="address to listen on; default: $VIDPIPE_HOST or 127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="port; default: $VIDPIPE_PLAYER_PORT or 3001")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            serve_player(args.host or settings.ui_host(), args.port or settings.player_port())
            return 0
        if args.command == "rerun":
            return rerun_videos(args.videos)
        if args.command == "catalog":
            catalog_command(args.action)
            return 0
        if args.command == "videos":
            print(list_videos(state=args.state, search=args.search, limit=args.limit, after=args.after,
                              as_json=args.json), end="")  # fmt: skip
            return 0
        if args.command == "rejections":
            print(list_rejections(as_json=args.json), end="")
            return 0
        if args.command == "forget":
            forget_videos(args.videos)
            return 0
        if args.command == "upload":
            inbox = settings.inbox_location(args.inbox)
            for path in args.files:
                uploaded = upload_file(path, inbox) if isinstance(inbox, Path) else upload_object(path, inbox)
                # The exact bytes of the name, so scripts can use it whatever its encoding.
                sys.stdout.buffer.write(os.fsencode(uploaded) + b"\n")
            return 0
        if args.command == "upload-url":
            print(presigned_upload_url(args.name, settings.inbox_location(), args.expires))
            return 0
        manifest = process_file(args.file, args.out, verbose=args.verbose)
    except (UserFacingError, VidpipeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        where = f"{readable_name(os.path.basename(os.fsdecode(err.filename)))}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err}", file=sys.stderr)
        return 1
    print(json.dumps(manifest, indent=2))
    return 0


COPY_CHUNK = 4 * 2**20


class TerminalProgress:
    """One line on stderr that rewrites itself: how far, how fast, how long left; silent unless stderr is a terminal.

    Scripts get stdout and stderr clean (the manifest on stdout stays parseable).
    """

    def __init__(self, label: str, *, every_seconds: float = 0.25):
        self.label = label
        self.every_seconds = every_seconds
        self.enabled = sys.stderr.isatty()
        self.started = time.monotonic()
        self.shown_at = 0.0
        self.shown = False

    def show(self, fraction: float, detail: str) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.shown_at < self.every_seconds:
            return
        self.shown_at, self.shown = now, True
        elapsed = now - self.started
        left = f", {elapsed * (1 - fraction) / fraction:.0f} s left" if 0 < fraction < 1 and elapsed > 1 else ""
        sys.stderr.write(f"\r{self.label}: {fraction:.0%} ({detail}){left}\x1b[K")
        sys.stderr.flush()

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


class EncodeProgressHandler(logging.Handler):
    """Shows the encode progress the renditions op reports (``PROGRESS_LOG``) as a ``TerminalProgress``."""

    def __init__(self, label: str):
        super().__init__()
        self.progress = TerminalProgress(label)

    def emit(self, record: logging.LogRecord) -> None:
        update = record.progress  # type: ignore[attr-defined]
        speed = f" at {update.speed:g}x" if update.speed else ""
        self.progress.show(update.fraction, f"{update.seconds_done:.0f} of {update.seconds_total:.0f} s{speed}")
        if update.finished:
            self.progress.done()


@contextmanager
def _removed_after(log: logging.Logger, handler: logging.Handler) -> Iterator[None]:
    try:
        yield
    finally:
        log.removeHandler(handler)


class UserFacingError(Exception):
    """A failure explained in one line; the command exits non-zero without a traceback."""


def upload_file(path: Path, inbox: Path) -> Path:
    """Copy ``path`` into the inbox under a temporary hidden name, then rename it into view.

    An existing inbox file is never overwritten: the copy gets a numbered name instead.
    """
    if not path.is_file():
        raise UserFacingError(f"no such file: {readable_name(str(path))}")
    inbox.mkdir(parents=True, exist_ok=True)
    target = inbox / _unused_name(path, lambda name: (inbox / name).exists())
    temporary = temporary_sibling(target)
    progress = TerminalProgress(f"uploading {readable_name(path.name)}")
    total = path.stat().st_size
    try:
        with open(path, "rb") as source, open(temporary, "wb") as copy:
            while chunk := source.read(COPY_CHUNK):
                copy.write(chunk)
                progress.show(
                    copy.tell() / total if total else 1.0, f"{copy.tell() / 2**20:.0f} of {total / 2**20:.0f} MiB"
                )
        progress.done()
        temporary.rename(target)
        fsync_dir(inbox)
    finally:
        temporary.unlink(missing_ok=True)
    return target


def upload_object(path: Path, inbox: settings.S3Location) -> str:
    """Upload ``path`` into the S3 inbox (in parts when large; the object appears only once complete).

    An existing object is never overwritten: the upload gets a numbered name instead.
    """
    if not path.is_file():
        raise UserFacingError(f"no such file: {readable_name(str(path))}")
    client = _s3_client()
    name = _unused_name(path, lambda name: _object_exists(client, inbox.bucket, inbox.prefix + name))
    progress = TerminalProgress(f"uploading {readable_name(path.name)}")
    total, sent = path.stat().st_size, 0

    def on_bytes(count: int) -> None:
        nonlocal sent
        sent += count
        progress.show(sent / total if total else 1.0, f"{sent / 2**20:.0f} of {total / 2**20:.0f} MiB")

    client.upload_file(str(path), inbox.bucket, inbox.prefix + name, Callback=on_bytes)
    progress.done()
    return f"s3://{inbox.bucket}/{inbox.prefix}{name}"


def presigned_upload_url(name: str, inbox: Path | settings.S3Location, expires_seconds: int) -> str:
    """A URL that lets whoever holds it PUT one file named ``name`` into the S3 inbox, for a while:
    what a web app hands a browser, which then uploads without credentials of its own."""
    if isinstance(inbox, Path):
        raise UserFacingError("upload-url needs an S3 inbox: set VIDPIPE_INBOX to s3://bucket/prefix/")
    if not name or "/" in name or not is_candidate_name(name):
        raise UserFacingError(f"'{readable_name(name)}' cannot be an upload's name (no slash, not hidden)")
    import boto3
    from botocore.config import Config

    # Signature version 4 signs only the host: the browser may send the file with any Content-Type.
    client = boto3.client("s3", config=Config(signature_version="s3v4"))
    return client.generate_presigned_url(
        "put_object", Params={"Bucket": inbox.bucket, "Key": inbox.prefix + name}, ExpiresIn=expires_seconds
    )


def _s3_client() -> Any:
    from dagster_aws.s3 import S3Resource

    return S3Resource().get_client()


def _unused_name(path: Path, taken: Callable[[str], bool]) -> str:
    """``path``'s name, or ``<stem>-1<suffix>``, ``-2``, … if the inbox has that name already."""
    name, number = path.name, 1
    while taken(name):
        name = f"{path.stem}-{number}{path.suffix}"
        number += 1
    return name


def _object_exists(client: Any, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    from vidpipe.defs.storage import is_missing

    try:
        client.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        if is_missing(err):
            return False
        raise
    return True


def rerun_videos(keys: list[str]) -> int:
    """Launch a backfill of ``process_video`` for ``keys`` on the project's instance; the daemon runs it.

    A refused upload's partition, withdrawn from the asset graph, is added back first.
    """
    from vidpipe.definitions import PROCESS_JOB_NAME
    from vidpipe.defs.rejections import restore_partitions

    home = _checked_keys_and_home(keys)
    with _instance() as instance:
        restore_partitions(instance, _storage(), keys)
    dagster = Path(sys.executable).with_name("dagster")
    argv = [str(dagster), "job", "backfill", "-w", str(settings.workspace_file()), "-j", PROCESS_JOB_NAME]
    argv += ["--partitions", ",".join(keys), "--noprompt"]
    return subprocess.run(argv, env={**os.environ, "DAGSTER_HOME": str(home)}, cwd=home, check=False).returncode


def forget_videos(keys: list[str]) -> None:
    """Remove refused uploads for good (``rejections.forget_rejected``)."""
    from vidpipe.defs.rejections import forget_rejected

    _checked_keys_and_home(keys)
    with _instance() as instance:
        forget_rejected(instance, _storage(), _catalog(), keys)
    for key in keys:
        print(f"forgot {key}")


def list_rejections(*, as_json: bool) -> str:
    """The refused uploads kept in storage: key, when, the upload's name and why; or the records as JSON."""
    records = _storage().rejections()
    if as_json:
        return json.dumps(records, indent=2) + "\n"
    return "".join(
        f"{r['video']}  {r.get('rejected_at', '')}  {r.get('original_name') or '?'}: {r['reason']}\n" for r in records
    )


def _checked_keys_and_home(keys: list[str]) -> Path:
    """The instance's folder, ``$DAGSTER_HOME`` or the project's ``data/dagster_home`` (what ``./dev.sh run``
    uses), once ``keys`` are known to be video keys."""
    home = settings.dagster_home()
    if not (home / "dagster.yaml").exists():
        raise UserFacingError(
            f"no vidpipe instance in {home}: start vidpipe once (./dev.sh run), or set DAGSTER_HOME to its folder"
        )
    unknown = [key for key in keys if not is_partition_key(key)]
    if unknown:
        raise UserFacingError(f"not a video key: {', '.join(unknown)} (keys look like holiday-0123456789ab)")
    return home


@contextmanager
def _instance():
    """The project's Dagster instance (its ``dagster.yaml`` reads ``DAGSTER_HOME``, so this process sets it)."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(settings.dagster_home())
    with dg.DagsterInstance.get() as instance:
        yield instance


def _storage():
    from vidpipe.definitions import deployment_resources

    return deployment_resources()["storage"]


def _catalog():
    from vidpipe.catalog import open_catalog

    return open_catalog(settings.catalog_url())


def catalog_command(action: str) -> None:
    """``migrate``: make the catalog or bring it to this vidpipe's schema (a new one filled from storage);
    ``rebuild``: every row made anew from storage."""
    from vidpipe.defs.catalog import prepare, rebuild

    print((prepare if action == "migrate" else rebuild)(settings.catalog_url(), _storage()))


def list_videos(*, state: str | None, search: str, limit: int, after: str | None, as_json: bool) -> str:
    """One page of the catalog, newest first: a line per video (key, state, when, name, why it was refused),
    then the total and the command for the next page; or the page as JSON."""
    try:
        page = _catalog().page(state=state, search=search, after=after, limit=limit)
    except ValueError as err:
        raise UserFacingError(str(err)) from None
    if as_json:
        videos = [{**video.row(), "created_at": video.created_at.isoformat(), "updated_at": video.updated_at.isoformat()}
                  for video in page.videos]  # fmt: skip
        return json.dumps({"videos": videos, "total": page.total, "next": page.next_cursor}, indent=2) + "\n"
    width = max((len(v.key) for v in page.videos), default=0)
    lines = [
        f"{v.key:{width}}  {v.state:10}  {v.created_at:%Y-%m-%d %H:%M}  {v.name}"
        + (f": {v.reason}" if v.reason else "")
        for v in page.videos
    ]
    total = f"{page.total}{'+' if page.total_capped else ''}"
    lines.append(
        f"{len(page.videos)} of {total} video(s)"
        + (f"; next page: --after {page.next_cursor}" if page.next_cursor else "")
    )
    return "\n".join(lines) + "\n"


def serve_player(host: str, port: int) -> None:
    """Run ``vidpipe serve`` (``vidpipe/web/app.py``) on ``host:port`` until interrupted."""
    library = settings.player_library_dir()
    if not (library / "shaka-player.ui.js").is_file():
        raise UserFacingError(
            f"the player library is not installed in {library}: run ./dev.sh run, or npm ci --prefix web"
        )
    import uvicorn

    from vidpipe.web.app import build_app

    print(f"vidpipe player: http://{host}:{port}", file=sys.stderr, flush=True)
    uvicorn.run(build_app(_storage(), _catalog(), library), host=host, port=port, log_level="warning")


def process_file(path: Path, out: Path, *, verbose: bool = False) -> dict:
    """Materialize the whole graph for one file with an ephemeral Dagster instance.

    The file's folder serves as the inbox: the run reads that one file, as a sensor's run would.
    """
    if not path.is_file():
        raise UserFacingError(f"no such file: {readable_name(str(path))}")
    import dagster as dg

    from vidpipe.catalog import migrate
    from vidpipe.definitions import build_assets
    from vidpipe.defs.assets import PROGRESS_LOG
    from vidpipe.defs.catalog import CatalogResource
    from vidpipe.defs.partitions import VIDEOS, failure_reason, upload_tags
    from vidpipe.defs.resources import FFmpegResource, FolderInbox
    from vidpipe.defs.storage import LocalVideoStorage

    key = partition_key(path.name, sha256_file(path))
    log_level = "DEBUG" if verbose else "CRITICAL"
    progress = EncodeProgressHandler(f"encoding {readable_name(path.name)}")
    PROGRESS_LOG.addHandler(progress)
    PROGRESS_LOG.setLevel(logging.DEBUG)
    PROGRESS_LOG.propagate = False
    with (
        tempfile.TemporaryDirectory(prefix="vidpipe-") as dagster_home,
        _removed_after(PROGRESS_LOG, progress),
        warnings.catch_warnings(),
    ):
        # Dagster's notices about its beta and preview APIs are for developers, not for this command's user.
        warnings.simplefilter("ignore", dg.BetaWarning)
        warnings.simplefilter("ignore", dg.PreviewWarning)
        instance = dg.DagsterInstance.ephemeral(tempdir=dagster_home)
        instance.add_dynamic_partitions(VIDEOS, [key])
        catalog = f"sqlite:///{dagster_home}/catalog.sqlite"  # as ephemeral as the instance
        migrate(catalog)
        result = dg.materialize(
            build_assets(),
            instance=instance,
            partition_key=key,
            tags=upload_tags(path.name),
            resources={
                "storage": LocalVideoStorage(root=str(out.resolve())),
                "catalog": CatalogResource(url=catalog),
                "ffmpeg": FFmpegResource(**settings.limit_overrides()),
                "inbox": FolderInbox(path=str(path.resolve().parent)),
            },
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
            raise_on_error=False,
        )
        if not result.success:
            failed = next((e for e in result.all_events if e.is_step_failure), None)
            reason = failure_reason(failed) if failed else "processing failed"
            raise UserFacingError(f"{readable_name(path.name)}: {reason}")
        return result.output_for_node("publish", "video_manifest")


if __name__ == "__main__":
    sys.exit(main())
