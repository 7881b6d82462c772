"""Keyset pagination: an opaque cursor holding the sort key of the last item served."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, Field

from api.errors import Invalid
from api.types import check_timestamp

T = TypeVar("T")
MAX_LIMIT = 200


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end"
    )


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")]
Cursor = Annotated[str | None, Query(max_length=512, description="From next_cursor")]


def encode_cursor(values: list[Any]) -> str:
    raw = json.dumps(values, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, *parsers: Callable[[Any], Any]) -> list[Any] | None:
    """The cursor's values, each passed through its parser; 422 for anything not ours."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
        if not isinstance(values, list) or len(values) != len(parsers):
            raise ValueError("shape")
        return [parse(v) for parse, v in zip(parsers, values, strict=True)]
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, OverflowError) as exc:
        raise Invalid([{"loc": ["query", "cursor"], "msg": "not a cursor from this list"}]) from exc


def parse_time(value: Any) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("naive")
    return check_timestamp(parsed)


def parse_int_id(value: Any) -> int:
    """An integer id in a cursor (events, delivery attempts); bools and negatives are refused."""
    if type(value) is not int or value < 0:
        raise ValueError("not an id")
    return value


def page_of(items: list[T], limit: int, key: Any) -> Page[T]:
    """``items`` was fetched with limit + 1 rows: the extra one says whether there is more."""
    more = len(items) > limit
    items = items[:limit]
    return Page(items=items, next_cursor=encode_cursor(key(items[-1])) if more else None)


def json_page(documents: Sequence[str], limit: int, key: Callable[[str], list[Any]]) -> bytes:
    """A Page of items that are JSON documents already, ``limit + 1`` of them fetched (the extra
    one says whether there is more), as the response body: the documents are passed on, not
    parsed."""
    more = len(documents) > limit
    served = documents[:limit]
    cursor = json.dumps(encode_cursor(key(served[-1]))) if more else "null"
    return f'{{"items":[{",".join(served)}],"next_cursor":{cursor}}}'.encode()
