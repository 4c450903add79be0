"""Line charts as self-contained SVG text, for the scaling figure in docs/performance.md.

    panel = Panel("CPU per query (µs)", "services", [Series("pydns", [(100, 12.0), (1000, 12.5)])])
    svg = render([panel, ...], title="...")

The x axis is logarithmic (cluster sizes grow by factors of ten); the y axis is linear from
0, or logarithmic (``Panel(log_y=True)``) when the series differ by orders of magnitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
PANEL_W, PANEL_H = 430, 300
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 62, 16, 34, 48
LEGEND_ROW = 15


@dataclass
class Series:
    name: str
    points: list[tuple[float, float]]
    dashed: bool = False


@dataclass
class Panel:
    title: str
    xlabel: str
    series: list[Series] = field(default_factory=list)
    log_y: bool = False  # for series that differ by orders of magnitude


def nice_max(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above ``value``."""
    if value <= 0:
        return 1.0
    base = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * base >= value:
            return step * base
    return 10 * base


def _fmt_tick(v: float) -> str:
    if v >= 1000 and v % 1000 == 0:
        return f"{v / 1000:g}k"
    return f"{v:g}"


def _panel(panel: Panel, ox: float, oy: float) -> list[str]:
    out = []
    pts = [pt for s in panel.series for pt in s.points if pt[0] > 0 and pt[1] is not None]
    x0, y0 = ox + MARGIN_L, oy + MARGIN_T
    w, h = PANEL_W - MARGIN_L - MARGIN_R, PANEL_H - MARGIN_T - MARGIN_B
    out.append(f'<text x="{ox + PANEL_W / 2:.1f}" y="{oy + 20}" text-anchor="middle" font-size="14" '
               f'font-weight="bold">{escape(panel.title)}</text>')
    out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#888"/>')
    if not pts:
        out.append(f'<text x="{x0 + w / 2:.1f}" y="{y0 + h / 2:.1f}" text-anchor="middle" fill="#888">no data</text>')
        return out
    xs = sorted({p[0] for p in pts})
    lo, hi = math.log10(xs[0]), math.log10(xs[-1])
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.06
    lo, hi = lo - pad, hi + pad
    if panel.log_y:
        ys = [p[1] for p in pts if p[1] > 0]
        ylo = 10 ** math.floor(math.log10(min(ys)))
        yhi = 10 ** math.ceil(math.log10(max(ys)))
        if yhi <= ylo:
            yhi = ylo * 10
        ticks = [ylo * 10**i for i in range(int(round(math.log10(yhi / ylo))) + 1)]

        def sy(y):
            y = max(y, ylo)
            return y0 + h - (math.log10(y) - math.log10(ylo)) / (math.log10(yhi) - math.log10(ylo)) * h
    else:
        ymax = nice_max(max(p[1] for p in pts) * 1.08)
        ticks = [ymax * i / 5 for i in range(6)]

        def sy(y):
            return y0 + h - y / ymax * h

    def sx(x):
        return x0 + (math.log10(x) - lo) / (hi - lo) * w

    for v in ticks:  # y grid and ticks
        y = sy(v)
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{_fmt_tick(round(v, 6))}</text>')
    for x in xs:  # x ticks at the measured sizes
        px = sx(x)
        out.append(f'<line x1="{px:.1f}" y1="{y0 + h}" x2="{px:.1f}" y2="{y0 + h + 4}" stroke="#888"/>')
        out.append(f'<text x="{px:.1f}" y="{y0 + h + 17}" text-anchor="middle" font-size="11">{_fmt_tick(x)}</text>')
    out.append(f'<text x="{x0 + w / 2:.1f}" y="{y0 + h + 36}" text-anchor="middle" font-size="12">'
               f'{escape(panel.xlabel)} (log scale)</text>')
    if panel.log_y:
        out.append(f'<text x="{x0 + w - 4}" y="{y0 + h - 6}" text-anchor="end" font-size="10" fill="#888">log scale</text>')
    for i, s in enumerate(panel.series):
        color = COLORS[i % len(COLORS)]
        spts = [(sx(x), sy(y)) for x, y in sorted(s.points) if x > 0 and y is not None]
        if not spts:
            continue
        dash = ' stroke-dasharray="6,4"' if s.dashed else ""
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in spts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        for x, y in spts:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}"/>')
        ly = y0 + h + 56 + i * LEGEND_ROW  # the legend sits under the axis label
        out.append(f'<line x1="{x0 + 10}" y1="{ly - 4}" x2="{x0 + 30}" y2="{ly - 4}" stroke="{color}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{x0 + 36}" y="{ly}" font-size="11">{escape(s.name)}</text>')
    return out


def render(panels: list[Panel], title: str = "", note: str = "") -> str:
    width = PANEL_W * len(panels)
    top = 28 if title else 0
    legend = max((len(p.series) for p in panels), default=0) * LEGEND_ROW + 10
    bottom = legend + (20 if note else 0)
    height = PANEL_H + top + bottom
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'font-family="Helvetica, Arial, sans-serif">',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    if title:
        out.append(f'<text x="{width / 2:.1f}" y="20" text-anchor="middle" font-size="15">{escape(title)}</text>')
    for i, panel in enumerate(panels):
        out.extend(_panel(panel, i * PANEL_W, top))
    if note:
        out.append(f'<text x="{width / 2:.1f}" y="{height - 6}" text-anchor="middle" font-size="10" fill="#555">'
                   f'{escape(note)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
