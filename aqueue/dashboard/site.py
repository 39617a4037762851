"""One dashboard's settings and collaborators, shared by its pages and actions."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from ..db.browse import Browse
from .render import Renderer

if TYPE_CHECKING:
    from ..app import App

__all__ = ["Site"]


@dataclasses.dataclass(frozen=True)
class Site:
    app: App
    browse: Browse
    renderer: Renderer
    read_only: bool
    #: Jobs per page of the job listing.
    page_size: int = 50
    #: At most this many jobs per bulk retry or cancel (one click); the message says when
    #: more match, and another click goes on.
    bulk_limit: int = 1000
    #: How long the "drain" button waits for the queue to empty before it reports back.
    drain_timeout: float = 10.0
