"""Dependency-free SVG charts for the study report: horizontal bars with confidence-interval error
bars, loss curves (a line per arm, legend) and a cost-vs-quality scatter.

Every function returns one self-contained ``<svg>`` element as a string (no scripts, no external
fonts or images) that can be inlined in HTML. All text is escaped, so arm names from a results
file cannot inject markup. Sizes are in CSS pixels; the SVG scales with its container (viewBox).
"""

from __future__ import annotations

import math
from html import escape

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948",
           "#9c755f", "#ff9da7", "#e15759", "#bab0ac")
FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif\""
AXIS = "#555"
GRID = "#e3e3e3"
CHAR_W = 6.6  # approximate width of a 12 px sans-serif character


def arm_colors(ids: list[str]) -> dict[str, str]:
    """A stable colour per arm, in the order given (cycles after ten arms)."""
    return {a: PALETTE[i % len(PALETTE)] for i, a in enumerate(ids)}


def _t(x: float) -> str:
    """Coordinate formatting: short and deterministic."""
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _clip(label: str, n: int) -> str:
    """Shorten in the middle, so 'lora-sft/smollm2-135m-instruct/seed0' keeps its arm and its seed."""
    if len(label) <= n:
        return label
    head = (n - 1) // 2
    return label[:head] + "\u2026" + label[len(label) - (n - 1 - head):]


def _text(x: float, y: float, s: str, *, anchor: str = "start", size: int = 12, fill: str = "#222",
          weight: str = "normal", extra: str = "") -> str:
    return (f'<text x="{_t(x)}" y="{_t(y)}" text-anchor="{anchor}" font-size="{size}" fill="{fill}" '
            f'font-weight="{weight}"{extra}>{escape(s)}</text>')


def _open(width: float, height: float, title: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_t(width)} {_t(height)}" '
            f'width="{_t(width)}" height="{_t(height)}" role="img" {FONT}>',
            f"<title>{escape(title)}</title>",
            f'<rect x="0" y="0" width="{_t(width)}" height="{_t(height)}" fill="#fff"/>']


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (about n of them)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks, v = [], start
    while v < hi + step * 0.999:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:.3g}"


def _finite(values: list) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _value_range(values: list, extent: list = ()) -> tuple[float, float]:
    """0..1 when every value is a proportion (intervals are then clipped to it), otherwise nice
    bounds around the values and their intervals, always including 0."""
    vals = _finite(values)
    if not vals or (min(vals) >= 0 and max(vals) <= 1):
        return 0.0, 1.0
    every = vals + _finite(list(extent)) + [0.0]
    ticks = nice_ticks(min(every), max(every))
    return ticks[0], ticks[-1]


def _fmt_val(v: float) -> str:
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}" if abs(v) < 100 else f"{v:,.0f}"


# --------------------------------------------------------------------------- bars

