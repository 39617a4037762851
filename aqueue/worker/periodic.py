"""Periodic jobs: cron schedules enqueued by the leader, once per (schedule, slot).

A *slot* is one time a cron expression fires, in the schedule's time zone. Only the leader
enqueues (see ``leader.py``); each enqueue inserts a ``periodic_runs`` row keyed by
(name, slot) in the same transaction as the job, so a slot is enqueued once even if a
leader change overlaps it or two leaders' clocks disagree.

When a leader takes office it catches up: a schedule whose latest slot passed while no
leader existed runs that slot once (not every missed one). A schedule never run before
starts with its next slot, so adding ``cron="0 9 * * *"`` at 10:00 does not run at once.
``run_on_start=True`` also enqueues one occurrence each time a node takes office as
leader (once per leadership term).

Daylight saving time: when clocks go back, a wall-clock time happens twice. A schedule
with fixed hours (``30 2 * * *``) runs at the first one only, as cron does; one that runs
every hour or more often (``*/15 * * * *``) runs in both.

This module is the only user of croniter.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
from croniter import croniter

from ..definition import JobRequest
from ..errors import ConfigurationError
from .lease import Tenure

if TYPE_CHECKING:
    from ..app import App

__all__ = ["CronSchedule", "Periodic", "PeriodicEntry"]

#: The leader re-reads the clock at least this often (a clock jump, a suspended VM).
MAX_SLEEP = 30.0


class CronSchedule:
    """A validated cron expression (5 fields, or croniter's 6 with seconds last, or
    ``@daily``-style nicknames) evaluated in an IANA time zone."""

    def __init__(self, expression: str, timezone: str = "UTC") -> None:
        if not isinstance(expression, str) or not croniter.is_valid(expression):
            raise ConfigurationError(
                f"cron: {expression!r} is not a valid cron expression "
                "(5 fields: minute hour day-of-month month day-of-week, e.g. '0 9 * * MON')"
            )
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ConfigurationError(
                f"timezone: {timezone!r} is not a known IANA time zone (e.g. 'Europe/Paris')"
            ) from None
        self.expression = expression
        self.timezone = timezone
        fields = expression.split()
        self._fixed_hours = expression.startswith("@") or (
            len(fields) >= 2 and "*" not in fields[1] and "/" not in fields[1]
        )

    def _repeated(self, slot: datetime) -> bool:
        """A fixed-hour slot in the second pass of a wall-clock hour (clocks went back)."""
        if not self._fixed_hours:
            return False
        local = slot.astimezone(self.zone)
        return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()

    def next_after(self, moment: datetime) -> datetime:
        """The first slot strictly after ``moment`` (aware), in UTC."""
        slot = croniter(self.expression, moment.astimezone(self.zone)).get_next(datetime)
        while self._repeated(slot):
            slot = croniter(self.expression, slot).get_next(datetime)
        return slot.astimezone(UTC)

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last slot at or before ``moment`` (aware), in UTC."""
        # get_prev is strictly before its start, at one-second resolution.
        start = moment.astimezone(self.zone).replace(microsecond=0) + timedelta(seconds=1)
        slot = croniter(self.expression, start).get_prev(datetime)
        while self._repeated(slot):
            slot = croniter(self.expression, slot).get_prev(datetime)
        return slot.astimezone(UTC)

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, {self.timezone!r})"


@dataclass(frozen=True)
class PeriodicEntry:
    name: str
    schedule: CronSchedule
    request: JobRequest
    run_on_start: bool

    def describe(self) -> dict[str, Any]:
        """What nodes compare to detect drift."""
        options = self.request.options
        return {
            "kind": self.request.kind,
            "cron": self.schedule.expression,
            "timezone": self.schedule.timezone,
            "args": self.request.args_json,
            "run_on_start": self.run_on_start,
            "options": {
                "queue": options.queue,
                "priority": options.priority,
                "max_attempts": options.max_attempts,
                "timeout": options.timeout,
                "schedule_in": options.schedule_in,
                "tags": list(options.tags) if options.tags is not None else None,
                "meta": options.meta_json() if options.meta is not None else None,
                "retry": options.retry.to_json() if options.retry is not None else None,
            },
        }


class Periodic:
    """The leader's duty that enqueues periodic jobs; ``run`` lasts one tenure."""

    def __init__(self, app: App, entries: Mapping[str, PeriodicEntry]) -> None:
        self._app = app
        self._entries = dict(entries)
        self._logger: logging.Logger = app.logger
        self.enqueued = 0
        self._started_term: int | None = None

    async def run(self, tenure: Tenure) -> None:
        if not self._entries:
            return
        due = await self.take_office(tenure)
        while True:
            now = datetime.now(UTC)
            for name, slot in list(due.items()):
                if slot <= now:
                    entry = self._entries[name]
                    await self._enqueue(entry, slot)
                    # Slots passed while this one was being enqueued are skipped: one run.
                    due[name] = entry.schedule.next_after(max(slot, datetime.now(UTC)))
            wait = (min(due.values()) - datetime.now(UTC)).total_seconds()
            await anyio.sleep(min(max(wait, 0.0), MAX_SLEEP))

    async def take_office(self, tenure: Tenure) -> dict[str, datetime]:
        """Start-of-term work: the run_on_start occurrences (once per term, even if this
        duty restarts within it) and the catch-up; returns each schedule's next slot."""
        now = datetime.now(UTC)
        last = await self._app.db.last_periodic_slots(list(self._entries))
        if self._started_term != tenure.term:
            self._started_term = tenure.term
            for entry in self._entries.values():
                if entry.run_on_start:
                    await self._enqueue(entry, None)
        due: dict[str, datetime] = {}
        for name, entry in self._entries.items():
            latest = entry.schedule.latest_at_or_before(now)
            previous = last.get(name)
            if previous is not None and previous < latest:
                await self._enqueue(entry, latest, catch_up=True)
            due[name] = entry.schedule.next_after(max(latest, previous or latest))
        return due

    async def _enqueue(
        self, entry: PeriodicEntry, slot: datetime | None, *, catch_up: bool = False
    ) -> None:
        try:
            if slot is None:
                job = (await self._app.enqueue_many([entry.request]))[0]
            else:
                async with self._app.db.transaction() as conn:
                    if not await self._app.db.claim_periodic_slot(entry.name, slot, conn):
                        return  # another leader enqueued this slot already
                    job = (await self._app.enqueue_many([entry.request], conn=conn))[0]
                    await self._app.db.set_periodic_job(entry.name, slot, job.id, conn)
        except Exception as exc:  # the next slot tries again; a failing one is not retried
            self._logger.error(
                "aqueue: periodic %r: could not enqueue slot %s: %s", entry.name, slot, exc
            )
            return
        self.enqueued += 1
        self._logger.info(
            "aqueue: periodic %r: enqueued job %d (%s)",
            entry.name,
            job.id,
            "on start" if slot is None else f"{'missed ' if catch_up else ''}slot {slot}",
        )
