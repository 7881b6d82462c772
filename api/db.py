from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import JSON, DateTime, Engine, MetaData, create_engine, event, make_url
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from api import pgconn
from api.settings import DatabaseSettings, PoolSettings

T = TypeVar("T")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")


# Whether the current request may write (set per request from its method); SQLite uses it to take
# the write lock up front only where a write follows.
WRITE_INTENT: ContextVar[bool] = ContextVar("write_intent", default=True)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware on the way in and out, on every backend (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_engine(settings: DatabaseSettings) -> Engine:
    url = settings.database_url
    if url.startswith("sqlite"):
        # An in-memory database lives in one connection: no pool to size there.
        in_memory = make_url(url).database in (None, "", ":memory:")
        pool: dict[str, Any] = (
            {}
            if in_memory
            else {
                "pool_size": settings.db_pool_size,
                "max_overflow": settings.db_max_overflow,
                "pool_timeout": settings.db_pool_timeout,
            }
        )
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **pool
        )
        _configure_sqlite(engine)
        return engine
    engine = create_engine(url, **_server_options(settings))
    timeout = settings.db_response_timeout

    @event.listens_for(engine, "do_connect")
    def _bounded(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        return pgconn.connect(timeout, *cargs, **cparams)

    return engine


def make_async_engine(settings: DatabaseSettings) -> AsyncEngine | None:
    """PostgreSQL's engine for the hot paths (psycopg's asyncio side); None on SQLite.

    Its pool waits on the event loop: a request waiting for a connection or for the database
    holds no thread, and no worker thread fights the event loop for the GIL per round trip.
    """
    if settings.database_url.startswith("sqlite"):
        return None
    options = _server_options(settings)
    options["connect_args"]["async_creator_fn"] = partial(
        pgconn.connect_async, settings.db_response_timeout
    )
    return create_async_engine(settings.database_url, **options)


def _server_options(settings: DatabaseSettings) -> dict[str, Any]:
    # A network that drops packets instead of resetting: keepalives find an idle connection's
    # dead peer, tcp_user_timeout one with unacknowledged data, both within seconds.
    connect_args: dict[str, Any] = {
        "connect_timeout": min(5, max(2, int(settings.db_response_timeout))),
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": int(settings.db_response_timeout * 1000),
    }
    if settings.db_statement_timeout_ms:
        connect_args["options"] = f"-c statement_timeout={settings.db_statement_timeout_ms}"
    return {
        "pool_pre_ping": True,
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout,
        "connect_args": connect_args,
    }


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN and cannot take the write lock up front;
    # BEGIN IMMEDIATE makes writers queue on busy_timeout instead of failing with "locked".
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Reads stay deferred: under WAL they run beside the one writer instead of queueing.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if WRITE_INTENT.get() else "BEGIN")


class Sessions:
    """Session factories of one app: reads on PostgreSQL run without a transaction."""

    def __init__(self, engine: Engine) -> None:
        self.write = sessionmaker(engine, expire_on_commit=False)
        # Under READ COMMITTED every statement has its own snapshot anyway; autocommit saves a
        # read its BEGIN and COMMIT round trips. SQLite keeps its (deferred) transaction.
        read_engine = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql"
            else engine
        )
        self.read = sessionmaker(read_engine, expire_on_commit=False)
        self.autocommit_reads = read_engine is not engine


class AsyncSessions:
    """Session factories of the asyncio engine, behind one first-come, first-served gate."""

    def __init__(self, engine: AsyncEngine, capacity: int, timeout: float) -> None:
        self.engine = engine
        self.write = async_sessionmaker(engine, expire_on_commit=False)
        # As for threaded reads: autocommit saves a read its BEGIN and COMMIT round trips.
        self.read = async_sessionmaker(
            engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
        )
        # The asyncio pool gives a returned connection to whoever asks first, so under load a
        # waiting request can be passed over again and again (p99 in seconds); waiting here
        # serves requests in the order they came.
        self.gate = anyio.CapacityLimiter(capacity)
        self.timeout = timeout

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """A place among the requests using the database; 503 "busy" after the pool timeout."""
        try:
            with anyio.fail_after(self.timeout):
                await self.gate.acquire()
        except TimeoutError:
            raise PoolTimeoutError(f"no connection free within {self.timeout:g} s") from None
        try:
            yield
        finally:
            self.gate.release()


async def in_transaction(request: Request, work: Callable[..., T], *args: Any) -> T:
    """Run ``work(session, *args)`` in one transaction, committed before this returns.

    On PostgreSQL it runs on the event loop through the asyncio engine (SQLAlchemy runs the
    synchronous code and awaits each round trip); on SQLite in one worker-thread hop.
    """
    sessions: AsyncSessions | None = getattr(request.app.state, "async_sessions", None)
    if sessions is None:
        return await run_in_threadpool(_in_thread, request.app.state.sessions.write, work, *args)
    async with sessions.turn(), sessions.write() as session, session.begin():
        return await session.run_sync(work, *args)


async def read_only(request: Request, work: Callable[..., T], *args: Any) -> T:
    """Run ``work(session, *args)`` for a read, the way ``in_transaction`` runs a write.

    PostgreSQL: the asyncio engine in autocommit (each statement its own snapshot, no BEGIN or
    COMMIT round trips); SQLite: one worker-thread hop in a deferred read transaction.
    """
    sessions: AsyncSessions | None = getattr(request.app.state, "async_sessions", None)
    if sessions is None:
        return await run_in_threadpool(
            _read_in_thread, request.app.state.sessions.read, work, *args
        )
    async with sessions.turn(), sessions.read() as session:
        return await session.run_sync(work, *args)


def _read_in_thread(factory: sessionmaker[Session], work: Callable[..., T], *args: Any) -> T:
    with factory() as session:
        return work(session, *args)


def _in_thread(factory: sessionmaker[Session], work: Callable[..., T], *args: Any) -> T:
    with factory() as session, session.begin():
        return work(session, *args)


async def get_session(request: Request) -> AsyncIterator[Session]:
    """The request's unit of work: committed when the endpoint returns, rolled back on error.

    Async on purpose: making a Session does no I/O, so only the end of the transaction needs a
    worker thread; every thread hop costs more than the work it would carry.
    """
    sessions: Sessions = request.app.state.sessions
    if not WRITE_INTENT.get() and sessions.autocommit_reads:
        session = sessions.read()
        try:
            yield session
        finally:
            # Nothing to commit or roll back: closing only hands the connection back.
            session.close()
        return
    session = sessions.write() if WRITE_INTENT.get() else sessions.read()
    try:
        yield session
    except BaseException:
        await run_in_threadpool(_end, session, commit=False)
        raise
    await run_in_threadpool(_end, session, commit=True)


def _end(session: Session, *, commit: bool) -> None:
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


# The transaction ends when the endpoint returns, before the response is sent, so a client never
# sees a success for data that then failed to commit. At most as many requests hold a session as
# the pool has connections: the rest wait here without a thread, instead of taking every worker
# thread while they wait for a connection that a thread-less request holds (pool starvation).
SessionDep = Annotated[
    Session,
    Depends(get_session, scope="function", max_concurrency=PoolSettings().db_capacity),
]
