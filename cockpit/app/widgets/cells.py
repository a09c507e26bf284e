"""Small renderables for table cells: load bars and sparklines as Rich Text.

Cells are plain `Text`, not widgets, so a thousand rows cost a thousand
strings rather than a thousand widgets to lay out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from rich.text import Text

_BLOCKS: Final = " ▏▎▍▌▋▊▉█"
_SPARKS: Final = "▁▂▃▄▅▆▇█"


def load_colour(percent: float) -> str:
    if percent >= 90:
        return "red"
    if percent >= 70:
        return "yellow"
    return "green"


def load_bar(percent: float | None, width: int = 6) -> Text:
    """`█████▎ 87%`: eighth-block precision, coloured by how loaded it is."""
    if percent is None:
        return Text("-", style="dim", justify="right")
    percent = max(0.0, min(100.0, percent))
    eighths = round(percent / 100 * width * 8)
    full, part = divmod(eighths, 8)
    bar = "█" * full + (_BLOCKS[part] if part else "")
    text = Text(bar.ljust(width), style=load_colour(percent))
    text.append(f"{percent:4.0f}%", style="bold" if percent >= 90 else "")
    return text


def sparkline(values: Sequence[float], width: int = 12, top: float = 100.0) -> Text:
    """The last `width` values as block heights (0..top)."""
    tail = list(values)[-width:]
    chars = "".join(
        _SPARKS[min(len(_SPARKS) - 1, int(max(0.0, v) / top * (len(_SPARKS) - 1) + 0.5))]
        for v in tail
    )
    return Text(chars.rjust(width), style=load_colour(tail[-1]) if tail else "dim")
