"""Sizes and durations as an operator writes them in relay.toml and on the command line.

The parsing itself is ``shared/spec.py``'s (``parse_duration``, ``parse_size``),
the one home every door uses; this module adds what only the relay's settings
need: ints taken as they are, ``"none"`` for no limit, and reasons without a
field name in front (the caller names the setting itself).
"""

from __future__ import annotations

from typing import Final

from dragoon.shared.spec import SpecError
from dragoon.shared.spec import parse_duration as _parse_duration
from dragoon.shared.spec import parse_size as _parse_size

OFF: Final = ("", "none", "off")
SIZE_HINT: Final = "like 512, 10M, 4GiB or 1.5G"


def parse_size(text: str | int) -> int:
    """``4096``, ``512K``, ``50G``, ``4GiB``, ``1.5T`` → bytes; ValueError otherwise."""
    if isinstance(text, bool) or (isinstance(text, int) and text < 0):
        raise ValueError(f"{text!r} is not a size {SIZE_HINT}")
    if isinstance(text, int):
        return text
    try:
        return _parse_size(text)
    except SpecError as exc:
        raise ValueError(exc.problem) from None


def duration(text: str | float) -> float:
    """A duration (``90s``, ``15m``, ``12h``, ``30d``, or plain seconds) → seconds."""
    if isinstance(text, bool) or (isinstance(text, int | float) and text < 0):
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 1h, 7d")
    if isinstance(text, int | float):
        return float(text)
    try:
        return float(_parse_duration(text, field="timeout"))  # the field whose range is widest
    except SpecError as exc:
        raise ValueError(exc.problem) from None


def optional_size(value: str | int) -> int | None:
    """A size, or None for ``"none"`` (also ``""`` and ``"off"``): no limit."""
    if isinstance(value, str) and value.strip().lower() in OFF:
        return None
    return parse_size(value)


def optional_duration(value: str | float) -> float | None:
    """A duration, or None for ``"none"`` (also ``""`` and ``"off"``): keep forever."""
    if isinstance(value, str) and value.strip().lower() in OFF:
        return None
    return duration(value)


def format_size(size: int) -> str:
    """Bytes for a person: ``512 B``, ``1.5 KiB``, ``49.8 GiB``."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")
