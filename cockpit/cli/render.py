"""Human output of the pilot verbs: tables with relative times and coloured states.

On a terminal the tables are drawn by rich with colours; piped, they are plain
aligned columns without escape codes, so ``grep`` and ``awk`` work on them
(scripts should still prefer ``--json``). rich is imported here, lazily, only
by verbs that print tables.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from dragoon.cockpit.app.state import format_duration

STATE_STYLES = {
    "queued": "cyan",
    "dispatched": "blue",
    "running": "bold blue",
    "succeeded": "green",
    "failed": "red",
    "timed_out": "magenta",
    "cancelled": "yellow",
    "lost": "bold red",
    "online": "green",
    "offline": "red",
    "pending": "yellow",
}


def relative_time(when: float | None, *, now: float | None = None) -> str:
    """``12s ago``, ``5m03s ago``, ``3h10m ago``; ``in 4m00s`` for the future; ``-`` for none."""
    if when is None:
        return "-"
    delta = (time.time() if now is None else now) - float(when)
    text = format_duration(abs(delta))
    return f"in {text}" if delta < 0 else f"{text} ago"


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - the loop always returns


def is_terminal(stream: Any = None) -> bool:
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def print_table(headers: Sequence[str], rows: Iterable[Sequence[str]], *,
                state_column: int | None = None) -> None:
    """A table on stdout: rich with colours on a terminal, plain columns when piped."""
    rows = [list(row) for row in rows]
    if not is_terminal():
        widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
        for row in [list(headers), *rows]:
            line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row))
            sys.stdout.write(line.rstrip() + "\n")
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header in headers:
        table.add_column(header, overflow="fold")
    for row in rows:
        cells: list[Any] = list(row)
        if state_column is not None:
            style = STATE_STYLES.get(row[state_column], "")
            cells[state_column] = f"[{style}]{row[state_column]}[/]" if style else row[
                state_column]
        table.add_row(*cells)
    Console().print(table)


def print_fields(pairs: Iterable[tuple[str, str]], *, state: str | None = None) -> None:
    """``name: value`` lines for one object (``dragoon task``)."""
    pairs = list(pairs)
    width = max(len(name) for name, _ in pairs)
    color = is_terminal() and state is not None
    if color:
        from rich.console import Console
        from rich.markup import escape

        console = Console(highlight=False)
        for name, value in pairs:
            text = escape(value)
            if name == "state" and state in STATE_STYLES:
                text = f"[{STATE_STYLES[state]}]{text}[/]"
            console.print(f"[bold]{name.ljust(width)}[/]  {text}")
        return
    for name, value in pairs:
        sys.stdout.write(f"{name.ljust(width)}  {value}\n")
