"""The retry policy: exponential backoff with jitter."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping
from typing import Any

from .bounds import MAX_DELAY
from .errors import InvalidOption
from .validate import is_number

__all__ = ["DEFAULT_BACKOFF", "Backoff"]


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: ``base * factor ** (attempt - 1)``, capped at ``max_delay``.

    ``jitter`` spreads each delay uniformly by ±that fraction so that jobs failing together
    do not retry together.
    """

    base: float = 1.0
    factor: float = 2.0
    max_delay: float = 3600.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        for name in ("base", "factor", "max_delay", "jitter"):
            value = getattr(self, name)
            if not is_number(value) or value < 0 or not math.isfinite(value):
                raise InvalidOption(f"retry.{name}", f"must be a finite number >= 0, got {value!r}")
        if self.jitter > 1:
            raise InvalidOption("retry.jitter", f"must be between 0 and 1, got {self.jitter!r}")
        if self.max_delay > MAX_DELAY:
            raise InvalidOption(
                "retry.max_delay",
                f"must be at most {MAX_DELAY:.0f} seconds, got {self.max_delay:g}",
            )

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        exponent = max(attempt - 1, 0)
        # Cap the exponent before computing so huge attempt counts cannot overflow a float.
        try:
            raw = (
                self.max_delay
                if exponent > 1000
                else min(self.base * self.factor**exponent, self.max_delay)
            )
        except OverflowError:  # e.g. factor=1000 at attempt 200: beyond any float
            raw = self.max_delay
        spread = raw * self.jitter
        uniform = (rng or random).uniform(-spread, spread)
        return max(raw + uniform, 0.0)

    def to_json(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Backoff:
        return cls(**{k: float(v) for k, v in data.items() if k in cls.__dataclass_fields__})


#: The policy of a job that sets none.
DEFAULT_BACKOFF = Backoff()
