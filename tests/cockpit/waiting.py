"""Wait on a condition with a deadline, letting the app run in between (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.app import App
from textual.pilot import Pilot
from textual.screen import Screen


async def until(pilot: Pilot[None], condition: Callable[[], object], *, timeout: float = 10.0,
                what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await pilot.pause(0.02)


def showing(app: App[None], kind: type[Screen[object]]) -> bool:
    """True once a screen of `kind` is on top *and mounted*.

    A pushed screen becomes `app.screen` before its compose has run, so a test
    that queries its widgets on the type alone races the mount.
    """
    return isinstance(app.screen, kind) and app.screen.is_mounted
