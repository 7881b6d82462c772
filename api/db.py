from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
import typing
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import cache, lru_cache, partial
from typing import Annotated, Any

import anyio
import psycopg
from fastapi import Depends, Request
from pydantic_core import to_json
from sqlalchemy import (
    ARRAY,
    JSON,
    ColumnElement,
    DateTime,
    Engine,
    Enum,
    MetaData,
    Select,
    String,
    Text,
    bindparam,
    create_engine,
    event,
    insert,
    make_url,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.exc import DBAPIError, InvalidatePoolError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import Pool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Update
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator, TypeEngine

from api import pgconn, sqlite_inline
from api.settings import DatabaseSettings

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: SQLite's busy handler alone
    fcntl = None  # type: ignore[assignment]

# At DEBUG, aiosqlite logs every statement with its parameters: patient data.
logging.getLogger("aiosqlite").setLevel(logging.INFO)
log = logging.getLogger("api.db")
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")


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


class _one_of(FunctionElement[bool]):
    # Untyped: a Boolean function would be compared with 1 on SQLite, out of an index's reach.
    inherit_cache = True


def one_of(column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """``column IN (...)`` for the list given as the parameter ``name``.

    PostgreSQL gets ``column = ANY(:name)``, the list bound as one array: the statement's text
    is the same whatever the list's length, so that it is prepared and planned once, where an
    expanded ``IN`` is a statement of its own for every length (parsed and planned again until
    each has run five times). SQLite expands the list.
    """
    return _one_of(column, bindparam(name, type_=array_of(column.type)))


def array_of(element: TypeEngine[Any]) -> ARRAY[Any]:
    """The type to bind a list of ``element`` values as, to compare with such a column.

    Strings go as text[]: PostgreSQL compares a varchar column as text, and would cast a
    varchar[] to text[] again for every row it compares in a prepared statement's generic plan.
    """
    plain = isinstance(element, String) and not isinstance(element, Enum)
    return ARRAY(Text() if plain else element)


@compiles(_one_of, "postgresql")
def _one_of_pg(element: _one_of, compiler: SQLCompiler, **kw: Any) -> str:
    column, values = element.clauses
    return f"{compiler.process(column, **kw)} = ANY({compiler.process(values, **kw)})"


@compiles(_one_of)
def _one_of_expanded(element: _one_of, compiler: SQLCompiler, **kw: Any) -> str:
    column, values = element.clauses
    expanded = bindparam(values.key, type_=column.type, expanding=True)
    return compiler.process(column.in_(expanded), **kw)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def new_id() -> uuid.UUID:
    """A UUIDv7 (RFC 9562): the time in milliseconds, then 74 random bits. New rows go to the
    end of their primary key's index, not to a random page of it (as ``uuid4`` sent them), so a
    commit writes far fewer index pages. (Python 3.14 has ``uuid.uuid7``.)"""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10))
    value = value & ~(0xF << 76 | 0x3 << 62) | 0x7 << 76 | 0x2 << 62  # version 7, RFC variant
    return uuid.UUID(int=value)


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Shape(typing.NamedTuple):
    kind: str  # insert | update
    model: type[Base]
    names: tuple[str, ...]
    before: str | None  # a select list evaluated before any row is drawn


@cache
def _document_writes(shapes: tuple[_Shape, ...], dialect: Dialect) -> TextClause:
    """One statement for ``shapes``, in their order: each but the last a data-modifying WITH,
    each reading its rows from the JSON document ``:rows<i>``."""
    quote = dialect.identifier_preparer
    ctes, statements = [], []
    for i, (kind, model, names, before) in enumerate(shapes):
        table = quote.format_table(model.__table__)
        columns = [quote.quote(name) for name in names]
        source = f"json_populate_recordset(NULL::{table}, CAST(:rows{i} AS json))"
        if before is not None:
            # Joined to every row: no row, nor the ids drawn for it, comes before it is evaluated.
            ctes.append(f"b{i} AS MATERIALIZED (SELECT {before})")
            source = f"b{i} CROSS JOIN {source}"
        if kind == "insert":
            # In the given order: identity columns (alert events) count in it.
            listed = ", ".join(columns)
            statements.append(
                f"INSERT INTO {table} ({listed}) SELECT {listed} FROM {source} "  # noqa: S608
                "WITH ORDINALITY AS r ORDER BY r.ordinality"
            )
        else:
            key, *rest = columns
            values = ", ".join(f"{c} = r.{c}" for c in rest)
            statements.append(
                f"UPDATE {table} AS t SET {values} FROM {source} AS r WHERE t.{key} = r.{key}"  # noqa: S608
            )
    *first, last = statements
    # Only the models' own names, quoted by the dialect, and the callers' constants go into
    # the SQL.
    ctes += [f"w{i} AS ({sql})" for i, sql in enumerate(first)]
    return text(f"WITH {', '.join(ctes)} {last}" if ctes else last)


