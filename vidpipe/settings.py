"""Where things live, from the environment, with defaults under the project folder."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from vidpipe.inbox import SETTLE_SECONDS
from vidpipe.media.ffmpeg_calls import Limits

PACKAGE_DIR = Path(__file__).resolve().parent


def project_dir(package_dir: Path = PACKAGE_DIR) -> Path:
    """The checkout vidpipe runs from (where ``pyproject.toml`` is); for an installed package,
    which has none beside it, the current directory."""
    checkout = package_dir.parent
    return checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()


def data_dir() -> Path:
    """``VIDPIPE_DATA``: where the defaults below live; ``data/`` in the project by default."""
    return Path(os.environ.get("VIDPIPE_DATA") or project_dir() / "data")


def dagster_home() -> Path:
    """``DAGSTER_HOME``: the Dagster instance's folder; ``./dev.sh run`` uses ``data/dagster_home`` in the project."""
    return Path(os.environ.get("DAGSTER_HOME") or data_dir() / "dagster_home").resolve()


def run_log_file() -> Path:
    """``VIDPIPE_RUN_LOG``: the file every run appends all its messages to, DEBUG included;
    ``logs/runs.log`` in the instance's folder by default."""
    return Path(os.environ.get("VIDPIPE_RUN_LOG") or dagster_home() / "logs" / "runs.log").resolve()


def inbox_location(given: str | None = None) -> Path | S3Location:
    """``VIDPIPE_INBOX`` (or ``given``): the folder, or ``s3://bucket/prefix/``, uploads are dropped
    into (for S3, reached as ``storage_location`` says)."""
    return _location("VIDPIPE_INBOX", given or os.environ.get("VIDPIPE_INBOX"), data_dir() / "inbox")


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/prefix/``: a bucket and the prefix of every key vidpipe writes there."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, variable: str, url: str) -> S3Location:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
            raise ValueError(f"{variable} must name a bucket, like s3://videos/ or s3://videos/prefix/, not {url!r}")
        prefix = prefix.strip("/")
        return cls(bucket, f"{prefix}/" if prefix else "")


def storage_location() -> Path | S3Location:
    """``VIDPIPE_STORAGE``: the folder, or ``s3://bucket/prefix/``, under which originals and outputs are kept.

    For S3, the standard AWS variables say where and as whom (``AWS_ENDPOINT_URL`` for a server
    other than AWS's, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` or an instance role, ``AWS_REGION``).
    """
    return _location("VIDPIPE_STORAGE", os.environ.get("VIDPIPE_STORAGE"), data_dir() / "storage")


def _location(variable: str, text: str | None, default: Path) -> Path | S3Location:
    if text and text.startswith("s3://"):
        return S3Location.parse(variable, text)
    return Path(text or default).resolve()


def catalog_url() -> str:
    """``VIDPIPE_CATALOG``: the catalog's database as a SQLAlchemy URL; ``data/catalog.sqlite`` by default. On
    many machines, a PostgreSQL database of its own (``postgresql+psycopg2://user@host:port/vidpipe_catalog``)."""
    return os.environ.get("VIDPIPE_CATALOG") or f"sqlite:///{(data_dir() / 'catalog.sqlite').resolve()}"


def retire_after_days() -> float | None:
    """``VIDPIPE_RETIRE_AFTER_DAYS``: how many days a ready video stays one of Dagster's live partitions before
    the ``retired_videos`` sensor retires it (30 by default; ``never`` keeps every video live)."""
    text = os.environ.get("VIDPIPE_RETIRE_AFTER_DAYS") or "30"
    if text == "never":
        return None
    try:
        days = float(text)
    except ValueError:
        days = -1
    if days < 0:
        raise ValueError(f"VIDPIPE_RETIRE_AFTER_DAYS must be a number of days or never, not {text!r}")
    return days


