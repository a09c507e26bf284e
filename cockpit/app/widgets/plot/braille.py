"""Points on a wxh braille canvas: each character cell holds 2x4 dots (U+2800 block).

One job: scale (x, y) points to dot positions and turn the dots into lines of
text, with the axes' min/max as labels. Pure (no Textual), so a test can pin
known points to known characters. Non-finite values are dropped; a range of
one value puts its points in the middle. An x axis of positive values spanning
two decades or more (a learning rate from 1e-4 to 1e-2) is drawn on a log
scale, as a sweep's grid is laid out, and says so under its right end.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Final

BLANK: Final = " "
# bit of the dot at (column 0..1, row 0..3) inside one braille cell
_DOT: Final = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))

Point = tuple[float, float]


def finite(points: Iterable[Point]) -> list[Point]:
    return [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]


def span(values: Sequence[float]) -> tuple[float, float]:
    return (min(values), max(values)) if values else (0.0, 1.0)


def _place(value: float, low: float, high: float, dots: int) -> int:
    if high <= low:
        return (dots - 1) // 2
    return round((value - low) / (high - low) * (dots - 1))


def dots(points: Iterable[Point], width: int, height: int,
         x_range: tuple[float, float] | None = None,
         y_range: tuple[float, float] | None = None) -> set[tuple[int, int]]:
    """Dot coordinates (column, row from the top) on a (2·width)x(4·height) grid."""
    kept = finite(points)
    xs, ys = x_range or span([x for x, _ in kept]), y_range or span([y for _, y in kept])
    cols, rows = 2 * width, 4 * height
    out: set[tuple[int, int]] = set()
    for x, y in kept:
        col = _place(x, xs[0], xs[1], cols)
        row = rows - 1 - _place(y, ys[0], ys[1], rows)
        if 0 <= col < cols and 0 <= row < rows:
            out.add((col, row))
    return out


def cells(lit: Iterable[tuple[int, int]], width: int, height: int) -> list[str]:
    """The dots as `height` lines of `width` characters."""
    grid = [[0] * width for _ in range(height)]
    for col, row in lit:
        grid[row // 4][col // 2] |= _DOT[col % 2][row % 4]
    return ["".join(chr(0x2800 + bits) if bits else BLANK for bits in line) for line in grid]


def draw(points: Iterable[Point], width: int, height: int) -> list[str]:
    return cells(dots(points, width, height), width, height)


def number_label(value: float) -> str:
    return f"{value:.4g}"


LOG_SPAN: Final = 100.0  # max/min of positive x values from which the x axis is logarithmic


def log_scaled(xs: Sequence[float]) -> bool:
    return bool(xs) and min(xs) > 0 and max(xs) / min(xs) >= LOG_SPAN


def framed(points: Sequence[Point], width: int, height: int, *,
           categories: Sequence[str] | None = None) -> list[str]:
    """The canvas with a y axis (max on top, min at the bottom) and an x axis below it
    (min and max, or the first and last category). `width`, `height` are the whole box."""
    kept = finite(points)
    log_x = categories is None and log_scaled([x for x, _ in kept])
    if log_x:
        lows = span([x for x, _ in kept])
        kept = [(math.log10(x), y) for x, y in kept]
    ys = span([y for _, y in kept])
    xs = span([x for x, _ in kept]) if categories is None else (0.0, max(len(categories) - 1, 0))
    y_labels = (number_label(ys[1]), number_label(ys[0]))
    pad = max(len(label) for label in y_labels)
    inner_w, inner_h = max(1, width - pad - 1), max(1, height - 1)
    lines = cells(dots(kept, inner_w, inner_h, xs, ys), inner_w, inner_h)
    out = []
    for i, line in enumerate(lines):
        label = y_labels[0] if i == 0 else y_labels[1] if i == inner_h - 1 else ""
        out.append(f"{label:>{pad}}│{line}")
    if categories is not None:
        left, right = (categories[0], categories[-1]) if categories else ("", "")
    elif log_x:
        left, right = number_label(lows[0]), f"{number_label(lows[1])} (log)"
    else:
        left, right = number_label(xs[0]), number_label(xs[1])
    gap = max(1, inner_w - len(left) - len(right))
    out.append(" " * pad + "└" + (left + " " * gap + right)[:inner_w] if kept else
               " " * pad + "└" + "(no values)")
    return out
