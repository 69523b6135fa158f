"""Charts drawn on the server as SVG: no script, escaped text, readable at phone width."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

COLOURS = ("#1f6feb", "#2e7d32", "#b26a00", "#8e6bbf", "#c62828", "#00838f", "#616e7c")


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    shown: str  # the value as the viewer reads it (formatted for the locale)
    second: float | None = None  # a second, lighter bar inside the first (e.g. weighted)


def funnel(bars: Sequence[Bar], title: str, width: int = 640) -> str:
    """A funnel: one centred band per stage, as wide as its value; the second value inside."""
    row, gap, label_w = 34, 6, 150
    height = len(bars) * (row + gap) + 30
    most = max((b.value for b in bars), default=0) or 1
    room = width - label_w - 20
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" '
        f'xmlns="http://www.w3.org/2000/svg" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for n, bar in enumerate(bars):
        y = 10 + n * (row + gap)
        w = max(2.0, room * bar.value / most)
        x = label_w + (room - w) / 2
        colour = COLOURS[n % len(COLOURS)]
        parts.append(f'<text x="0" y="{y + row / 2 + 4:.0f}">{escape(bar.label)}</text>')
        parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row}" rx="3" '
                     f'fill="{colour}" fill-opacity="0.35"/>')  # fmt: skip
        if bar.second is not None and bar.value:
            inner = w * min(bar.second / bar.value, 1.0)
            left = label_w + (room - inner) / 2
            parts.append(f'<rect x="{left:.1f}" y="{y + 6}" width="{inner:.1f}" '
                         f'height="{row - 12}" rx="2" fill="{colour}"/>')  # fmt: skip
        parts.append(f'<text x="{label_w + room / 2:.0f}" y="{y + row / 2 + 4:.0f}" '
                     f'text-anchor="middle">{escape(bar.shown)}</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def bars(items: Sequence[Bar], title: str, width: int = 640, height: int = 220) -> str:
    """Vertical bars with their labels under them and values above."""
    n = max(len(items), 1)
    most = max((b.value for b in items), default=0) or 1
    slot = (width - 20) / n
    base = height - 30
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" '
        f'xmlns="http://www.w3.org/2000/svg" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<line x1="10" y1="{base}" x2="{width - 10}" y2="{base}" stroke="#d9dee4"/>',
    ]
    for i, bar in enumerate(items):
        h = (base - 30) * bar.value / most
        x = 10 + i * slot + slot * 0.15
        w = slot * 0.7
        parts.append(f'<rect x="{x:.1f}" y="{base - h:.1f}" width="{w:.1f}" height="{h:.1f}" '
                     f'fill="{COLOURS[0]}"/>')  # fmt: skip
        mid = x + w / 2
        parts.append(f'<text x="{mid:.1f}" y="{base - h - 4:.1f}" text-anchor="middle">'
                     f'{escape(bar.shown)}</text>')  # fmt: skip
        parts.append(f'<text x="{mid:.1f}" y="{height - 10}" text-anchor="middle">'
                     f'{escape(bar.label)}</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)
