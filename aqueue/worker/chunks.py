"""Chunk jobs in the worker: claimed items grouped into lists, and when a list goes.

Items of a chunk kind are claimed through the normal claim path, the plain one or the
limited one, like any job. That is the whole of how chunks respect flow control: each
item is a ``running`` row from its claim until its outcome is written, so a global limit,
a partition limit and a rate count items exactly as they count jobs, with no second
bookkeeping that could drift from the first. The alternative, claiming a chunk as one
unit, would need its own claim statement for every kind of limit and would hold places
for items not yet found.

After the claim, the producer does not hand such rows to its slots one by one: they go to
an accumulator, one list per (kind, partition key), so a chunk never mixes partition keys
(a partition limit is counted per key, and a user partitioning by tenant expects a call
per tenant). A list is dispatched, as one unit of work for one slot, when

- it holds ``size`` items (or, for a key of a queue with ``Partition(limit=n)``, ``n``
  items: no other item of that key can be claimed before these end);
- its oldest item has waited ``timeout`` seconds since it was claimed; or
- the producer has no room to claim more (its local concurrency, or what a global limit
  leaves to this node, is used up). Without this rule a queue whose concurrency is below
  ``size`` would hold every place with waiting items and wait for ``timeout`` on each
  round; with it, the chunk is simply capped by the concurrency.

Local concurrency counts items, not calls: an item waiting here holds its place like one
running, so a chunk queue wants ``concurrency >= size`` (the howto says so). For the same
reason a producer holding chunk items claims nothing ahead (no lookahead): items claimed
beyond the concurrency would join the next list, and the slot running it would run more
items than the concurrency allows. The rows stay in the producer's ``waiting`` set while
they wait: ``app.cancel`` of one takes it out of its list and cancels it at once (not
when the list goes), and shutdown hands them back ``available`` with the attempt
refunded, exactly like jobs claimed ahead.

While a chunk runs, each item is registered as a ``ChunkItem``: a cancel request marks
the item (it ends ``cancelled`` when the chunk's outcomes are written) without
interrupting the call, which the other items still depend on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .executor import RunningJob

if TYPE_CHECKING:
    from ..db.database import Row
    from ..definition import JobDefinition

__all__ = ["ChunkAccumulator", "ChunkBatch", "ChunkItem"]


class ChunkItem(RunningJob):
    """One item of a running chunk: cancelling it only marks it, the call goes on."""

    __slots__ = ()

    def request_cancel(self) -> None:
        self.cancel_requested = True


class ChunkBatch:
    """Items of one (kind, partition key), dispatched together to one slot."""

    __slots__ = ("definition", "rows")

    def __init__(self, definition: JobDefinition[Any, Any], rows: list[Row]) -> None:
        self.definition = definition
        self.rows = rows


class _Group:
    __slots__ = ("definition", "due_at", "rows")

    def __init__(self, definition: JobDefinition[Any, Any], due_at: float) -> None:
        self.definition = definition
        self.rows: list[Row] = []
        self.due_at = due_at


class ChunkAccumulator:
    """A producer's claimed-but-undispatched chunk items (see the module docstring).

    ``definition_of(kind)`` is the chunk definition of a kind, or None for other kinds.
    Times are the event loop's clock (``anyio.current_time()``), passed in by the caller.
    """

    def __init__(self, definition_of: Callable[[str], JobDefinition[Any, Any] | None]) -> None:
        self._definition_of = definition_of
        self._groups: dict[tuple[str, str | None], _Group] = {}
        self._ready: list[ChunkBatch] = []
        self._count = 0

    def __len__(self) -> int:
        """Items held here (grouped, or dispatched and not yet taken by ``ready``)."""
        return self._count

    def add(self, row: Row, now: float, partition_limit: int | None = None) -> bool:
        """Take ``row`` if it is an item of a chunk kind; False leaves it to the caller.

        ``partition_limit``: the queue's, when in force. A list of one key holding that
        many items is complete: no other item of the key can be claimed before these end.
        """
        definition = self._definition_of(row["kind"])
        if definition is None:
            return False
        chunk = definition.chunk
        assert chunk is not None  # definition_of returns chunk definitions only
        # By the definition's kind, so items enqueued under an alias join the same lists.
        key = (definition.kind, row["partition_key"])
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(definition, now + chunk.timeout)
        group.rows.append(row)
        self._count += 1
        size = chunk.size
        if partition_limit is not None and key[1] is not None:
            size = min(size, partition_limit)
        if len(group.rows) >= size:
            del self._groups[key]
            self._ready.append(ChunkBatch(definition, group.rows))
        return True

    def ready(self, now: float, *, everything: bool = False) -> list[ChunkBatch]:
        """The chunks to dispatch now: full ones, those whose oldest item has waited its
        timeout, and with ``everything`` (no room to claim more) every list there is."""
        for key, group in list(self._groups.items()):
            if everything or group.due_at <= now:
                del self._groups[key]
                self._ready.append(ChunkBatch(group.definition, group.rows))
        batches, self._ready = self._ready, []
        self._count -= sum(len(batch.rows) for batch in batches)
        return batches

    def remove(self, job_id: int) -> Row | None:
        """Take the item ``job_id`` out of its list (cancelled while it gathers); None when
        it is in no list (dispatched already, or not a chunk item)."""
        for key, group in self._groups.items():
            for index, row in enumerate(group.rows):
                if row["id"] == job_id:
                    del group.rows[index]
                    self._count -= 1
                    if not group.rows:
                        del self._groups[key]
                    return row
        return None

    def next_due(self) -> float:
        """When the oldest list's timeout is up (``inf`` when nothing waits)."""
        if self._ready:
            return -math.inf
        return min((group.due_at for group in self._groups.values()), default=math.inf)

    def drain(self) -> Iterator[Row]:
        """Every item still held (shutdown hands them back)."""
        for batch in self.ready(math.inf, everything=True):
            yield from batch.rows
