"""``vidpipe rerun | rejections | forget | catalog | videos``: the project's videos, their catalog and refusals."""

import argparse
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

from vidpipe import settings
from vidpipe.catalog.schema import STATES
from vidpipe.catalog.store import PAGE_SIZE
from vidpipe.cli.common import (
    Command,
    UserFacingError,
    checked_keys_and_home,
    project_catalog,
    project_instance,
    project_storage,
)


def rerun_videos(keys: list[str]) -> int:
    """Launch a backfill of ``process_video`` for ``keys`` on the project's instance; the daemon runs it.

    A refused upload's partition, withdrawn from the asset graph, is added back first.
    """
    from vidpipe.definitions import PROCESS_JOB_NAME
    from vidpipe.defs.rejections import restore_partitions

    home = checked_keys_and_home(keys)
    with project_instance() as instance:
        restore_partitions(instance, project_storage(), keys)
    dagster = Path(sys.executable).with_name("dagster")
    argv = [str(dagster), "job", "backfill", "-w", str(settings.workspace_file()), "-j", PROCESS_JOB_NAME]
    argv += ["--partitions", ",".join(keys), "--noprompt"]
    return subprocess.run(argv, env={**os.environ, "DAGSTER_HOME": str(home)}, cwd=home, check=False).returncode


def forget_videos(keys: list[str]) -> None:
    """Remove refused uploads for good (``rejections.forget_rejected``)."""
    from vidpipe.defs.rejections import forget_rejected

    checked_keys_and_home(keys)
    with project_instance() as instance:
        forget_rejected(instance, project_storage(), project_catalog(), keys)
    for key in keys:
        print(f"forgot {key}")


def list_rejections(*, as_json: bool) -> str:
    """The refused uploads kept in storage: key, when, the upload's name and why; or the records as JSON."""
    records = project_storage().rejections()
    if as_json:
        return json.dumps(records, indent=2) + "\n"
    return "".join(
        f"{r['video']}  {r.get('rejected_at', '')}  {r.get('original_name') or '?'}: {r['reason']}\n" for r in records
    )


def catalog_command(action: str) -> None:
    """``migrate``: make the catalog or bring it to this vidpipe's schema (a new one filled from storage);
    ``rebuild``: every row made anew from storage."""
    from vidpipe.defs.catalog import prepare, rebuild

    print((prepare if action == "migrate" else rebuild)(settings.catalog_url(), project_storage()))


def list_videos(*, state: str | None, search: str, limit: int, after: str | None, as_json: bool) -> str:
    """One page of the catalog, newest first: a line per video (key, state, when, name, why it was refused),
    then the total and the command for the next page; or the page as JSON."""
    try:
        page = project_catalog().page(state=state, search=search, after=after, limit=limit)
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


def _keys(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help=what)


def _rejections_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON array of the rejection records")


def _catalog_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action", choices=["migrate", "rebuild"],
        help="migrate: make it or bring it to this vidpipe's schema (a new one is filled from storage); "
        "rebuild: every row made anew from what storage records",
    )  # fmt: skip


def _videos_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", choices=STATES, default=None, help="only videos in this state")
    parser.add_argument("--search", default="", metavar="TEXT", help="only videos whose name holds every word of TEXT")
    parser.add_argument(
        "--limit", type=int, default=PAGE_SIZE, help=f"videos a page (default {PAGE_SIZE}, at most 100)"
    )
    parser.add_argument(
        "--after", default=None, metavar="CURSOR", help="the cursor a previous page printed: its next page"
    )
    parser.add_argument("--json", action="store_true", help="the page as JSON")


def _printed(text: str) -> int:
    print(text, end="")
    return 0


def _forget(args: argparse.Namespace) -> int:
    forget_videos(args.videos)
    return 0


def _catalog(args: argparse.Namespace) -> int:
    catalog_command(args.action)
    return 0


def _videos(args: argparse.Namespace) -> int:
    return _printed(
        list_videos(state=args.state, search=args.search, limit=args.limit, after=args.after, as_json=args.json)
    )


COMMANDS = (
    Command(
        "rerun", "process videos again (a backfill) on the instance in $DAGSTER_HOME",
        partial(_keys, what="video keys, e.g. holiday-0123456789ab"), lambda args: rerun_videos(args.videos),
    ),
    Command(
        "rejections", "list the refused uploads kept in storage, and why",
        _rejections_arguments, lambda args: _printed(list_rejections(as_json=args.json)),
    ),
    Command(
        "forget", "remove refused uploads for good: kept original, records, partition",
        partial(_keys, what="keys of refused uploads"), _forget,
    ),
    Command("catalog", "make, migrate or rebuild the catalog of videos ($VIDPIPE_CATALOG)", _catalog_arguments, _catalog),
    Command("videos", "list a page of the catalog's videos, newest first", _videos_arguments, _videos),
)  # fmt: skip
