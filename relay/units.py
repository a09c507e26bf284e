"""Sizes and durations as an operator writes them in relay.toml and on the command line.

One home on the relay's side for each parser, so relay.toml, ``dragoon relay
gc --older-than`` and the quota messages agree. The project's parsers live in
``shared/spec.py`` (``parse_duration``, ``parse_size``); where that module is
not there yet, the duration parser ``relay/cli.py`` had (``enroll --ttl``) and
a size parser with the same rules stand in, and this is the one place to
drop them once it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

OFF: Final = ("", "none", "off")
_SIZE: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(?:([kmgtp])(i?)(b?)|(b))?",
                          re.ASCII | re.IGNORECASE)
_POWER: Final = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
SIZE_HINT: Final = "like 512, 10M, 4GiB or 1.5G"


def _shared(name: str) -> Callable[..., Any] | None:
    try:
        from dragoon.shared import spec  # not on every branch yet
    except ImportError:
        return None
    found: Callable[..., Any] | None = getattr(spec, name, None)
    return found


def _reason(exc: ValueError) -> str:
    """The reason without a field name in front (the caller names the setting itself)."""
    return str(getattr(exc, "problem", None) or exc)


def parse_size(text: str | int) -> int:
    """``4096``, ``512K``, ``50G``, ``4GiB``, ``1.5T`` → bytes; ValueError otherwise.

    A bare letter and ``…iB`` are powers of 1024 (as ``df -h`` prints them),
    ``kB``/``MB``/``GB`` powers of 1000, as shared/spec.py reads them.
    """
    if isinstance(text, bool) or (isinstance(text, int) and text < 0):
        raise ValueError(f"{text!r} is not a size {SIZE_HINT}")
    if isinstance(text, int):
        return text
    shared = _shared("parse_size")
    if shared is not None:
        try:
            return int(shared(text))
        except ValueError as exc:
            raise ValueError(_reason(exc)) from None
    match = _SIZE.fullmatch(text.strip()) if len(text) <= 64 else None
    if match is None:
        raise ValueError(f"{text!r} is not a size {SIZE_HINT}")
    number, prefix, binary, with_b, _bytes = match.groups()
    factor = 1
    if prefix:
        factor = (1024 if binary or not with_b else 1000) ** _POWER[prefix.lower()]
    return int(float(number) * factor)


def duration(text: str | float) -> float:
    """A duration (``90s``, ``15m``, ``12h``, ``30d``, or plain seconds) → seconds."""
    if isinstance(text, bool) or (isinstance(text, int | float) and text < 0):
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 1h, 7d")
    if isinstance(text, int | float):
        return float(text)
    shared = _shared("parse_duration")
    if shared is not None:
        try:
            return float(shared(text, field="timeout"))  # the field whose range is widest
        except ValueError as exc:
            raise ValueError(_reason(exc)) from None
    import click
    from dragoon.relay.cli import parse_duration  # the stand-in, until shared/spec.py

    try:
        return float(parse_duration(text))
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
