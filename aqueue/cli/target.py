"""Which App a command acts on, and the options every command spells the same way.

A command names its App in one of two ways:

- ``MODULE:APP`` (``load_app``): import the user's module and use the App in it, with
  its URL, schema and registered jobs. ``worker`` and ``cluster`` take it as a
  positional argument, ``migrate`` and the admin commands as ``--app``.
- ``--url URL [--schema S]`` (``app_from_args``): a bare App that registers no jobs,
  for commands that only need the database. Without ``--url`` the App reads
  ``AQUEUE_DATABASE_URL``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from ..app import App
from ..errors import AqueueError

__all__ = [
    "add_json_option",
    "app_from_args",
    "load_app",
    "load_object",
    "parse_queues",
    "target_options",
]


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


def app_from_args(args: argparse.Namespace) -> App:
    """The App named by ``--app``, or a bare one for ``--url``/``--schema``."""
    if args.app and args.schema:
        raise AqueueError("--schema goes with --url; an --app brings its own schema")
    if args.app:
        return load_app(args.app)
    return App(args.url, schema=args.schema or "aqueue")


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
            raise AqueueError(f"-q {value!r}: expected NAME=CONCURRENCY, e.g. -q mail=5") from None
    # No -q at all: the App decides (App(queues=...), else the queues its jobs name).
    return queues


def target_options() -> argparse.ArgumentParser:
    """A parent parser with ``--app MODULE:APP | --url URL`` and ``--schema``."""
    # A fresh parser per call: argparse parents share their action objects with every
    # child, so one module-level parent would be state mutated by whoever uses it.
    common = argparse.ArgumentParser(add_help=False)
    target = common.add_mutually_exclusive_group()
    target.add_argument("--app", metavar="MODULE:APP", help="use this App's URL and schema")
    target.add_argument("--url", help="database URL (default: $AQUEUE_DATABASE_URL)")
    common.add_argument("--schema", help="schema name, with --url (default: aqueue)")
    return common


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
