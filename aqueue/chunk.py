"""Chunk jobs, the definition side: ``@app.job(chunk=aqueue.Chunk(size=100, timeout=1.0))``.

A chunk job's function takes one parameter, the list of items (``list[T]``); each item is
enqueued alone, as that parameter's value, so it is an ordinary job row with its own
attempts, errors and result. What pydantic validates at enqueue time is one item (a
``T``), stored as ``{"docs": <item>}``; ``index.enqueue(doc)`` and
``index.enqueue(docs=doc)`` store the same. The worker claims items like any job and
hands them to the function in lists (``aqueue/worker/chunks.py`` explains how).

A chunk function takes no ``JobContext``: a context is one job's (its id, its progress),
and a chunk is many jobs. Progress and per-item details go in each item's result.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .context import JobContext
from .errors import ConfigurationError

__all__ = ["MAX_CHUNK_SIZE", "Chunk", "chunk_item", "item_stand_in"]

#: The most items one call receives: a chunk's outcomes are written together, and a
#: bigger list would mostly lengthen the time its first item waits.
MAX_CHUNK_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Chunk:
    """Run a job's items in lists: up to ``size`` items per call, dispatched as soon as
    ``size`` are claimed, or when the oldest claimed item has waited ``timeout`` seconds
    (then with whatever is there)."""

    size: int = 100
    timeout: float = 1.0

    def __post_init__(self) -> None:
        size = self.size
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_CHUNK_SIZE:
            raise ConfigurationError(
                f"Chunk.size: must be an integer from 1 to {MAX_CHUNK_SIZE}, got {size!r}"
            )
        timeout = self.timeout
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise ConfigurationError(
                f"Chunk.timeout: must be a finite number of seconds above 0, got {timeout!r}"
            )
        object.__setattr__(self, "timeout", float(timeout))


def chunk_item(fn: Callable[..., Any], kind: str) -> tuple[str, Any]:
    """The name of a chunk function's one parameter and the type of one item (``T`` of
    its ``list[T]``); ``ConfigurationError`` for any other shape."""
    where = f"job {kind!r} (chunk=)"
    if not inspect.iscoroutinefunction(fn):
        raise ConfigurationError(f"{where}: {fn!r} must be an 'async def' function")
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except (NameError, TypeError) as exc:
        raise ConfigurationError(f"{where}: cannot resolve annotations: {exc}") from None
    params = list(inspect.signature(fn).parameters.values())
    if params and hints.get(params[0].name) is JobContext:
        raise ConfigurationError(
            f"{where}: a chunk function takes no JobContext (a context is one job's, a chunk "
            "is many); its one parameter is the list of items"
        )
    if len(params) != 1:
        names = ", ".join(p.name for p in params) or "none"
        raise ConfigurationError(
            f"{where}: the function must take exactly one parameter, the list of items "
            f"(list[T]); it takes {len(params)}: {names}"
        )
    [param] = params
    if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
        raise ConfigurationError(
            f"{where}: parameter {param.name!r} must be a plain parameter passable by keyword "
            "(not *args, **kwargs or positional-only)"
        )
    annotation = hints.get(param.name, inspect.Parameter.empty)
    if annotation is list:
        return param.name, Any
    if typing.get_origin(annotation) is not list:
        raise ConfigurationError(
            f"{where}: parameter {param.name!r} must be annotated list[T] (the items), "
            f"got {_describe(annotation)}"
        )
    [item_type] = typing.get_args(annotation)
    return param.name, item_type


def item_stand_in(name: str, item_type: Any) -> Callable[..., Any]:
    """A signature ``(name: item_type)`` to build the argument schema of one item from:
    what is enqueued, and validated, is one item, not the list the function takes."""

    def one_item(**kwargs: Any) -> None:
        raise NotImplementedError  # never called: only its signature is read

    parameter = inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    setattr(  # noqa: B010 - inspect.signature reads this attribute
        one_item,
        "__signature__",
        inspect.Signature([parameter.replace(annotation=item_type)]),
    )
    one_item.__annotations__ = {name: item_type}
    return one_item


def _describe(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return "no annotation"
    return getattr(annotation, "__name__", None) or repr(annotation)
