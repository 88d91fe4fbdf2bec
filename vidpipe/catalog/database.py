"""Opening the catalog's database, and bringing its schema up to date with Alembic.

The URL is SQLAlchemy's: ``sqlite:////abs/path/catalog.sqlite`` on one machine, ``postgresql+psycopg2://…``
on many. A process opens each URL once (``open_catalog``): that checks the schema's version, so that a
catalog that is missing, behind or locked is one plain-words error naming the command that fixes it.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from vidpipe.catalog.store import Catalog
from vidpipe.media.errors import VidpipeError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BUSY_SECONDS = 30
"""How long a write waits for another process's write to the SQLite catalog before it fails."""


class CatalogError(VidpipeError):
    """The catalog cannot be used as it is: missing, or at another schema than this vidpipe's. The message
    names the command that fixes it; running the same work again cannot succeed before someone does."""


class CatalogUnavailableError(CatalogError):
    """The catalog is there but cannot be reached now: locked by another process, or its server down."""

    retryable = True


def open_catalog(url: str) -> Catalog:
    """The catalog at ``url``, its schema checked to be this vidpipe's (once per process)."""
    return _opened(url)


@functools.cache
def _opened(url: str) -> Catalog:
    sqlite_file = _sqlite_file(url)
    if sqlite_file is not None and not sqlite_file.is_file():
        raise CatalogError(f"the catalog {sqlite_file} does not exist: run `vidpipe catalog migrate` to make it")
    engine = engine_for(url)
    _ENGINES.append(engine)
    found, wanted = current_revision(engine), head_revision()
    if found is None:
        raise CatalogError(f"the catalog {where(url)} has no tables: run `vidpipe catalog migrate` to make them")
    if found != wanted:
        raise CatalogError(
            f"the catalog {where(url)} is at schema version {found}, this vidpipe needs {wanted}: "
            "run `vidpipe catalog migrate` (or, if it was made by a newer vidpipe, `vidpipe catalog rebuild`)"
        )
    return Catalog(engine)


def migrate(url: str) -> tuple[str | None, str]:
    """Bring the catalog at ``url`` (made if missing) up to this vidpipe's schema: (version before, after)."""
    sqlite_file = _sqlite_file(url)
    if sqlite_file is not None:
        sqlite_file.parent.mkdir(parents=True, exist_ok=True)
    engine = engine_for(url)
    try:
        before = current_revision(engine)
        with engine.begin() as conn:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    finally:
        engine.dispose()
    if before != head_revision():
        _opened.cache_clear()
    return before, head_revision()


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None, "the catalog has no migrations"
    return head


def where(url: str) -> str:
    """``url`` for people: a SQLite file's path, or the URL without its password."""
    sqlite_file = _sqlite_file(url)
    return str(sqlite_file) if sqlite_file is not None else sa.make_url(url).render_as_string(hide_password=True)


def engine_for(url: str) -> sa.Engine:
    """An engine for ``url`` whose errors read as ``CatalogError`` where a person can fix them. SQLite is in
    WAL mode (readers never wait for a writer) and its writes take the lock when they begin."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, connect_args={"timeout": BUSY_SECONDS})
        sa.event.listen(engine, "connect", _sqlite_connected)
        sa.event.listen(engine, "begin", _sqlite_begin)
    else:
        engine = sa.create_engine(parsed, pool_pre_ping=True, pool_size=2, max_overflow=4)
    sa.event.listen(engine, "handle_error", functools.partial(_plain_error, url))
    return engine


_ENGINES: list[sa.Engine] = []
"""The engines of the catalogs this process has opened."""


def _forget_inherited_connections() -> None:
    """In a forked child: never use the parent's connections (SQLAlchemy's advice for ``fork``)."""
    for engine in _ENGINES:
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_inherited_connections)


def _sqlite_connected(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # transactions begin as _sqlite_begin says
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    if conn.get_execution_options().get("writing"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _plain_error(url: str, context: sa.engine.ExceptionContext) -> None:
    original = context.original_exception
    text = str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__
    if "database is locked" in text:
        raise CatalogUnavailableError(
            f"the catalog {where(url)} stayed locked by another process for {BUSY_SECONDS} s: "
            "a rebuild or a stuck command holds it; wait for it or stop it"
        ) from original
    if "no such table" in text or ("does not exist" in text and "relation" in text):
        raise CatalogError(
            f"the catalog {where(url)} is missing its tables ({text}): run `vidpipe catalog migrate`"
        ) from original
    if context.connection is None or context.is_disconnect:
        raise CatalogUnavailableError(f"cannot reach the catalog {where(url)}: {text}") from original


def _sqlite_file(url: str) -> Path | None:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    return Path(parsed.database or "")
