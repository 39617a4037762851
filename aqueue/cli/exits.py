"""Exit statuses of the ``aqueue`` command, and how an error becomes one.

    0  done
    1  error: bad input, unreachable database, anything aqueue raises
    2  usage (argparse)
    3  not found: no such job, queue, kind or workflow (admin commands)
    4  refused because of a job's or queue's state (admin commands)
    5  timed out (``queues drain --timeout``)
  130  interrupted by Ctrl-C before a command could shut down on its own

Every error is one line on stderr, ``aqueue: error: <message>``, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Final

from ..errors import JobNotFound, UnknownJobKind, UnknownQueue, WorkflowNotFound

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "NOT_FOUND",
    "fail",
    "first_leaf",
]

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2  # argparse's own; named here so the table above is complete
EXIT_NOT_FOUND: Final = 3
EXIT_REFUSED: Final = 4
EXIT_TIMEOUT: Final = 5
EXIT_INTERRUPTED: Final = 130  # the shell's 128 + SIGINT

# Exactly the errors that mean "the thing you named does not exist". Not LookupError:
# a KeyError or IndexError from a bug must stay exit 1, not pass for a typo in an id.
NOT_FOUND: Final = (UnknownQueue, UnknownJobKind, JobNotFound, WorkflowNotFound)


def fail(exc: BaseException, status: int) -> int:
    """Print ``exc`` as the one error line and return ``status``."""
    print(f"aqueue: error: {exc}", file=sys.stderr)
    return status


def first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception in ``group`` that is not itself a group."""
    first = group.exceptions[0]
    return first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
