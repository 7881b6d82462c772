"""Group commit: the reports that arrive while one transaction is being written share the next.

Each worker process writes one group at a time. A report that finds the writer idle starts a
group at once (no timer); the ones that arrive meanwhile wait and form the next group, taken
from the queue once the writer's turn at the database has come (on SQLite, after the other
processes' writers). So the busier the service, the more reports share a transaction and its
statements: one lock statement for all their patients, one read of their history, one insert
per table, one commit (``service.write_group``). Every report of a group is answered after its
group committed.

Groups of different processes run side by side. A group does not wait for a patient another
group holds: it writes the rest, and that patient's reports go first into the next group,
which waits for the patient if it must (so each report is passed over once at most, and a
patient's reports keep their order).

A report's own problem (unknown patient, conflict, bad data found with the patient row) is
its answer alone. If the transaction itself fails (a lock timeout, a constraint, bad data the
database refuses), nobody can tell which report caused it: each report of the group is then
written again on its own, so only the one at fault fails. A lost connection fails the group.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from api.db import Database
from api.errors import Unavailable
from api.metrics import count_stored
from api.reports import service
from api.reports.schemas import BatchResult, ReportCreate, ReportCreated
from api.security import Principal

# Reports per group: a batch counts its items. Bounds how long a group holds its patients.
MAX_GROUP_REPORTS = 100


@dataclass(eq=False, slots=True)
class _Waiting:
    job: service.Job
    done: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    taken: bool = False
    passed_over: bool = False  # once: its group found the patient held by another

    def settle(self, answer: Any) -> None:
        if self.done.done():
            return
        if isinstance(answer, BaseException):
            self.done.set_exception(answer)
        else:
            self.done.set_result(answer)


class GroupWriter:
    """This process's report writer (one per app, made on the serving event loop)."""

    def __init__(self, db: Database, max_reports: int = MAX_GROUP_REPORTS) -> None:
        self.db = db
        self.max_reports = max_reports
        self._queue: deque[_Waiting] = deque()
        self._task: asyncio.Task[None] | None = None
        self._group: list[_Waiting] = []  # the group being written

    async def submit(
        self, patient_id: uuid.UUID, principal: Principal, body: ReportCreate
    ) -> tuple[ReportCreated, bool]:
        answer: service.Created | tuple[ReportCreated, bool] = await self._run(
            service.Single(patient_id, principal, body)
        )
        # Built here, by the request, not by the writer: it has gone on to the next group.
        return answer.response() if isinstance(answer, service.Created) else answer

    async def submit_batch(
        self, patient_id: uuid.UUID, principal: Principal, items: list[dict[str, object]]
    ) -> list[BatchResult]:
        answer: list[BatchResult] = await self._run(service.Batch(patient_id, principal, items))
        return answer

    @property
    def queued(self) -> int:
        """Requests waiting for the next group."""
        return len(self._queue)

    @property
    def writing(self) -> bool:
        return self._task is not None

    async def close(self) -> None:
        """Write what is queued, then stop."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self, job: service.Job) -> Any:
        waiting = _Waiting(job)
        self._queue.append(waiting)
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        try:
            # Waiting for a group counts as waiting for the database: "busy" after the pool
            # timeout, and nothing of the report is stored. Once in a group, the database's
            # own timeouts bound the wait.
            return await asyncio.wait_for(asyncio.shield(waiting.done), self.db.timeout)
        except TimeoutError:
            if waiting.taken:
                return await waiting.done
            self._queue.remove(waiting)
            raise PoolTimeoutError(f"no connection free within {self.db.timeout:g} s") from None
        except asyncio.CancelledError:
            if waiting.taken:
                # The client went away; the group still stores its report (a retry replays it).
                waiting.done.add_done_callback(_consume)
            else:
                self._queue.remove(waiting)
            raise

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._write()
        except BaseException:
            for waiting in self._group:
                waiting.settle(Unavailable("The report writer stopped; retry shortly"))
            raise
        finally:
            self._group = []
            self._task = None

    def _next_group(self) -> list[_Waiting]:
        group: list[_Waiting] = []
        size = 0
        while self._queue and (not group or size + self._queue[0].job.size <= self.max_reports):
            waiting = self._queue.popleft()
            waiting.taken = True
            group.append(waiting)
            size += waiting.job.size
        return group

    async def _write(self, group: list[_Waiting] | None = None) -> None:
        """Write ``group``, or what is queued once this writer's turn has come."""
        try:
            async with self.db.write() as session:
                # Formed once the turn is ours, not before: on SQLite the reports that came
                # while the other processes wrote join this group instead of waiting for the next.
                # A report written again on its own keeps _group its whole group, all of which
                # _drain answers if the writer is stopped meanwhile.
                if group is None:
                    group = self._group = self._next_group()
                if not group:  # those queued gave up while the turn was awaited
                    return
                # SQLite has no row locks to pass over: skipping there only defers unknown patients.
                skip_locked = self.db.dialect == "postgresql" and not any(
                    w.passed_over for w in group
                )
                answers, stored = await service.write_group(
                    session, [w.job for w in group], skip_locked
                )
        except Exception as exc:
            if group is None:
                if isinstance(exc, PoolTimeoutError):
                    # No turn came: those queued are "busy" by their own clocks, not by the
                    # writer's, which began after some of them and before others.
                    return
                group = self._group = self._next_group()
            if len(group) <= 1 or _connection_lost(exc):
                for waiting in group:
                    waiting.settle(exc)
                return
            # Which report the database refused cannot be told: each goes again on its own.
            for waiting in group:
                await self._write([waiting])
            return
        count_stored(len(stored), (alert for o in stored for alert in o.alerts))
        again = []
        for waiting, answer in zip(group, answers, strict=True):
            if answer is service.DEFERRED:
                waiting.taken, waiting.passed_over = False, True
                again.append(waiting)
            else:
                waiting.settle(answer)
        self._queue.extendleft(reversed(again))


def _connection_lost(exc: Exception) -> bool:
    return isinstance(exc, PoolTimeoutError | OSError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def _consume(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()
