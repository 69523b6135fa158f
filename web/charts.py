"""Charts drawn on the server as SVG: no script, escaped text, readable at phone width.

Each chart is a stack of rows: a line of text (the label on the left, the value
on the right) over a bar.  Rows stay legible when the chart is scaled down to a
phone's width, where side-by-side columns would crowd their labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

COLOURS = ("#1f6feb", "#2e7d32", "#b26a00", "#8e6bbf", "#c62828", "#00838f", "#616e7c")
WIDTH = 400
TEXT_H, BAR_H, GAP = 16, 18, 10
ROW_H = TEXT_H + BAR_H + GAP


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    shown: str  # the value as the viewer reads it (formatted for the locale)
    second: float | None = None  # a second, darker bar inside the first (e.g. weighted)


def _open(title: str, rows: int, width: int) -> list[str]:
    height = max(rows, 1) * ROW_H
    return [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" '
        f'xmlns="http://www.w3.org/2000/svg" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]


def _text(bar: Bar, y: int, width: int) -> str:
    return (
        f'<text x="0" y="{y + TEXT_H - 4}">{escape(bar.label)}</text>'
        f'<text x="{width}" y="{y + TEXT_H - 4}" text-anchor="end">{escape(bar.shown)}</text>'
    )


def funnel(bars: Sequence[Bar], title: str, width: int = WIDTH) -> str:
    """A funnel: one centred band per stage, as wide as its value; the second value inside."""
    most = max((b.value for b in bars), default=0) or 1
    parts = _open(title, len(bars), width)
    for n, bar in enumerate(bars):
        y = n * ROW_H
        top = y + TEXT_H
        w = max(2.0, width * bar.value / most)
        colour = COLOURS[n % len(COLOURS)]
        parts.append(_text(bar, y, width))
        parts.append(f'<rect x="{(width - w) / 2:.1f}" y="{top}" width="{w:.1f}" height="{BAR_H}" '
                     f'rx="3" fill="{colour}" fill-opacity="0.35"/>')  # fmt: skip
        if bar.second is not None and bar.value:
            inner = w * min(bar.second / bar.value, 1.0)
            parts.append(f'<rect x="{(width - inner) / 2:.1f}" y="{top + 4}" width="{inner:.1f}" '
                         f'height="{BAR_H - 8}" rx="2" fill="{colour}"/>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def bars(items: Sequence[Bar], title: str, width: int = WIDTH) -> str:
    """Horizontal bars from the left edge, as long as their values."""
    most = max((b.value for b in items), default=0) or 1
    parts = _open(title, len(items), width)
    for n, bar in enumerate(items):
        y = n * ROW_H
        w = width * bar.value / most
        parts.append(_text(bar, y, width))
        parts.append(f'<rect x="0" y="{y + TEXT_H}" width="{width}" height="{BAR_H}" rx="3" '
                     f'fill="{COLOURS[0]}" fill-opacity="0.12"/>')  # fmt: skip
        parts.append(f'<rect x="0" y="{y + TEXT_H}" width="{w:.1f}" height="{BAR_H}" rx="3" '
                     f'fill="{COLOURS[0]}"/>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)
