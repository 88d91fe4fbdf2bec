"""What the commands share: the one-line error, the project's instance, storage and catalog, and the table
row each command is."""

import argparse
import os
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vidpipe import settings
from vidpipe.media.keys import is_partition_key


@dataclass(frozen=True)
class Command:
    """One ``vidpipe`` subcommand: its name and help, the arguments it takes, and what it does (returning
    the exit status)."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class UserFacingError(Exception):
    """A failure explained in one line; the command exits non-zero without a traceback."""


def checked_keys_and_home(keys: list[str]) -> Path:
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
def project_instance():
    """The project's Dagster instance (its ``dagster.yaml`` reads ``DAGSTER_HOME``, so this process sets it)."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(settings.dagster_home())
    with dg.DagsterInstance.get() as instance:
        yield instance


def project_storage():
    from vidpipe.definitions import deployment_resources

    return deployment_resources()["storage"]


def project_catalog():
    from vidpipe.catalog import open_catalog

    return open_catalog(settings.catalog_url())


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
