"""Cron schedules and periodic entries: what ``app.periodic(...)`` registers.

A *slot* is one time a cron expression fires, in the schedule's time zone. The leader's
duty that enqueues them lives in ``worker/scheduler.py``; this module only describes
them and is the only user of croniter.

Daylight saving time: when clocks go back, a wall-clock time happens twice. A schedule
with fixed hours (``30 2 * * *``) runs at the first one only, as cron does; one that runs
every hour or more often (``*/15 * * * *``) runs in both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .definition import JobRequest
from .errors import ConfigurationError
from .validate import validate_registered_name


class Buildable(Protocol):
    """A job, or a job with options: what ``app.periodic`` schedules."""

    def build(self, *args: Any, **kwargs: Any) -> JobRequest: ...


__all__ = ["CronSchedule", "PeriodicEntry"]


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

    @classmethod
    def create(
        cls,
        job: Buildable,
        *,
        cron: str,
        kwargs: Mapping[str, Any] | None,
        name: str | None,
        run_on_start: bool,
        timezone: str,
    ) -> PeriodicEntry:
        """Checks what ``app.periodic`` was given; ``ConfigurationError`` naming the fault."""
        schedule = CronSchedule(cron, timezone)
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise ConfigurationError(f"periodic: kwargs must be a mapping, got {kwargs!r}")
        request = job.build(**dict(kwargs or {}))
        if request.options.conn is not None:
            raise ConfigurationError("periodic: a job with conn= cannot be scheduled")
        if request.options.scheduled_at is not None:
            raise ConfigurationError("periodic: the cron expression sets the time; no scheduled_at")
        entry_name = request.kind if name is None else name
        validate_registered_name("periodic name", entry_name)
        if not isinstance(run_on_start, bool):
            raise ConfigurationError(f"periodic: run_on_start must be a bool, got {run_on_start!r}")
        return cls(entry_name, schedule, request, run_on_start)

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
