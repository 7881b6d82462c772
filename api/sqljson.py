"""A row as the API's JSON, written by the database: for pages read often, where converting each
value in Python and serialising it again would cost more than the query.

The document is what pydantic writes for the same values (times ISO 8601 in UTC with ``Z`` and
microseconds only when there are some, UUIDs with dashes, the JSON column as JSON), on
PostgreSQL and on SQLite alike; only whitespace and number spelling inside the JSON column may
differ, as the database keeps it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import JSON, ColumnElement, Text, Uuid, literal_column
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from api.db import UTCDateTime


class _Text(FunctionElement[str]):
    type = Text()
    inherit_cache = True


class _json_object(_Text):
    inherit_cache = True


class _json_time(_Text):
    inherit_cache = True


class _json_uuid(_Text):
    inherit_cache = True


class _json_value(_Text):
    inherit_cache = True


def _argument(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> str:
    (argument,) = element.clauses
    return compiler.process(argument, **kw)


@compiles(_json_object, "postgresql")
def _object_pg(element: _json_object, compiler: SQLCompiler, **kw: Any) -> str:
    # Text, not json: the driver would otherwise parse what is only passed on.
    return f"json_build_object({compiler.process(element.clauses, **kw)})::text"


@compiles(_json_object, "sqlite")
def _object_sqlite(element: _json_object, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_object({compiler.process(element.clauses, **kw)})"


@compiles(_json_time, "postgresql")
def _time_pg(element: _json_time, compiler: SQLCompiler, **kw: Any) -> str:
    value = _argument(element, compiler, **kw)
    # One to_char and a replace cost half of testing the microseconds first.
    return (
        f"replace(to_char(({value} AT TIME ZONE 'UTC'), 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
        " '.000000Z', 'Z')"
    )


@compiles(_json_time, "sqlite")
def _time_sqlite(element: _json_time, compiler: SQLCompiler, **kw: Any) -> str:
    # Stored as naive UTC text, 'YYYY-MM-DD HH:MM:SS.ffffff'.
    value = _argument(element, compiler, **kw)
    return f"replace(replace({value}, '.000000', ''), ' ', 'T') || 'Z'"


@compiles(_json_uuid, "postgresql")
def _uuid_pg(element: _json_uuid, compiler: SQLCompiler, **kw: Any) -> str:
    return _argument(element, compiler, **kw)


@compiles(_json_uuid, "sqlite")
def _uuid_sqlite(element: _json_uuid, compiler: SQLCompiler, **kw: Any) -> str:
    # Stored as 32 hex digits.
    value = _argument(element, compiler, **kw)
    parts = [f"substr({value}, {start}, {length})" for start, length in _UUID_GROUPS]
    return " || '-' || ".join(parts)


_UUID_GROUPS = ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))


@compiles(_json_value, "postgresql")
def _value_pg(element: _json_value, compiler: SQLCompiler, **kw: Any) -> str:
    return _argument(element, compiler, **kw)


@compiles(_json_value, "sqlite")
def _value_sqlite(element: _json_value, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps a JSON column as text: json() embeds it as JSON, not as a string.
    return f"json({_argument(element, compiler, **kw)})"


def json_document(columns: Iterable[ColumnElement[Any]]) -> ColumnElement[str]:
    """One JSON object per row, keyed by the columns' names, in their order."""
    pairs: list[Any] = []
    for column in columns:
        kind = column.type
        if isinstance(kind, UTCDateTime):
            value: Any = _json_time(column)
        elif isinstance(kind, Uuid):
            value = _json_uuid(column)
        elif isinstance(kind, JSON) or isinstance(getattr(kind, "impl", None), JSON):
            value = _json_value(column)
        else:
            value = column
        # The keys are our column names: written into the statement, not bound.
        pairs += [literal_column(f"'{column.key}'"), value]
    return _json_object(*pairs)
