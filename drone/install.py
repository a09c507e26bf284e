"""The code this drone runs, captured at its start, and whether the installed code changed since.

A drone runs for weeks; ``pip install -U dragoon`` can replace the package under
it at any time. The drone's own modules are already in memory, but each task
starts ``drone/wrapper.py`` from disk as a new process: once pip has removed
or moved that file, every task would fail with "the task wrapper did not
start", and a new wrapper beside an old drone could speak another version's
file protocol.

So the wrapper is read once, when the drone starts, and written into the
data dir (``wrapper.py``, 0600); every task is started from that copy. It is
the wrapper of the drone's own version, whatever pip did since, so the drone
keeps running tasks until it is restarted. What changed is still said: before
each task the installed version and the wrapper on disk are compared with the
ones the drone started with, and a change is logged once as a warning and
added to the task's notes ("dragoon was upgraded under this drone (0.3 → 0.4):
restart it"). If a task cannot start even so (the Python that runs the drone
is gone too, as when its venv was rebuilt), that sentence is its error.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Final

from dragoon.drone.state import DataDir, write_atomic

log = logging.getLogger("dragoon.drone")

# Where pip put it (replaced by an upgrade); spawn.WRAPPER is the same path, named here
# without importing spawn, which is the task path (drone/lazy.py).
INSTALLED_WRAPPER: Final = Path(__file__).with_name("wrapper.py")


def installed_version() -> str:
    """The version of dragoon installed now, read from disk afresh (not the running one's)."""
    try:
        from importlib.metadata import version as dist_version

        return dist_version("dragoon")
    except Exception:
        return "0"


class RunningCode:
    """The version and wrapper this drone started with; ``changed()`` compares with the disk."""

    def __init__(self, data: DataDir, *, version: str) -> None:
        self.version = version
        try:
            self.source = INSTALLED_WRAPPER.read_bytes()
        except OSError as exc:  # a broken install: say so in one line (drone/cli.py)
            raise ValueError(f"cannot read the task wrapper {INSTALLED_WRAPPER}: "
                             f"{exc.strerror or exc}; reinstall dragoon") from exc
        self.wrapper = data.root / "wrapper.py"
        write_atomic(self.wrapper, self.source)
        self._said: str | None = None
        self._looked: tuple[object, ...] | None = None  # _install_stamp() at the last look
        self._found: str | None = None  # what that look found

    def changed(self) -> str | None:
        """A sentence when the installed dragoon is no longer the one running, else None.

        Logged once per distinct change: each task of an upgraded drone carries it in its
        notes, its log says it once. Asked at every accept, so the answer is kept while
        nothing pip touches has changed (``_install_stamp``): reading the metadata afresh
        costs most of a millisecond, on the path from the poll answer to the task's start.
        """
        stamp = _install_stamp()
        if stamp is not None and stamp == self._looked:
            return self._said_again(self._found)
        self._looked, self._found = stamp, self._compare()
        return self._said_again(self._found)

    def _compare(self) -> str | None:
        now = installed_version()
        if now != self.version:
            change = f"dragoon was upgraded under this drone ({self.version} → {now})"
        else:
            try:
                same = INSTALLED_WRAPPER.read_bytes() == self.source
            except OSError:
                change = f"dragoon's files changed under this drone ({INSTALLED_WRAPPER} is gone)"
            else:
                change = None if same else (f"dragoon's files changed under this drone "
                                            f"({INSTALLED_WRAPPER} differs)")
        return None if change is None else f"{change}: restart it"

    def _said_again(self, sentence: str | None) -> str | None:
        if sentence is None:
            return None
        if sentence != self._said:
            log.warning("%s (`systemctl restart dragoon-drone`, or stop and start "
                        "`dragoon drone run`); tasks still start from the wrapper this drone "
                        "started with, %s", sentence, self.wrapper)
            self._said = sentence
        return sentence


def _install_stamp() -> tuple[object, ...] | None:
    """What an install or upgrade changes: the installed wrapper's file, and the folders on
    the import path (a dist-info folder made or removed in one changes its mtime); None when
    one cannot be looked at (then the caller looks afresh)."""
    try:
        found = os.stat(INSTALLED_WRAPPER)
        wrapper: tuple[object, ...] = (found.st_ino, found.st_mtime_ns, found.st_size)
    except FileNotFoundError:
        wrapper = ("gone",)
    except OSError:
        return None
    folders: list[tuple[str, int]] = []
    for entry in sys.path:
        try:
            folders.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            folders.append((entry, -1))
    return (wrapper, *folders)
