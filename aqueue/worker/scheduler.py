"""The leader's duty that enqueues periodic jobs, once per (schedule, slot).

Only the leader enqueues (see ``leader.py``); each enqueue inserts a ``periodic_runs`` row
keyed by (name, slot) in the same transaction as the job, so a slot is enqueued once
even if a leader change overlaps it or two leaders' clocks disagree.

When a leader takes office it catches up: a schedule whose latest slot passed while no
leader existed runs that slot once (not every missed one). A schedule never run before
starts with its next slot, so adding ``cron="0 9 * * *"`` at 10:00 does not run at once.
``run_on_start=True`` also enqueues one occurrence each time a node takes office as
leader (once per leadership term). Schedules themselves are in ``aqueue/schedule.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import anyio

from ..schedule import PeriodicEntry
from .lease import Tenure
from .runtime import Runtime

__all__ = ["PeriodicScheduler"]

#: The leader re-reads the clock at least this often (a clock jump, a suspended VM).
MAX_SLEEP = 30.0


class PeriodicScheduler:
    """The leader's duty that enqueues periodic jobs; ``run`` lasts one tenure."""

    def __init__(self, runtime: Runtime, entries: Mapping[str, PeriodicEntry]) -> None:
        self._db = runtime.db
        self._enqueuer = runtime.enqueuer
        self._entries = dict(entries)
        self._logger = runtime.logger
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
        last = await self._db.last_periodic_slots(list(self._entries))
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
            # On the worker pool, like every leader duty: jobs holding the App's pool
            # must not delay a slot.
            async with self._db.transaction(worker=True) as conn:
                if slot is not None and not await self._db.claim_periodic_slot(
                    entry.name, slot, conn
                ):
                    return  # another leader enqueued this slot already
                job = (await self._enqueuer.insert([entry.request], conn))[0]
                if slot is not None:
                    await self._db.set_periodic_job(entry.name, slot, job.id, conn)
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
