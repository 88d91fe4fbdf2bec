"""``vidpipe upload`` and ``vidpipe upload-url``: files into the inbox, from here or from a browser."""

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidpipe import settings
from vidpipe.cli.common import Command, TerminalProgress, UserFacingError
from vidpipe.inbox import is_candidate_name, readable_name
from vidpipe.media.files import fsync_dir, temporary_sibling

COPY_CHUNK = 4 * 2**20


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


def _upload(args: argparse.Namespace) -> int:
    inbox = settings.inbox_location(args.inbox)
    for path in args.files:
        uploaded = upload_file(path, inbox) if isinstance(inbox, Path) else upload_object(path, inbox)
        # The exact bytes of the name, so scripts can use it whatever its encoding.
        sys.stdout.buffer.write(os.fsencode(uploaded) + b"\n")
    return 0


def _upload_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--inbox", default=None, help="a folder or s3://bucket/prefix/; default: $VIDPIPE_INBOX")


def _upload_url_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the upload's name in the inbox")
    parser.add_argument("--expires", type=int, default=3600, help="seconds the URL stays valid (default 3600)")


def _upload_url(args: argparse.Namespace) -> int:
    print(presigned_upload_url(args.name, settings.inbox_location(), args.expires))
    return 0


COMMANDS = (
    Command("upload", "copy video files into the upload inbox", _upload_arguments, _upload),
    Command(
        "upload-url",
        "print a presigned URL that uploads one file into the S3 inbox with an HTTP PUT",
        _upload_url_arguments,
        _upload_url,
    ),
)