@lru_cache(maxsize=1024)
def _driver_sql(
    statement: Select[Any], dialect: Dialect
) -> tuple[str, dict[str, Callable[[Any], Any]]]:
    compiled = statement.compile(dialect=dialect)
    processors: dict[str, Callable[[Any], Any]] = {}
    for name, bind in compiled.binds.items():
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            processors[name] = processor
    return compiled.string, processors


async def first_column(
    conn: AsyncConnection, statement: Select[Any], values: Mapping[str, Any]
) -> list[Any]:
    """The first column of ``statement``'s rows, its parameters bound from ``values``.

    On PostgreSQL the statement's SQL, compiled once, goes to psycopg directly: for the
    worklist, SQLAlchemy's execution and result layers cost more CPU than the query does in
    the database. The statement may not have expanding (IN) parameters. Errors arrive as
    SQLAlchemy's, so that the service's handlers (503 for a lost connection) apply.
    """
    dialect = conn.dialect
    if dialect.name != "postgresql":
        return list((await conn.execute(statement, values)).scalars())
    sql, processors = _driver_sql(statement, dialect)
    params = {
        name: processors[name](value) if name in processors and value is not None else value
        for name, value in values.items()
    }
    raw = await conn.get_raw_connection()
    driver = typing.cast(psycopg.AsyncConnection[Any], raw.driver_connection)
    try:
        async with driver.cursor() as cursor:
            await cursor.execute(sql, params)
            return [row[0] for row in await cursor.fetchall()]
    except psycopg.Error as exc:
        lost = driver.broken or driver.closed
        if lost:
            await conn.invalidate(exc)
        raise DBAPIError.instance(
            sql,
            None,
            exc,
            psycopg.Error,
            hide_parameters=True,
            connection_invalidated=lost,
            dialect=dialect,
        ) from exc


async def insert_rows(
    conn: AsyncConnection, model: type[Base], rows: Sequence[dict[str, Any]]
) -> None:
    """Insert ``rows`` (each with the same keys) into ``model``'s table in one statement."""
    writes = Writes()
    writes.insert(model, rows)
    await writes.flush(conn)


class Writes:
    """Rows for several tables, written by ``flush`` in the order they were given.

    On PostgreSQL every table's rows go in one statement, each as one JSON document, written by
    pydantic-core's serialiser and read back into the table's row type by the database: a group
    of reports, whatever its size, is one round trip for its reports, symptoms, alerts and audit
    rows, and a statement of few shapes, each planned once. The driver's executemany would send
    one statement a row, and binding each column as an array costs more Python than the
    statement does (psycopg dumps arrays element by element). Times go with their offset: rows
    carry aware times only, as everywhere in the service (a naive one would be read in the
    session's time zone). On SQLite each table is an executemany, which runs inside the process.
    """

    def __init__(self) -> None:
        self._parts: list[tuple[_Shape, Sequence[dict[str, Any]]]] = []

    def insert(
        self, model: type[Base], rows: Sequence[dict[str, Any]], *, before: str | None = None
    ) -> None:
        """Insert ``rows``, each with the same keys. On PostgreSQL, ``before`` (a constant
        select list) is evaluated in the same statement before any of them is drawn."""
        if rows:
            self._parts.append((_Shape("insert", model, tuple(rows[0]), before), rows))

    def update(self, model: type[Base], rows: Sequence[dict[str, Any]]) -> None:
        """Set the other columns of each of ``rows`` (each with the same keys, ``id`` first) on
        the row of its ``id``."""
        if rows:
            self._parts.append((_Shape("update", model, tuple(rows[0]), None), rows))

    async def flush(self, conn: AsyncConnection) -> None:
        parts, self._parts = self._parts, []
        if not parts:
            return
        if conn.dialect.name == "postgresql":
            shapes = tuple(shape for shape, _ in parts)
            values = {f"rows{i}": to_json(rows).decode() for i, (_, rows) in enumerate(parts)}
            await conn.execute(_document_writes(shapes, conn.dialect), values)
            return
        for shape, rows in parts:
            if shape.kind == "insert":
                await conn.execute(insert(shape.model), list(rows))
            else:
                # Bound under other names than the columns', which SQLAlchemy keeps for itself.
                bound = [{f"b_{name}": value for name, value in row.items()} for row in rows]
                await conn.execute(_keyed_update(shape.model, shape.names), bound)


