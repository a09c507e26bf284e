"""Sizes and durations as an operator writes them in relay.toml and on the command line.

One home for each parser, so relay.toml, ``dragoon relay gc --older-than``
and the quota messages agree. ``parse_size`` lives here until
``shared/spec.py`` has one; ``parse_duration`` is the one ``relay/cli.py``
already uses (``dragoon relay enroll --ttl``), reached through ``duration``
below so that swapping it for ``shared.spec.parse_duration`` is one line.
"""

from __future__ import annotations

import re
from typing import Final

_SIZE: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?\s*", re.IGNORECASE)
_FACTORS: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
OFF: Final = ("", "none", "off")


def parse_size(text: str | int) -> int:
    """``4096``, ``512K``, ``50G``, ``1.5TiB`` → bytes (powers of 1024); ValueError otherwise."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a size like 512M, 50G, 2T")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"a size cannot be negative: {text}")
        return text
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not a size like 512M, 50G, 2T")
    return int(float(match.group(1)) * _FACTORS[match.group(2).lower()])


def duration(text: str | float) -> float:
    """A duration (``90s``, ``15m``, ``12h``, ``30d``, or plain seconds) → seconds.

    The one call of the project's duration parser on this side: point it at
    ``dragoon.shared.spec.parse_duration`` once that lands.
    """
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 1h, 7d")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"a duration cannot be negative: {text}")
        return float(text)
    import click
    from dragoon.relay.cli import parse_duration

    try:
        return parse_duration(text)
    except click.BadParameter as exc:
        raise ValueError(exc.message) from exc


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
