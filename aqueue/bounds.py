"""Every fixed bound aqueue applies, named once: value ranges and cleanup deadlines.

Value ranges (checked before anything is written):

=====================  ==========================================================
``SMALLINT_MIN/MAX``   priority and max_attempts are PostgreSQL smallints
``NAME_MAX``           characters in a kind, queue, tag or schedule name
``MAX_DELAY``          a schedule_in, snooze or backoff delay: a thousand years
                       (PostgreSQL's timestamps end in year 294276)
``CONCURRENCY_MAX``    slots of one queue in one worker process
=====================  ==========================================================

Cleanup deadlines. Shutdown is two-phase (stop claiming, wait ``shutdown_timeout`` for
running jobs, then cancel them), and every write after that is shielded from the
cancellation but bounded by one of these, so a stopping worker never hangs on a
database that does not answer:

======================  =======  ===================================================
bound                   seconds  what it bounds
======================  =======  ===================================================
``FLUSH_TIMEOUT``       10       the completer's final flush of outcomes
``RELEASE_TIMEOUT``     5        releasing a lease (leader, persistent worker)
``NODE_DELETE_TIMEOUT`` 5        deleting the node row on the way out
``LISTEN_CLOSE_TIMEOUT`` 5       closing the LISTEN connection
``DISCONNECT_TIMEOUT``  2        closing a dedicated connection (the heartbeat's)
``APP_CLOSE_TIMEOUT``   10       ``App.__aexit__``: closing the pool and the listener
======================  =======  ===================================================

Worst case for one stopping worker: ``shutdown_timeout`` for running jobs, then
``FLUSH_TIMEOUT`` for their outcomes, then ``shutdown_timeout`` again for
``after_process`` hooks still running (they get the same grace as jobs), then the
lease releases (in parallel) and the node row: ``2 * shutdown_timeout + 20`` seconds.
Jobs whose outcome could not be written in time stay ``running`` and are rescued as
orphans once the node row expires, so a bound cut short loses nothing.
"""

from __future__ import annotations

__all__ = [
    "APP_CLOSE_TIMEOUT",
    "CONCURRENCY_MAX",
    "DISCONNECT_TIMEOUT",
    "FLUSH_TIMEOUT",
    "LISTEN_CLOSE_TIMEOUT",
    "MAX_DELAY",
    "NAME_MAX",
    "NODE_DELETE_TIMEOUT",
    "RELEASE_TIMEOUT",
    "SMALLINT_MAX",
    "SMALLINT_MIN",
]

SMALLINT_MIN, SMALLINT_MAX = -32768, 32767
NAME_MAX = 200
MAX_DELAY = 1000 * 365.25 * 86400.0
CONCURRENCY_MAX = 10_000

FLUSH_TIMEOUT = 10.0
RELEASE_TIMEOUT = 5.0
NODE_DELETE_TIMEOUT = 5.0
LISTEN_CLOSE_TIMEOUT = 5.0
DISCONNECT_TIMEOUT = 2.0
APP_CLOSE_TIMEOUT = 10.0
