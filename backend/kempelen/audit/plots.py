"""Three small SVG charts, drawn by hand so the HTML report needs no library, script or network."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

W, H = 520, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 40
COLORS = {"approved": "#2e7d32", "released": "#1565c0", "rejected": "#c62828"}


def _svg(body: list[str]) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{W}' height='{H}' viewBox='0 0 {W} {H}' "
            f"font-family='system-ui,sans-serif' font-size='11'>" + "".join(body) + "</svg>")


def _number(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _axes(y_max: float) -> list[str]:
    """Frame plus four labelled horizontal grid lines from 0 to y_max."""
    body = []
    for i in range(5):
        value = y_max * i / 4
        y = H - BOTTOM - (H - TOP - BOTTOM) * i / 4
        body.append(f"<line x1='{LEFT}' x2='{W - RIGHT}' y1='{y:.1f}' y2='{y:.1f}' stroke='#e5e5e5'/>")
        body.append(f"<text x='{LEFT - 6}' y='{y + 4:.1f}' text-anchor='end' fill='#555'>{_number(value)}</text>")
    body.append(f"<line x1='{LEFT}' x2='{LEFT}' y1='{TOP}' y2='{H - BOTTOM}' stroke='#999'/>")
    return body


def line_chart(points: list[tuple[float, float]], *, x_is_time: bool = False) -> str:
    """A step line through (x, y) points, e.g. cumulative payments over block time."""
    if not points:
        return _svg([])
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y_max = max(ys) or 1
    sx = lambda x: LEFT + (W - LEFT - RIGHT) * (x - x0) / (x1 - x0)
    sy = lambda y: H - BOTTOM - (H - TOP - BOTTOM) * y / y_max
    path, previous = [f"M{sx(xs[0]):.1f},{sy(0):.1f}"], 0.0
    for x, y in points:
        path.append(f"L{sx(x):.1f},{sy(previous):.1f}L{sx(x):.1f},{sy(y):.1f}")
        previous = y
    body = _axes(y_max)
    body.append(f"<path d='{''.join(path)}' fill='none' stroke='#1565c0' stroke-width='2'/>")
    for x, anchor in ((x0, "start"), (x1, "end")):
        label = (datetime.fromtimestamp(x, UTC).strftime("%Y-%m-%d %H:%M") if x_is_time
                 else _number(x))
        body.append(f"<text x='{sx(x):.1f}' y='{H - BOTTOM + 16}' text-anchor='{anchor}' fill='#555'>"
                    f"{escape(label)}</text>")
    return _svg(body)


def bar_chart(bars: list[tuple[str, float]]) -> str:
    """Horizontal bars, largest first: earnings per worker."""
    if not bars:
        return _svg([])
    top = max(value for _, value in bars) or 1
    row = min(22.0, (H - TOP - 8) / len(bars))
    body = []
    for i, (label, value) in enumerate(bars):
        y = TOP + i * row
        width = (W - 180 - RIGHT) * value / top
        body.append(f"<text x='116' y='{y + row * 0.7:.1f}' text-anchor='end' fill='#333'>{escape(label)}</text>")
        body.append(f"<rect x='120' y='{y + 2:.1f}' width='{width:.1f}' height='{row - 4:.1f}' fill='#2e7d32'/>")
        body.append(f"<text x='{124 + width:.1f}' y='{y + row * 0.7:.1f}' fill='#555'>{_number(value)}</text>")
    return _svg(body)


def histogram(series: dict[str, list[float]], *, marker: float | None = None, bins: int = 24) -> str:
    """Overlaid histograms per outcome (approved, rejected, released), with a vertical marker line."""
    values = [v for vs in series.values() for v in vs] + ([marker] if marker is not None else [])
    if not values:
        return _svg([])
    hi = max(values) * 1.05 or 1
    width = hi / bins
    counts = {name: [0] * bins for name in series}
    for name, vs in series.items():
        for v in vs:
            counts[name][min(int(v / width), bins - 1)] += 1
    y_max = max(max(c) for c in counts.values()) or 1
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    body = _axes(y_max)
    for k, (name, bucket) in enumerate(sorted(counts.items())):
        color = COLORS.get(name, "#777")
        for i, count in enumerate(bucket):
            if count:
                h = plot_h * count / y_max
                x = LEFT + plot_w * i / bins
                body.append(f"<rect x='{x:.1f}' y='{H - BOTTOM - h:.1f}' width='{plot_w / bins - 1:.1f}' "
                            f"height='{h:.1f}' fill='{color}' fill-opacity='0.55'/>")
        body.append(f"<rect x='{W - RIGHT - 90}' y='{TOP + 14 * k}' width='10' height='10' fill='{color}'/>"
                    f"<text x='{W - RIGHT - 76}' y='{TOP + 9 + 14 * k}'>{escape(name)}</text>")
    if marker is not None:
        x = LEFT + plot_w * marker / hi
        body.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{TOP}' y2='{H - BOTTOM}' stroke='#000' "
                    "stroke-dasharray='4 3'/>")
    for x, anchor in ((0.0, "start"), (hi, "end")):
        body.append(f"<text x='{LEFT + plot_w * x / hi:.1f}' y='{H - BOTTOM + 16}' text-anchor='{anchor}' "
                    f"fill='#555'>{_number(x)}</text>")
    return _svg(body)