@cache
def _keyed_update(model: type[Base], names: tuple[str, ...]) -> Update:
    key, *rest = names
    return (
        update(model)
        .where(model.__table__.c[key] == bindparam(f"b_{key}"))
        .values({name: bindparam(f"b_{name}") for name in rest})
    )


def make_engine(settings: DatabaseSettings) -> Engine:
    """A synchronous engine, for what runs outside the service: migrations and test set-up."""
    url = settings.database_url
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _configure_sqlite(engine)
        return engine
    engine = create_engine(url, **_server_options(settings))
    _ping_when_idle(engine)
    timeout = settings.db_response_timeout

    @event.listens_for(engine, "do_connect")
    def _bounded(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        return pgconn.connect(timeout, *cargs, **cparams)

    return engine


def async_url(url: str) -> URL:
    """The service's URL with its asyncio driver: aiosqlite for SQLite, psycopg for PostgreSQL."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    return parsed.set(drivername="postgresql+psycopg")


def make_async_engine(settings: DatabaseSettings, *, inline: bool = False) -> AsyncEngine:
    """An engine of the service. Its pool waits on the event loop: a request waiting for a
    connection or for the database holds no thread. ``inline``: SQLite's statements run on the
    event loop's thread (``api.sqlite_inline``), for its writers."""
    url = async_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        # An in-memory database lives in one connection: no pool to size there.
        pool: dict[str, Any] = (
            {}
            if url.database in (None, "", ":memory:")
            else {
                "pool_size": settings.db_pool_size,
                "max_overflow": settings.db_max_overflow,
                "pool_timeout": settings.db_pool_timeout,
            }
        )
        connect_args: dict[str, Any] = {"timeout": 30}
        if inline:
            connect_args["async_creator_fn"] = sqlite_inline.connect
        engine = create_async_engine(url, connect_args=connect_args, **pool)
        _configure_sqlite(engine.sync_engine)
        return engine
    options = _server_options(settings)
    options["connect_args"]["async_creator_fn"] = partial(
        pgconn.connect_async, settings.db_response_timeout
    )
    engine = create_async_engine(url, **options)
    _ping_when_idle(engine.sync_engine)
    return engine


# A connection back in the pool for longer than this is pinged before it is used again.
PING_AFTER_IDLE_S = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """A pooled connection that sat idle is pinged before use, one just returned is not.

    ``pool_pre_ping`` pings on every checkout: a round trip per request, while under load a
    connection is back in use within milliseconds. What an idle connection may have lost (a
    restarted or failed-over database) is found here; a failed ping replaces every connection
    the pool holds, as they went down together. A connection that dies while in busy use fails
    its request with 503 and is replaced.
    """

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _taken(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        # The entry's info is cleared when its connection is replaced: a new one is not pinged.
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise InvalidatePoolError(f"pooled connection lost: {type(exc).__name__}") from exc


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
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout,
        "connect_args": connect_args,
    }


# Execution option of the read engine: SQLite begins its transactions deferred there.
_DEFERRED = "sqlite_deferred"


def _configure_sqlite(engine: Engine) -> None:
    # The driver's own transaction handling defers BEGIN and cannot take the write lock up front;
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
        deferred = conn.get_execution_options().get(_DEFERRED, False)
        conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")


CHECKPOINT_EVERY_S = 1.0


async def _checkpoint_every(path: str, seconds: float) -> None:
    while True:
        await anyio.sleep(seconds)
        try:
            await anyio.to_thread.run_sync(_checkpoint, path)
        except Exception as exc:  # the next one may succeed; the writers do not depend on it
            log.warning("WAL checkpoint failed: %s", type(exc).__name__)


def _checkpoint(path: str) -> None:
    conn = sqlite3.connect(path, timeout=1, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        conn.close()


class WriterFileLock:
    """SQLite's one writer among the worker processes of one database file: an flock on a file
    beside it, taken before BEGIN IMMEDIATE.

    Without it a process that finds SQLite's write lock taken polls for it in SQLite's busy
    handler, sleeping up to 100 ms between tries, while the holder's process takes the lock
    again and again: with two workers that was a p99 of ~1 s at 64 connections. A process
    blocked in flock is woken as soon as the lock is free. SQLite's own lock still keeps
    writers apart; this only orders their waiting.
    """

    def __init__(self, database_path: str) -> None:
        # Never the database file itself: closing any descriptor of it would drop the POSIX
        # locks SQLite holds on it in this process.
        self.path = f"{database_path}-writer.lock"

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        # A descriptor per turn: closing it lets the lock go, and a wait given up on lets go
        # of nothing another turn holds.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            await _wait_for_flock(fd)
        except BaseException:
            os.close(fd)
            raise
        try:
            yield
        finally:
            os.close(fd)


async def _wait_for_flock(fd: int) -> None:
    """Block in a worker thread until ``fd`` holds its flock. If the caller is cancelled
    first, the thread closes ``fd`` when its wait ends: nobody is left holding the lock."""
    mutex = threading.Lock()
    ended = abandoned = False

    def wait() -> None:
        nonlocal ended
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        finally:
            with mutex:
                ended = True
                if abandoned:
                    os.close(fd)

    try:
        await anyio.to_thread.run_sync(wait, abandon_on_cancel=True)
    except BaseException:
        with mutex:
            if ended:
                os.close(fd)
            else:
                abandoned = True
        raise


class Database:
    """The service's way into its database: one engine (on a SQLite file, a second for the
    writers), a write and a read session, and one first-come, first-served gate in front of both.

    Made on the event loop that serves (an asyncio pool belongs to one loop) and closed there.
    """

    def __init__(self, settings: DatabaseSettings, bind: AsyncConnection | None = None) -> None:
        self.engine = make_async_engine(settings) if bind is None else bind.engine
        self.dialect = self.engine.dialect.name
        path = self.engine.url.database
        on_file = self.dialect == "sqlite" and bind is None and path not in (None, "", ":memory:")
        # SQLite's writers take their turn across the processes, one at a time: their statements
        # run on the event loop, not one hop to aiosqlite's thread and back each, which made
        # every turn, and so every process's wait for the next, longer (api.sqlite_inline).
        self._writes = make_async_engine(settings, inline=True) if on_file else self.engine
        # PostgreSQL under READ COMMITTED gives every statement its own snapshot anyway:
        # autocommit saves a read its BEGIN and COMMIT round trips. SQLite keeps a deferred
        # transaction, which under WAL runs beside the one writer.
        self._reads = self.engine.execution_options(
            **(
                {"isolation_level": "AUTOCOMMIT"}
                if self.dialect == "postgresql"
                else {_DEFERRED: True}
            )
        )
        capacity = settings.db_pool_size + settings.db_max_overflow
        if bind is not None:
            # Every session on one connection inside its transaction, each in a savepoint: what
            # a test writes is rolled back with that transaction. One user at a time.
            self.writer = self.reader = async_sessionmaker(
                bind=bind, expire_on_commit=False, join_transaction_mode="create_savepoint"
            )
            capacity = 1
        else:
            self.writer = async_sessionmaker(self._writes, expire_on_commit=False)
            self.reader = async_sessionmaker(self._reads, expire_on_commit=False)
        self._bind = bind
        # The asyncio pool gives a returned connection to whoever asks first, so under load a
        # waiting request can be passed over again and again (p99 in seconds); waiting here
        # serves requests in the order they came, and 503s them after the pool timeout.
        self.gate = anyio.CapacityLimiter(capacity)
        # SQLite has one writer at a time: this process's writers queue here, in order, instead
        # of each holding a connection (and a place at the gate) while SQLite's busy handler
        # polls for the lock. Writers of other processes queue at the WriterFileLock.
        self._sqlite_writer = anyio.Lock() if self.dialect == "sqlite" and bind is None else None
        self._sqlite_file = path if on_file else None
        self._file_lock = WriterFileLock(path) if path and on_file and fcntl is not None else None
        self.timeout = settings.db_pool_timeout

    @classmethod
    @asynccontextmanager
    async def opened(cls, settings: DatabaseSettings) -> AsyncIterator[Database]:
        db = cls(settings)
        checkpoints = db._checkpoint_in_background()
        try:
            yield db
        finally:
            if checkpoints is not None:
                checkpoints.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await checkpoints
            await db.close()

    def _checkpoint_in_background(self) -> asyncio.Task[None] | None:
        """SQLite: the WAL copied into the database file by a task of its own, not by a commit.

        By default the commit that takes the WAL past 1,000 pages does the copy; on a large
        database that commit took about a second (ingest's p99 at 1M reports). Here the
        service's connections never checkpoint, and a task does it every second, beside the
        writers (PASSIVE: it waits for nobody).
        """
        path = self._sqlite_file
        if path is None:
            return None

        def _no_autocheckpoint(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

        for engine in {self.engine, self._writes}:
            event.listen(engine.sync_engine, "connect", _no_autocheckpoint)

        return asyncio.create_task(_checkpoint_every(path, CHECKPOINT_EVERY_S))

    @classmethod
    @asynccontextmanager
    async def rolled_back(cls, settings: DatabaseSettings) -> AsyncIterator[Database]:
        """A database whose every change is rolled back at the end (tests)."""
        # SQLite: the writers' driver, which the tests then drive for reads and writes alike.
        engine = make_async_engine(settings, inline=True)
        try:
            async with engine.connect() as conn:
                outer = await conn.begin()
                try:
                    yield cls(settings, bind=conn)
                finally:
                    await outer.rollback()
        finally:
            await engine.dispose()

    def pools(self) -> list[Pool]:
        """This process's connection pools: on a SQLite file, the readers' and the writers'."""
        return [engine.sync_engine.pool for engine in {self.engine, self._writes}]

    async def close(self) -> None:
        if self._bind is None:
            await self.engine.dispose()
            if self._writes is not self.engine:
                await self._writes.dispose()

    @asynccontextmanager
    async def turn(self, *, write: bool = False) -> AsyncIterator[None]:
        """A place among the users of the database; "busy" (503) after the pool timeout."""
        lock = self._sqlite_writer if write else None
        if lock is not None or not self._free_place():
            await self._wait_for_turn(lock)
        try:
            # Other processes' writers: waited for as long as SQLite's busy timeout would.
            others = self._file_lock if lock is not None else None
            async with others.held() if others is not None else contextlib.nullcontext():
                yield
        finally:
            self.gate.release()
            if lock is not None:
                lock.release()

    def _free_place(self) -> bool:
        """A place taken if one is free and nobody waits (the usual case): without the timeout's
        cancel scope and the checkpoint that ``acquire()`` costs."""
        try:
            self.gate.acquire_nowait()
        except anyio.WouldBlock:
            return False
        return True

    async def _wait_for_turn(self, lock: anyio.Lock | None) -> None:
        try:
            with anyio.fail_after(self.timeout):
                if lock is not None:
                    await lock.acquire()
                try:
                    await self.gate.acquire()
                except BaseException:
                    if lock is not None:
                        lock.release()
                    raise
        except TimeoutError:
            raise PoolTimeoutError(f"no connection free within {self.timeout:g} s") from None

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        # The turn ends with the transaction, before the session closes: SQLAlchemy closes it in
        # a task of its own, and while this one waits for it the event loop runs whatever else
        # is ready (the requests that arrived meanwhile). On SQLite every other writer would wait
        # for that too: it held the write lock 1-2 ms a turn (bench/README.md).
        async with self.writer() as session, self.turn(write=True), session.begin():
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """Reads only: no write lock on SQLite, no transaction round trips on PostgreSQL."""
        async with self.turn(), self.reader() as session:
            yield session

    @asynccontextmanager
    async def read_connection(self) -> AsyncIterator[AsyncConnection]:
        """``read()`` on a bare connection, for a read that needs no ORM: without the session's
        own work (about 5 % of the worklist's server CPU)."""
        async with self.turn():
            if self._bind is not None:
                yield self._bind
                return
            async with self._reads.connect() as conn:
                yield conn

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A bare connection for the health check and metrics: not behind the gate, so a busy
        service still reports that its database answers."""
        if self._bind is not None:
            async with self.turn():
                yield self._bind
            return
        async with self._reads.connect() as conn:
            yield conn


def database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def _write_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with database(request).write() as session:
        yield session


async def _read_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with database(request).read() as session:
        yield session


# The transaction ends when the endpoint returns, before the response is sent (scope
# "function"), so a client never sees a success for data that then failed to commit.
WriteSession = Annotated[AsyncSession, Depends(_write_session, scope="function")]
ReadSession = Annotated[AsyncSession, Depends(_read_session, scope="function")]