def bar_chart(title: str, bars: list[dict], *, axis_label: str = "", width: int = 540) -> str:
    """Horizontal bars, one per arm: {"label", "value", "low", "high", "color", "best": bool}.

    Error bars span [low, high]; the best bar's label is bold and marked with a star."""
    label_w = min(300, (min(max([len(b["label"]) for b in bars] + [6]), 36) + 2) * 7.2 + 16)  # bold, "★ "
    width = max(width, label_w + 330)  # long labels (model/seed ids) widen the chart, not squeeze the bars
    row, top, bottom, right = 26, 34, 42, 70
    height = top + bottom + row * max(len(bars), 1)
    x0, x1 = label_w, width - right
    lo, hi = _value_range([b.get("value") for b in bars], [v for b in bars for v in (b.get("low"), b.get("high"))])
    sx = lambda v: x0 + (x1 - x0) * (min(max(v, lo), hi) - lo) / ((hi - lo) or 1)  # noqa: E731
    out = _open(width, height, title)
    out.append(_text(8, 20, title, size=14, weight="600"))
    for tick in nice_ticks(lo, hi):
        if lo - 1e-9 <= tick <= hi + 1e-9:
            x = sx(tick)
            out.append(f'<line x1="{_t(x)}" y1="{top - 4}" x2="{_t(x)}" y2="{height - bottom}" stroke="{GRID}"/>')
            out.append(_text(x, height - bottom + 15, _fmt_tick(tick), anchor="middle", size=11, fill=AXIS))
    out.append(_text((x0 + x1) / 2, height - 8, axis_label, anchor="middle", size=11, fill=AXIS))
    for i, b in enumerate(bars):
        y = top + i * row
        name = ("\u2605 " if b.get("best") else "") + _clip(b["label"], 36)
        out.append(_text(label_w - 8, y + row / 2 + 4, name, anchor="end", weight="700" if b.get("best") else "normal"))
        if b.get("value") is None:
            out.append(_text(x0 + 6, y + row / 2 + 4, "not measured", size=11, fill="#888"))
            continue
        v = b["value"]
        out.append(f'<rect x="{_t(min(sx(0 if lo <= 0 else lo), sx(v)))}" y="{_t(y + 5)}" '
                   f'width="{_t(abs(sx(v) - sx(0 if lo <= 0 else lo)))}" height="{row - 10}" fill="{b["color"]}" '
                   f'fill-opacity="{1 if b.get("best") else 0.75}"><title>{escape(b["label"])}: {v:.3g}</title></rect>')
        end = sx(v)
        if b.get("low") is not None and b.get("high") is not None:
            a, c, ym = sx(b["low"]), sx(b["high"]), y + row / 2
            out.append(f'<path d="M{_t(a)} {_t(ym)}H{_t(c)}M{_t(a)} {_t(ym - 6)}V{_t(ym + 6)}M{_t(c)} {_t(ym - 6)}'
                       f'V{_t(ym + 6)}" stroke="#222" stroke-width="1.5" fill="none"/>')
            end = max(end, c)
        out.append(_text(end + 6, y + row / 2 + 4, _fmt_val(v), size=11, fill="#333"))
    out.append(f'<line x1="{_t(x0)}" y1="{top - 4}" x2="{_t(x0)}" y2="{height - bottom}" stroke="{AXIS}"/>')
    out.append("</svg>")
    return "\n".join(out)


# --------------------------------------------------------------------------- lines

def _legend(x: float, y: float, items: list[tuple[str, str]], dashed_key: bool) -> list[str]:
    out = []
    for i, (label, color) in enumerate(items):
        yy = y + i * 18
        out.append(f'<rect x="{_t(x)}" y="{_t(yy - 9)}" width="14" height="10" fill="{color}"/>')
        out.append(_text(x + 20, yy, _clip(label, 40), size=11))
    if dashed_key:
        yy = y + len(items) * 18 + 10
        out.append(f'<line x1="{_t(x)}" y1="{_t(yy - 4)}" x2="{_t(x + 14)}" y2="{_t(yy - 4)}" stroke="#333" stroke-width="2"/>')
        out.append(_text(x + 20, yy, "training", size=11, fill=AXIS))
        out.append(f'<line x1="{_t(x)}" y1="{_t(yy + 14)}" x2="{_t(x + 14)}" y2="{_t(yy + 14)}" stroke="#333" '
                   'stroke-width="2" stroke-dasharray="5 3"/>')
        out.append(_text(x + 20, yy + 18, "validation", size=11, fill=AXIS))
    return out


