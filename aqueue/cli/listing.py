"""``aqueue jobs list``'s options: states (``failed`` = retryable and discarded), ``--since``
and the keyset cursor, checked here and read through ``db.listing``."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta

from ..admin import LIST_LIMIT_MAX
from ..app import App
from ..db.listing import list_jobs_page
from ..errors import InvalidOption
from ..jobs import Job, JobState
from ..validate import validate_name

__all__ = ["jobs_page", "parse_states", "since_value"]

#: Named groups of states, for people looking for trouble.
STATE_GROUPS = {"failed": (JobState.RETRYABLE, JobState.DISCARDED)}
_AGO_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since_value(value: str) -> datetime:
    """``--since``: ``30s``/``10m``/``2h``/``7d`` ago, or an ISO 8601 time (UTC if naive)."""
    match = _AGO_RE.match(value.strip())
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        return datetime.now(UTC) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration ago (30s, 10m, 2h, 7d) or an ISO 8601 time, got {value!r}"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_states(value: str | None) -> list[str] | None:
    """``--state``: one state, several separated by commas, or a group (``failed``)."""
    if value is None:
        return None
    states: list[str] = []
    for name in (part.strip() for part in value.split(",")):
        if name in STATE_GROUPS:
            states.extend(s.value for s in STATE_GROUPS[name])
            continue
        try:
            states.append(JobState(name).value)
        except ValueError:
            known = ", ".join([*(s.value for s in JobState), *STATE_GROUPS])
            raise InvalidOption("state", f"{name!r} is not one of {known}") from None
    return states


async def jobs_page(app: App, args: argparse.Namespace) -> tuple[list[Job], int | None]:
    states = parse_states(args.state)
    for field in ("queue", "kind"):
        if getattr(args, field) is not None:
            validate_name(field, getattr(args, field))
    if not 1 <= args.limit <= LIST_LIMIT_MAX:
        raise InvalidOption("limit", f"must be an integer from 1 to {LIST_LIMIT_MAX}")
    if args.cursor is not None and args.cursor < 0:
        raise InvalidOption("cursor", "must be a job id (0 or more)")
    return await list_jobs_page(
        app.db,
        states=states,
        queue=args.queue,
        kind=args.kind,
        since=args.since,
        cursor=args.cursor,
        newest=args.newest,
        limit=args.limit,
    )
