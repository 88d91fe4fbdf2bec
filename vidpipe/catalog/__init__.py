"""The catalog: a database of every video, its state and where its published files are.

It answers the questions that must cost the same at ten videos and at a million: is this content
known, what is on this page of the gallery, how many videos are ready. Storage stays the source of
truth (the records next to each original); the catalog is kept in step by the steps that write them,
and ``vidpipe catalog rebuild`` makes it anew from storage. It knows nothing of Dagster.

- ``schema``: the tables; ``migrations/``: Alembic's versions of them (a new column goes in both).
- ``store``: ``Catalog``, its reads (by key, by content, a page) and its changes.
- ``database``: opening a URL (SQLite or PostgreSQL), ``migrate``, plain-words ``CatalogError``.
"""

from vidpipe.catalog.database import CatalogError, CatalogUnavailableError, migrate, open_catalog
from vidpipe.catalog.schema import STATES, State
from vidpipe.catalog.store import Catalog, Page, Video, name_words, parse_time, utc_now

__all__ = [
    "STATES",
    "Catalog",
    "CatalogError",
    "CatalogUnavailableError",
    "Page",
    "State",
    "Video",
    "migrate",
    "name_words",
    "open_catalog",
    "parse_time",
    "utc_now",
]