def line_chart(title: str, series: list[dict], *, x_label: str = "step", y_label: str = "loss",
               width: int = 760, height: int = 360) -> str:
    """Loss curves: series = [{"label", "color", "train": [[x, y]], "val": [[x, y]]}]; training
    solid, validation dashed with markers, one colour per arm, legend on the right."""
    pts = [(float(x), float(y)) for s in series for k in ("train", "val") for x, y in (s.get(k) or [])
           if y is not None and math.isfinite(float(y))]
    longest = min(max([len(s["label"]) for s in series] + [10]), 40)
    legend_w, left, top, bottom = 50 + longest * 6.2, 56, 34, 44
    x0, x1, y0, y1 = left, width - legend_w, height - bottom, top
    out = _open(width, height, title)
    out.append(_text(8, 20, title, size=14, weight="600"))
    if not pts:
        out.append(_text(width / 2, height / 2, "no training curves recorded", anchor="middle", fill="#888"))
        out.append("</svg>")
        return "\n".join(out)
    xt = nice_ticks(min(0.0, min(p[0] for p in pts)), max(p[0] for p in pts))
    yt = nice_ticks(min(p[1] for p in pts), max(p[1] for p in pts))
    sx = lambda v: x0 + (x1 - x0) * (v - xt[0]) / ((xt[-1] - xt[0]) or 1)  # noqa: E731
    sy = lambda v: y0 - (y0 - y1) * (v - yt[0]) / ((yt[-1] - yt[0]) or 1)  # noqa: E731
    for t in xt:
        out.append(f'<line x1="{_t(sx(t))}" y1="{y1}" x2="{_t(sx(t))}" y2="{y0}" stroke="{GRID}"/>')
        out.append(_text(sx(t), y0 + 15, _fmt_tick(t), anchor="middle", size=11, fill=AXIS))
    for t in yt:
        out.append(f'<line x1="{x0}" y1="{_t(sy(t))}" x2="{x1}" y2="{_t(sy(t))}" stroke="{GRID}"/>')
        out.append(_text(x0 - 6, sy(t) + 4, _fmt_tick(t), anchor="end", size=11, fill=AXIS))
    out.append(f'<path d="M{x0} {y1}V{y0}H{x1}" stroke="{AXIS}" fill="none"/>')
    out.append(_text((x0 + x1) / 2, height - 8, x_label, anchor="middle", size=11, fill=AXIS))
    out.append(_text(14, (y0 + y1) / 2, y_label, anchor="middle", size=11, fill=AXIS,
                     extra=f' transform="rotate(-90 14 {_t((y0 + y1) / 2)})"'))
    for s in series:
        for kind in ("train", "val"):
            xy = [(sx(float(x)), sy(float(y))) for x, y in (s.get(kind) or []) if y is not None and math.isfinite(float(y))]
            if not xy:
                continue
            dash = ' stroke-dasharray="5 3"' if kind == "val" else ""
            d = "M" + "L".join(f"{_t(x)} {_t(y)}" for x, y in xy)
            out.append(f'<path d="{d}" fill="none" stroke="{s["color"]}" stroke-width="{2 if kind == "val" else 1.5}"'
                       f'{dash}><title>{escape(s["label"])} ({"validation" if kind == "val" else "training"})</title></path>')
            if kind == "val":
                out.extend(f'<circle cx="{_t(x)}" cy="{_t(y)}" r="3" fill="#fff" stroke="{s["color"]}" stroke-width="1.5"/>'
                           for x, y in xy)
    out.extend(_legend(x1 + 22, y1 + 10, [(s["label"], s["color"]) for s in series], dashed_key=True))
    out.append("</svg>")
    return "\n".join(out)


# --------------------------------------------------------------------------- scatter

def _symlog(v: float) -> float:
    return math.log10(1 + max(v, 0.0))


def _spread_labels(items: list[list[float]], gap: float = 13.0) -> None:
    """Push label y positions ([x, y] in pixels, edited in place) apart where labels would overlap."""
    order = sorted(range(len(items)), key=lambda i: items[i][1])
    for a, b in zip(order, order[1:]):
        if abs(items[a][0] - items[b][0]) < 140 and items[b][1] - items[a][1] < gap:
            items[b][1] = items[a][1] + gap


