"""Charts of the reports page as inline SVG drawn on the server: stacked columns over time, horizontal bars, shares."""
from __future__ import annotations

import math
from itertools import count
from typing import Sequence

from markupsafe import Markup, escape

# No script and no style attributes (the pages' CSP forbids both): colours come from classes in reports.css, sizes
# from SVG presentation attributes. Each chart scales with its container (viewBox, width 100% in CSS), names itself
# with <title>/<desc> for screen readers, and gives every bar a <title> tooltip; the page shows the same numbers in
# tables.

WIDTH = 400           # viewBox width; text sizes are in the same units
_ids = count(1)


def nice_max(value: float) -> float:
    """The axis maximum: `value` rounded up to 1, 2, 2.5 or 5 times a power of ten (at least 1)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= value)


def number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def svg(height: float, title: str, desc: str, body: list[str], css: str) -> Markup:
    n = next(_ids)
    return Markup(
        f'<svg class="chart {css}" viewBox="0 0 {WIDTH} {height:.0f}" role="img" '
        f'aria-labelledby="chart-{n}-title chart-{n}-desc" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="chart-{n}-title">{escape(title)}</title><desc id="chart-{n}-desc">{escape(desc)}</desc>'
        + "".join(body) + "</svg>")


def columns(periods: Sequence[str], series: Sequence[tuple[str, str, Sequence[float]]], title: str,
            empty: str = "") -> Markup:
    """Stacked columns over time. `series`: (label, css class, values per period), stacked bottom to top."""
    height, left, right, top, bottom = 180, 34, 6, 8, 30
    totals = [sum(s[2][i] for s in series) for i in range(len(periods))]
    peak = nice_max(max(totals, default=0))
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    step = plot_w / max(len(periods), 1)
    body = [f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{WIDTH - right}" y2="{top + plot_h}"/>']
    for fraction in (0, 0.5, 1):  # y ticks with light grid lines
        y = top + plot_h * (1 - fraction)
        body.append(f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{WIDTH - right}" y2="{y:.1f}"/>'
                    f'<text class="tick" x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">'
                    f'{number(peak * fraction)}</text>')
    for i, period in enumerate(periods):
        y = top + plot_h
        x, w = left + i * step + step * 0.12, max(step * 0.76, 0.5)
        tip = f"{period}: " + ", ".join(f"{s[2][i]:,.0f} {s[0]}" for s in series)
        body.append(f'<g class="column"><title>{escape(tip)}</title>')
        for label, css, values in series:
            h = plot_h * values[i] / peak
            if h > 0:
                y -= h
                body.append(f'<rect class="{css}" x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{h:.2f}"/>')
        body.append("</g>")
    for i in sorted({0, len(periods) // 2, len(periods) - 1}) if periods else ():  # first, middle, last label
        x = left + (i + 0.5) * step
        anchor = "start" if i == 0 and len(periods) > 1 else "end" if i == len(periods) - 1 and i else "middle"
        x = left if anchor == "start" else WIDTH - right if anchor == "end" else x
        body.append(f'<text class="tick" x="{x:.1f}" y="{height - 10}" text-anchor="{anchor}">'
                    f'{escape(periods[i])}</text>')
    if not any(totals):
        body.append(f'<text class="empty" x="{WIDTH / 2}" y="{top + plot_h / 2}" text-anchor="middle">'
                    f'{escape(empty)}</text>')
    desc = ", ".join(f"{s[0]} {sum(s[2]):,.0f}" for s in series)
    desc += f" ({periods[0]} – {periods[-1]})" if periods else ""
    return svg(height, title, desc, body, "chart-columns")


def bars(rows: Sequence[tuple[str, float, str]], title: str, css: str = "bar", empty: str = "",
         label_chars: int = 52) -> Markup:
    """Horizontal bars, one row each: (label, value, shown value); the label above its bar."""
    row_h, top = 34, 4
    height = top + row_h * max(len(rows), 1) + 4
    peak = max((value for _, value, _ in rows), default=0) or 1
    body = []
    for i, (label, value, shown) in enumerate(rows):
        y = top + i * row_h
        w = max((WIDTH - 60) * value / peak, 1 if value else 0)
        body.append(f'<g class="bar-row"><title>{escape(label)}: {escape(shown)}</title>'
                    f'<text class="label" x="0" y="{y + 12}">{escape(truncate(label, label_chars))}</text>'
                    f'<rect class="{css}" x="0" y="{y + 16}" width="{w:.2f}" height="12"/>'
                    f'<text class="value" x="{w + 4:.2f}" y="{y + 26}">{escape(shown)}</text></g>')
    if not rows:
        body.append(f'<text class="empty" x="{WIDTH / 2}" y="{height / 2 + 4}" text-anchor="middle">'
                    f'{escape(empty)}</text>')
    desc = "; ".join(f"{label}: {shown}" for label, _, shown in rows[:20])
    return svg(height, title, desc, body, "chart-bars")


def shares(periods: Sequence[str], values: Sequence[float | None], title: str, empty: str = "") -> Markup:
    """Columns of a share (0..1) per period; a period without data has no column (and says so in its tooltip)."""
    height, left, right, top, bottom = 150, 34, 6, 8, 30
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    step = plot_w / max(len(periods), 1)
    body = [f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{WIDTH - right}" y2="{top + plot_h}"/>']
    for fraction in (0, 0.5, 1):
        y = top + plot_h * (1 - fraction)
        body.append(f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{WIDTH - right}" y2="{y:.1f}"/>'
                    f'<text class="tick" x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{fraction:.0%}</text>')
    for i, (period, value) in enumerate(zip(periods, values)):
        x, w = left + i * step + step * 0.15, max(step * 0.7, 0.5)
        tip = f"{period}: " + ("–" if value is None else f"{value:.0%}")
        h = 0 if value is None else plot_h * value
        body.append(f'<g class="column"><title>{escape(tip)}</title><rect class="bar-share" x="{x:.2f}" '
                    f'y="{top + plot_h - h:.2f}" width="{w:.2f}" height="{h:.2f}"/></g>')
    for i in sorted({0, len(periods) - 1}) if periods else ():
        anchor = "start" if i == 0 and len(periods) > 1 else "end" if i else "middle"
        x = left if anchor == "start" else WIDTH - right if anchor == "end" else left + plot_w / 2
        body.append(f'<text class="tick" x="{x:.1f}" y="{height - 10}" text-anchor="{anchor}">'
                    f'{escape(periods[i])}</text>')
    if all(v is None for v in values):
        body.append(f'<text class="empty" x="{WIDTH / 2}" y="{top + plot_h / 2}" text-anchor="middle">'
                    f'{escape(empty)}</text>')
    desc = ", ".join(f"{p} {'–' if v is None else f'{v:.0%}'}" for p, v in zip(periods, values))
    return svg(height, title, desc, body, "chart-shares")
