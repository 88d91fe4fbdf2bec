"""Threads for a step that runs parts at once: nothing of Dagster or of media in here."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

K = TypeVar("K")
T = TypeVar("T")


def side_by_side(parts: dict[K, Callable[[], T]]) -> dict[K, Future[T]]:
    """Run ``parts`` at once, each in a thread, and wait until every one has ended: what each returned or
    raised. (A failed part never leaves another still writing while the failure is handled.)"""
    with ThreadPoolExecutor(max_workers=max(len(parts), 1)) as pool:
        return {name: pool.submit(make) for name, make in parts.items()}
