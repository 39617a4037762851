"""Which App a command acts on, and the options every command spells the same way.

Every command names its App the same ways (``target_options``):

- ``MODULE:APP``, as the first argument after the command or as ``--app MODULE:APP``
  (``load_app``): import the user's module and use the App in it, with its URL, schema
  and registered jobs;
- ``--url URL [--schema S]``: a bare App that registers no jobs, for commands that only
  need the database (every command but ``worker``);
- neither: a bare App on ``AQUEUE_DATABASE_URL`` (schema ``aqueue``, or ``--schema``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from ..app import App
from ..errors import AqueueError, ConfigurationError
from .exits import UsageError

__all__ = [
    "add_json_option",
    "app_from_args",
    "app_target",
    "load_app",
    "load_object",
    "parse_queues",
    "processes_count",
    "target_options",
]

_APP_HELP = "where the App lives, e.g. myapp.jobs:app"


def load_object(target: str, what: str, example: str) -> Any:
    """Import ``MODULE:NAME`` and return what it names (None when the module lacks it);
    ``what`` prefixes the errors, ``example`` shows the expected form."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise AqueueError(f"{what}expected {example}, got {target!r}")
    # `aqueue worker myproject.jobs:app` is run from the project's directory, like
    # `python -m`; the console script alone would not find the project's modules.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AqueueError(f"{what}cannot import {module_name!r}: {exc}") from None
    return getattr(module, attr, None)


def load_app(target: str) -> App:
    """Import ``MODULE:APP`` and return the App it names."""
    app = load_object(target, "", "MODULE:APP (e.g. myproject.jobs:app)")
    if not isinstance(app, App):
        raise AqueueError(f"{target!r} is not an aqueue.App (found {type(app).__name__})")
    return app


def app_target(args: argparse.Namespace) -> str | None:
    """The ``MODULE:APP`` given positionally or as ``--app`` (a usage error if both)."""
    positional = getattr(args, "target", None)
    option = getattr(args, "app", None)
    if positional and option and positional != option:
        raise UsageError(f"two Apps named: {positional!r} and --app {option!r}; give one")
    return positional or option


def app_from_args(args: argparse.Namespace, *, needs_jobs: bool = False) -> App:
    """The App named by ``MODULE:APP``/``--app``, or a bare one for ``--url``/``--schema``.

    ``needs_jobs``: the command runs the App's jobs, so a bare App will not do."""
    target = app_target(args)
    url = getattr(args, "url", None)
    schema = getattr(args, "schema", None)
    if target and url:
        raise UsageError("--url and an App exclude each other: the App brings its own URL")
    if target and schema:
        raise UsageError("--schema goes with --url; an App (MODULE:APP or --app) brings its own")
    if target:
        return load_app(target)
    if needs_jobs:
        raise UsageError("name the App whose jobs to run: MODULE:APP (e.g. myproject.jobs:app)")
    try:
        return App(url, schema=schema or "aqueue")
    except ConfigurationError as exc:
        if url is None and not os.environ.get("AQUEUE_DATABASE_URL"):
            raise UsageError(
                "no database: give MODULE:APP (or --app MODULE:APP), --url URL, or set "
                "AQUEUE_DATABASE_URL (e.g. postgresql://user@localhost/db)"
            ) from None
        raise exc from None


def parse_queues(values: Sequence[str]) -> dict[str, int]:
    """``-q NAME=N`` values as a mapping; a bare ``NAME`` means concurrency 10.

    Only the syntax is checked here; names and ranges are the worker's to validate.
    """
    queues: dict[str, int] = {}
    for value in values:
        # rpartition: the concurrency is what follows the last "=", so a queue name may
        # contain one ("a=b=5" is queue "a=b").
        name, sep, raw = value.rpartition("=")
        if not sep:
            name, raw = value, "10"
        try:
            queues[name] = int(raw)
        except ValueError:
            raise UsageError(f"-q {value!r}: expected NAME=CONCURRENCY, e.g. -q mail=5") from None
    # No -q at all: the App decides (App(queues=...), else the queues its jobs name).
    return queues


def processes_count(value: str) -> int:
    """``--processes N`` (1 to 256) or ``auto``: the CPUs this process may run on."""
    if value == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return os.cpu_count() or 1
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {value!r}") from None
    if not 1 <= count <= 256:
        raise argparse.ArgumentTypeError(f"expected 1 to 256 processes, got {count}")
    return count


def target_options(*, url: bool = True, positional: bool = True) -> argparse.ArgumentParser:
    """A parent parser with ``[MODULE:APP]``, ``--app MODULE:APP`` and, with ``url``,
    ``--url URL`` and ``--schema``."""
    # A fresh parser per call: argparse parents share their action objects with every
    # child, so one module-level parent would be state mutated by whoever uses it.
    common = argparse.ArgumentParser(add_help=False)
    if positional:
        common.add_argument("target", nargs="?", metavar="MODULE:APP", help=_APP_HELP)
    common.add_argument("--app", metavar="MODULE:APP", help="the same, as an option")
    if url:
        common.add_argument(
            "--url", help="database URL, for a bare App (default: $AQUEUE_DATABASE_URL)"
        )
        common.add_argument("--schema", help="schema name, with --url (default: aqueue)")
    return common


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
