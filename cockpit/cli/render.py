"""Human output of the pilot verbs: tables with relative times and coloured states.

On a terminal the tables are drawn by rich with colours (the cockpit's, from
cockpit/theme.py, so a state looks the same in both); piped, they are plain
aligned columns without escape codes, so ``grep`` and ``awk`` work on them
(scripts should still prefer ``--json``). rich is imported here, lazily, only
by verbs that print tables.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from dragoon.cockpit.formatting import human_size, message_text, relative_time
from dragoon.cockpit.safe_text import clean
from dragoon.cockpit.theme import state_style

# The verbs reach the formatting helpers through this module (`render.human_size`).
__all__ = ["human_size", "is_terminal", "message_text", "print_fields", "print_json",
           "print_table", "relative_time"]


def is_terminal(stream: Any = None) -> bool:
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def print_table(headers: Sequence[str], rows: Iterable[Sequence[str]], *,
                state_column: int | None = None, err: bool = False) -> None:
    """A table on stdout (stderr with ``err``): rich with colours on a terminal, plain
    columns when piped.

    Cells are what drones, tasks and pilots wrote: each goes through the one rule
    of cockpit/safe_text.py (no markup, no control characters), piped or not, since
    piped output still ends up on a terminal (``dragoon tasks | grep sweep``).
    """
    rows = [[clean(cell) for cell in row] for row in rows]
    out = sys.stderr if err else sys.stdout
    if not is_terminal(out):
        widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
        for row in [list(headers), *rows]:
            line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row))
            out.write(line.rstrip() + "\n")
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header in headers:
        table.add_column(header, overflow="fold")
    for row in rows:
        # a span, not the cell's base style: the state's colour stops where its text does
        styles = ["" if i != state_column else state_style(cell) for i, cell in enumerate(row)]
        table.add_row(*(Text.assemble((cell, style)) for cell, style in
                        zip(row, styles, strict=True)))
    Console(stderr=err).print(table)


def print_fields(pairs: Iterable[tuple[str, str]], *, state: str | None = None) -> None:
    """``name: value`` lines for one object (``dragoon task``); values as safe text."""
    pairs = [(name, clean(value)) for name, value in pairs]
    width = max(len(name) for name, _ in pairs)
    color = is_terminal() and state is not None
    if color:
        from rich.console import Console
        from rich.text import Text

        console = Console(highlight=False)
        for name, value in pairs:
            style = state_style(state) if name == "state" and state else ""
            console.print(Text.assemble((name.ljust(width), "bold"), "  ", (value, style)))
        return
    for name, value in pairs:
        sys.stdout.write(f"{name.ljust(width)}  {value}\n")