def scratch_dir() -> Path:
    """``VIDPIPE_SCRATCH``: this machine's folder for files in the making when storage is S3
    (downloads of originals, outputs before their upload); never shared with another machine."""
    return Path(os.environ.get("VIDPIPE_SCRATCH") or data_dir() / "scratch").resolve()


def limit_variable(limit: str) -> str:
    """The variable that sets one of ``Limits``'s fields: ``max_pixels`` → ``VIDPIPE_MAX_PIXELS``."""
    return f"VIDPIPE_{limit.upper()}"


def limit_overrides() -> dict[str, Any]:
    """Upload limits set by ``VIDPIPE_MAX_*`` variables (one per ``Limits`` field), as ``FFmpegResource`` fields."""
    overrides = {}
    for limit in fields(Limits):
        variable = limit_variable(limit.name)
        text = os.environ.get(variable)
        if text:
            kind = type(getattr(Limits, limit.name))
            try:
                overrides[limit.name] = kind(text)
            except ValueError:
                raise ValueError(f"{variable} must be a number, not {text!r}") from None
    return overrides


def celery_broker() -> str | None:
    """``VIDPIPE_CELERY_BROKER``: a Redis URL (``redis://host:6379/0``); when set, every step of a
    run goes to Celery workers through it (it is their result backend too), else steps run on the
    run's machine."""
    return os.environ.get("VIDPIPE_CELERY_BROKER") or None


def worker_queues() -> list[str]:
    """``VIDPIPE_WORKER_QUEUES``: the Celery queues a worker takes steps from, comma-separated;
    ``dagster,encode`` (every step) by default, ``encode`` alone for an encode machine."""
    return [queue.strip() for queue in (os.environ.get("VIDPIPE_WORKER_QUEUES") or "dagster,encode").split(",")]


def worker_name() -> str:
    """``VIDPIPE_WORKER``: this machine's or worker's name in step metadata; the host name by default."""
    return os.environ.get("VIDPIPE_WORKER") or socket.gethostname()


def settle_seconds() -> float:
    """``VIDPIPE_SETTLE_SECONDS``: how long an upload must stay unchanged to count as finished."""
    text = os.environ.get("VIDPIPE_SETTLE_SECONDS") or str(SETTLE_SECONDS)
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"VIDPIPE_SETTLE_SECONDS must be a number of seconds, not {text!r}") from None


def workspace_file() -> Path:
    """``VIDPIPE_WORKSPACE``: the Dagster workspace file that tells the webserver and daemon where the code is."""
    return Path(os.environ.get("VIDPIPE_WORKSPACE") or project_dir() / "workspace.yaml").resolve()


def ui_host() -> str:
    """``VIDPIPE_HOST``: the address the Dagster UI listens on."""
    return os.environ.get("VIDPIPE_HOST") or "127.0.0.1"


def ui_port() -> int:
    """``VIDPIPE_PORT``: the port of the Dagster UI."""
    return _port("VIDPIPE_PORT", 3000)


def player_port() -> int:
    """``VIDPIPE_PLAYER_PORT``: the port of ``vidpipe serve``, the gallery and player pages (on ``VIDPIPE_HOST``)."""
    return _port("VIDPIPE_PLAYER_PORT", 3001)


def player_library_dir() -> Path:
    """``VIDPIPE_PLAYER_LIBRARY``: the folder with shaka-player's built files (``shaka-player.ui.js``,
    ``controls.css``), which the set-up installs from the npm registry into ``web/node_modules``."""
    default = project_dir() / "web" / "node_modules" / "shaka-player" / "dist"
    return Path(os.environ.get("VIDPIPE_PLAYER_LIBRARY") or default)


def code_server_port() -> int:
    """``VIDPIPE_CODE_SERVER_PORT``: the loopback port of the code server (``deploy/workspace.yaml`` reads it too)."""
    return _port("VIDPIPE_CODE_SERVER_PORT", 4000)


def _port(variable: str, default: int) -> int:
    text = os.environ.get(variable) or str(default)
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{variable} must be a port number (1-65535), not {text!r}")
    return int(text)
