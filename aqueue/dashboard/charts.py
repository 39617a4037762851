"""The throughput chart, drawn on the server as SVG geometry.

Drawn server-side so the overview shows it with scripts off and in the first paint, and
so that no charting library (or CDN) is needed: sixty stacked bars are a few lines of
arithmetic. The template turns the ``Bar`` records into ``<rect>`` elements.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

__all__ = ["Bar", "Chart", "throughput_chart"]

#: Stacking order, bottom first; each has a CSS class of the same name.
SERIES = ("completed", "discarded", "cancelled")
WIDTH = 600
HEIGHT = 120
_SLOT = WIDTH / 60
_GAP = 2.0


@dataclasses.dataclass(frozen=True, slots=True)
class Segment:
    state: str
    y: float
    height: float


@dataclasses.dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    minutes_ago: int
    counts: Mapping[str, int]
    segments: Sequence[Segment]

    @property
    def label(self) -> str:
        when = "this minute" if self.minutes_ago == 0 else f"{self.minutes_ago} min ago"
        parts = ", ".join(f"{n} {state}" for state, n in self.counts.items() if n)
        return f"{when}: {parts or 'nothing finished'}"


@dataclasses.dataclass(frozen=True, slots=True)
class Chart:
    bars: Sequence[Bar]
    peak: int
    totals: Mapping[str, int]
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def per_minute(self) -> float:
        """Average jobs finished per minute over the hour."""
        return sum(self.totals.values()) / 60


def throughput_chart(series: Mapping[str, Sequence[int]]) -> Chart:
    """Sixty stacked bars from ``Browse.throughput``: index 0 is the oldest minute."""
    totals = {state: sum(series.get(state, ())) for state in SERIES}
    per_minute = [sum(series.get(state, [0] * 60)[i] for state in SERIES) for i in range(60)]
    peak = max(per_minute, default=0)
    scale = (HEIGHT - 4) / peak if peak else 0.0
    bars = []
    for i in range(60):
        counts = {state: series.get(state, [0] * 60)[i] for state in SERIES}
        y = float(HEIGHT)
        segments = []
        for state in SERIES:
            height = counts[state] * scale
            if counts[state] and height < 1.5:
                height = 1.5  # a lone failure stays visible next to a thousand successes
            y -= height
            if counts[state]:
                segments.append(Segment(state, round(y, 2), round(height, 2)))
        bars.append(
            Bar(
                x=round(i * _SLOT + _GAP / 2, 2),
                width=round(_SLOT - _GAP, 2),
                minutes_ago=59 - i,
                counts=counts,
                segments=segments,
            )
        )
    return Chart(bars=bars, peak=peak, totals=totals)
