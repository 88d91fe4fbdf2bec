"""``vidpipe process``: every output for one file, in this process, with an ephemeral instance and catalog."""

import argparse
import json
import logging
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vidpipe import settings
from vidpipe.cli.common import Command, TerminalProgress, UserFacingError
from vidpipe.inbox import readable_name
from vidpipe.media.files import sha256_file
from vidpipe.media.keys import partition_key


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


def _process_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="output root; the video lands in OUT/<key>/")
    parser.add_argument("--verbose", action="store_true", help="show Dagster's run log on stderr")


def _process(args: argparse.Namespace) -> int:
    print(json.dumps(process_file(args.file, args.out, verbose=args.verbose), indent=2))
    return 0


COMMANDS = (Command("process", "make every output for one file, in-process, no daemon", _process_arguments, _process),)
