"""The worklist's first pages, kept by each process and checked against the latest alert event.

Every change to an alert writes an alert event in the same transaction (raised, re-triggered,
severity raised, acknowledged, resolved, escalated, overdue: api/alerts/events.py), and event
ids follow commit order. So the largest event id names the state of every alert: a page read
while it was N is still the page while it is N, whichever process committed the next change.
A request for a first page then asks the database for that id alone (the last entry of the
primary key) instead of having it write the page's documents: at 51 alerts those cost about
0.6 ms of PostgreSQL's CPU, the id about a tenth of that.

A page is stored under the id read before the page was, so it is never older than its label:
a change committed between the two reads makes the next request a miss. A write to alerts
without an event would leave pages stale; tests/alerts/test_worklist_pages.py changes the
alerts every way the service does and reads the first page after each.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from sqlalchemy import func, select

from api.alerts.models import AlertEvent

# None before the first event.
latest_event = select(func.max(AlertEvent.id))


class PageCache:
    """Response bodies by request, each with the latest event id it was read under; the
    least recently used go first."""

    def __init__(self, size: int = 256) -> None:
        self._pages: OrderedDict[Hashable, tuple[int | None, bytes]] = OrderedDict()
        self._size = size

    def get(self, key: Hashable, version: int | None) -> bytes | None:
        entry = self._pages.get(key)
        if entry is None or entry[0] != version:
            return None
        self._pages.move_to_end(key)
        return entry[1]

    def put(self, key: Hashable, version: int | None, body: bytes) -> None:
        self._pages[key] = (version, body)
        self._pages.move_to_end(key)
        if len(self._pages) > self._size:
            self._pages.popitem(last=False)
