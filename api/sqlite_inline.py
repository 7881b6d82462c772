"""aiosqlite's connection, run in the caller's thread: SQLite's writers without a hop per statement.

aiosqlite gives each connection a thread and runs every call there, the caller awaiting a
future the thread resolves through the event loop. Each statement then waits its turn among
everything else the loop has ready: a group of reports sends about ten statements, and with
SQLite's one writer across the processes, those waits lengthened every process's wait for
the write lock. Here each call runs at once, as the sqlite3 module would run it: the statement
holds the event loop for its own time instead.

Used for the writer's connections only (``Database``): reads keep aiosqlite's thread, beside
the loop. A writer never waits inside SQLite for the write lock, which the service's own
writers take in turn before ``BEGIN IMMEDIATE`` (``WriterFileLock``), so nothing here sleeps
but SQLite's own work; a tool writing to the same file beside the service (a migration) is
waited for by SQLite's busy handler, on the loop.

It replaces two of aiosqlite's private methods (``_execute``, ``_connect``) and its queue of
calls, which SQLAlchemy's adapter also uses: every SQLite test runs through this connection, so
an aiosqlite release that changes them fails the suite, not production.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Generator
from functools import partial
from typing import Any

import aiosqlite


class _Now:
    """aiosqlite's queue of calls for its thread, run as they come. SQLAlchemy's adapter puts
    a call there itself to set the isolation level."""

    @staticmethod
    def put_nowait(item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:
            if future is not None:
                future.set_exception(exc)
            else:
                raise
        else:
            if future is not None:
                future.set_result(result)


class InlineConnection(aiosqlite.Connection):
    """An aiosqlite connection whose calls run in the calling thread, without its worker thread
    (never started)."""

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._tx = _Now()  # type: ignore[assignment]

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    async def _connect(self) -> InlineConnection:
        if self._connection is None:
            self._connection = self._connector()
        return self

    def __await__(self) -> Generator[Any, None, InlineConnection]:
        return self._connect().__await__()

    def stop(self) -> None:
        self._running = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def connect(database: str, **kwargs: Any) -> InlineConnection:
    """``aiosqlite.connect``'s counterpart: ``sqlite3.connect``'s arguments."""
    return InlineConnection(partial(sqlite3.connect, database, **kwargs))
