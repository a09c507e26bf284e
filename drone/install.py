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

    def changed(self) -> str | None:
        """A sentence when the installed dragoon is no longer the one running, else None.

        Logged once per distinct change: each task of an upgraded drone carries it in its
        notes, its log says it once.
        """
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
        if change is None:
            return None
        sentence = f"{change}: restart it"
        if sentence != self._said:
            log.warning("%s (`systemctl restart dragoon-drone`, or stop and start "
                        "`dragoon drone run`); tasks still start from the wrapper this drone "
                        "started with, %s", sentence, self.wrapper)
            self._said = sentence
        return sentence
