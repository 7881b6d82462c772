"""Input types shared by every schema: bounded text and timestamps a database can hold."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, StringConstraints

# PostgreSQL text cannot hold NUL; an input with one is refused (422), not a 500 at insert.
NO_NUL = r"^[^\x00]*$"
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


Timestamp = Annotated[AwareDatetime, AfterValidator(check_timestamp)]
Day = Annotated[date, AfterValidator(_date_in_range)]