def scatter_chart(title: str, points: list[dict], *, x_label: str, y_label: str, log_x: bool = True,
                  width: int = 760, height: int = 380) -> str:
    """Points {"label", "x", "y", "low", "high", "color"} with vertical interval bars and labels.

    With log_x the x axis is log10(1 + x), so x = 0 (prompting arms: no training) stays on the chart."""
    pts = [p for p in points if p.get("x") is not None and p.get("y") is not None]
    longest = min(max([len(p["label"]) for p in pts] + [10]), 34)
    left, right, top, bottom = 56, 24 + longest * 6.2, 34, 44
    x0, x1, y0, y1 = left, width - right, height - bottom, top
    out = _open(width, height, title)
    out.append(_text(8, 20, title, size=14, weight="600"))
    if not pts:
        out.append(_text(width / 2, height / 2, "nothing to plot", anchor="middle", fill="#888"))
        out.append("</svg>")
        return "\n".join(out)
    f = _symlog if log_x else float
    xmax = max(p["x"] for p in pts)
    xt = [0.0] + [10.0 ** k for k in range(0, int(math.ceil(math.log10(max(xmax, 1)))) + 1)] if log_x \
        else nice_ticks(0.0, xmax)
    ylo, yhi = _value_range([p["y"] for p in pts], [v for p in pts for v in (p.get("low"), p.get("high"))])
    yt = nice_ticks(ylo, yhi)
    sx = lambda v: x0 + (x1 - x0) * (f(v) - f(xt[0])) / ((f(xt[-1]) - f(xt[0])) or 1)  # noqa: E731
    sy = lambda v: y0 - (y0 - y1) * (min(max(v, yt[0]), yt[-1]) - yt[0]) / ((yt[-1] - yt[0]) or 1)  # noqa: E731
    for t in xt:
        out.append(f'<line x1="{_t(sx(t))}" y1="{y1}" x2="{_t(sx(t))}" y2="{y0}" stroke="{GRID}"/>')
        out.append(_text(sx(t), y0 + 15, _fmt_tick(t), anchor="middle", size=11, fill=AXIS))
    for t in yt:
        out.append(f'<line x1="{x0}" y1="{_t(sy(t))}" x2="{x1}" y2="{_t(sy(t))}" stroke="{GRID}"/>')
        out.append(_text(x0 - 6, sy(t) + 4, _fmt_tick(t), anchor="end", size=11, fill=AXIS))
    out.append(f'<path d="M{x0} {y1}V{y0}H{x1}" stroke="{AXIS}" fill="none"/>')
    out.append(_text((x0 + x1) / 2, height - 8, x_label + (" (log scale)" if log_x else ""), anchor="middle",
                     size=11, fill=AXIS))
    out.append(_text(14, (y0 + y1) / 2, y_label, anchor="middle", size=11, fill=AXIS,
                     extra=f' transform="rotate(-90 14 {_t((y0 + y1) / 2)})"'))
    labels = [[sx(p["x"]) + 8, sy(p["y"]) + 4] for p in pts]
    _spread_labels(labels)
    for p, (lx, ly) in zip(pts, labels):
        cx, cy = sx(p["x"]), sy(p["y"])
        if p.get("low") is not None and p.get("high") is not None:
            out.append(f'<path d="M{_t(cx)} {_t(sy(p["low"]))}V{_t(sy(p["high"]))}" stroke="{p["color"]}" '
                       'stroke-width="1.5"/>')
        out.append(f'<circle cx="{_t(cx)}" cy="{_t(cy)}" r="5" fill="{p["color"]}" stroke="#222" stroke-width="0.8">'
                   f'<title>{escape(p["label"])}: {p["y"]:.3g} at {p["x"]:.3g}</title></circle>')
        out.append(_text(lx, ly, _clip(p["label"], 34), size=11))
    out.append("</svg>")
    return "\n".join(out)
