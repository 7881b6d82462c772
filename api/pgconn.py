"""psycopg connections that never wait forever for a database gone silent.

TCP keepalives and ``tcp_user_timeout`` (set in the connect arguments) find a peer that stopped
answering at the TCP level. They cannot see a database that is silent behind something still
answering TCP (a proxy, a frozen server process): there, every round trip waits here at most
``timeout`` seconds, then the connection is closed and the request gets 503. The timeout sits
above the statement timeout, so a statement the server is still allowed to run is never cut.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.abc import PQGen

RV = TypeVar("RV")
_INTERVAL = 0.1  # psycopg's own wait interval (how often it checks for interrupts)

# A tighter monotonic deadline for the current context, e.g. the readiness probe.
_DEADLINE: ContextVar[float | None] = ContextVar("db_deadline", default=None)


@contextmanager
def deadline(seconds: float) -> Any:
    """Every database round trip in this block waits at most until ``seconds`` from now."""
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _bound(default: float) -> float:
    limit = _DEADLINE.get()
    if limit is None:
        return default
    return max(0.001, min(default, limit - time.monotonic()))


def _silent(conn: psycopg.BaseConnection[Any], timeout: float) -> psycopg.OperationalError:
    # The protocol state is unknown (a query may be half sent): the connection is never reused.
    conn.pgconn.finish()
    return psycopg.OperationalError(f"the database sent nothing for {timeout:g} s")


class BoundedConnection(psycopg.Connection[Any]):
    response_timeout = 30.0

    def wait(self, gen: PQGen[RV], interval: float = _INTERVAL, timeout: float | None = None) -> RV:
        limit = _bound(self.response_timeout) if timeout is None else timeout
        try:
            return super().wait(gen, interval, limit)
        except pg_errors._WaitTimeout:
            raise _silent(self, limit) from None


class BoundedAsyncConnection(psycopg.AsyncConnection[Any]):
    response_timeout = 30.0

    async def wait(
        self,
        gen: PQGen[RV],
        interval: float = _INTERVAL,
        timeout: float | None = None,  # noqa: ASYNC109 (psycopg's signature)
    ) -> RV:
        limit = _bound(self.response_timeout) if timeout is None else timeout
        try:
            return await super().wait(gen, interval, limit)
        except pg_errors._WaitTimeout:
            raise _silent(self, limit) from None


def connect(timeout: float, *args: Any, **kwargs: Any) -> BoundedConnection:
    conn = BoundedConnection.connect(*args, **kwargs)
    conn.response_timeout = timeout
    return conn


async def connect_async(limit: float, *args: Any, **kwargs: Any) -> BoundedAsyncConnection:
    conn = await BoundedAsyncConnection.connect(*args, **kwargs)
    conn.response_timeout = limit
    return conn
