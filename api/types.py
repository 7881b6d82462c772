"""Input types shared by every schema: bounded text and timestamps a database can hold."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, StringConstraints

# Free text (notes) refuses control characters other than tab and line breaks (PostgreSQL text
# cannot hold NUL; the others forge log lines and terminal output) and the bidirectional
# embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) that make text read in an
# order other than the one stored ("Trojan Source"). They are refused (422), never stripped:
# what a patient sent is stored as sent, or not at all.
NO_NUL = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F\u202A-\u202E\u2066-\u2069]*$"
# Names and identifiers: the same, and no tab or line break either.
PLAIN_NAME = r"^[^\x00-\x1F\x7F-\x9F\u2028\u2029\u202A-\u202E\u2066-\u2069]*$"
TEAM_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def text(max_length: int, min_length: int = 0) -> Any:
    return Annotated[
        str, StringConstraints(min_length=min_length, max_length=max_length, pattern=NO_NUL)
    ]


def check_timestamp(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise ValueError("is outside the years 1900-8999")
    return value


def _date_in_range(value: date) -> date:
    if not EARLIEST.date() <= value < LATEST.date():
        raise ValueError("is outside the years 1900-8999")
    return value


_ISO_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_datetime_text(value: Any) -> Any:
    # Pydantic would read 1764400000 or "0.5" as seconds since 1970: only ISO 8601 text is a time.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATETIME.match(value):
        raise ValueError("must be an ISO 8601 date and time, e.g. 2026-11-27T08:05:00+01:00")
    return value


def _iso_date_text(value: Any) -> Any:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise ValueError("must be an ISO 8601 date, e.g. 2026-11-27")
    return value


Timestamp = Annotated[
    AwareDatetime, BeforeValidator(_iso_datetime_text), AfterValidator(check_timestamp)
]
Day = Annotated[date, BeforeValidator(_iso_date_text), AfterValidator(_date_in_range)]
