"""Load bars for the drone grid's CPU, memory and GPU cells, as Rich Text.

Cells are plain `Text`, not widgets, so a thousand rows cost a thousand
strings rather than a thousand widgets to lay out.
"""

from __future__ import annotations

from typing import Final

from dragoon.cockpit.theme import load_style
from rich.text import Text

_BLOCKS: Final = " ▏▎▍▌▋▊▉█"


def load_bar(percent: float | None, width: int = 6) -> Text:
    """`█████▎ 87%`: eighth-block precision, coloured by how loaded it is."""
    if percent is None:
        return Text("-", style="dim", justify="right")
    percent = max(0.0, min(100.0, percent))
    eighths = round(percent / 100 * width * 8)
    full, part = divmod(eighths, 8)
    bar = "█" * full + (_BLOCKS[part] if part else "")
    text = Text(bar.ljust(width), style=load_style(percent))
    text.append(f"{percent:4.0f}%", style="bold" if percent >= 90 else "")
    return text
