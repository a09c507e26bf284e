"""Durations, ages and sizes as the pilot reads them, in the CLI tables and the cockpit alike.

Pure (no rich, no Textual, no clock of its own unless asked): `dragoon tasks`
and the cockpit's task tree say `12m03s` the same way because both call
this module, and the cockpit passes its injectable clock in as `now`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any


def _is_number(value: object) -> bool:
    """A relay sends numbers here; anything else (a string, a bool, NaN) shows as ``-``."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and value == value and abs(value) != float("inf"))


def format_duration(seconds: float | None) -> str:
    """`45s`, `2m05s`, `3h02m`, `2d01h`: two units at most, short enough for a table cell."""
    if not _is_number(seconds):
        return "-"
    assert seconds is not None
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def format_ago(when: float | None, now: float) -> str:
    """How long ago `when` was, as `12s`, `5m00s`; `never` for none; clock skew shows `0s`."""
    if when is None:
        return "never"
    if not _is_number(when):
        return "-"
    return format_duration(max(0.0, now - when))


def relative_time(when: float | None, *, now: float | None = None) -> str:
    """``12s ago``, ``5m03s ago``, ``3h10m ago``; ``in 4m00s`` for the future; ``-`` for none."""
    if not _is_number(when):
        return "-"
    assert when is not None
    delta = (time.time() if now is None else now) - float(when)
    text = format_duration(abs(delta))
    return f"in {text}" if delta < 0 else f"{text} ago"


def human_size(size: int | None) -> str:
    """`512 B`, `1.5 KiB`, `3.2 GiB` (binary units, GiB at most); `-` for unknown."""
    if not _is_number(size):
        return "-"
    assert size is not None
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - the loop always returns


def message_text(message: Mapping[str, Any]) -> str:
    """A message's text as the client opened it, or, for one that did not open (the relay
    altered or moved it, or its task is not this pilot's to open), one line saying so:
    never anything of the relay's as a task's words. Not yet safe text (``clean`` it)."""
    error = message.get("error")
    if error is not None or not isinstance(message.get("text"), str):
        return f"[message not shown: {error or 'no text'}]"
    return str(message["text"])
