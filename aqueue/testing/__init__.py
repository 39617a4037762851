"""Helpers for testing code that uses aqueue, and a pytest plugin.

The plugin (``aqueue.testing.plugin``, loaded automatically when aqueue is installed)
provides two fixtures: ``aqueue_database_url``, a PostgreSQL URL for the session
(``AQUEUE_TEST_DATABASE_URL`` when set, else a throwaway server), and ``aqueue_schema``,
a fresh schema name per test, dropped after it.

The helpers, each documented with an example:

- ``isolated(app)``: the App in a fresh schema, migrated, dropped afterwards;
- ``assert_enqueued`` / ``refute_enqueued`` / ``all_enqueued``: what was enqueued, with a
  listing of what *was* enqueued when an assertion fails;
- ``perform_job(job, **kwargs)``: one attempt through the real executor, no database row;
- ``drain_queue(app, queue)``: run a queue's jobs until none is left to run;
- ``run_until_idle(app)``: run a worker until the App's queues are idle.

Importing this package does not import pytest: only the plugin module does.
"""

from __future__ import annotations

from .asserts import all_enqueued, assert_enqueued, refute_enqueued
from .running import drain_queue, perform_job, run_until_idle
from .schemas import drop_schema, isolated, unique_schema

__all__ = [
    "all_enqueued",
    "assert_enqueued",
    "drain_queue",
    "drop_schema",
    "isolated",
    "perform_job",
    "refute_enqueued",
    "run_until_idle",
    "unique_schema",
]
