"""A task's stdin, relay → spool file, only as fast as the task reads it.

The pilot's bytes wait at the relay (a bounded window, relay/stdin.py). The
drone takes them with ``GET /v1/worker/tasks/{id}/stdin?offset=N`` and appends
them to the spool ``TASK_DIR/stdin``; the wrapper feeds the task's stdin pipe
from that spool (drone/wrapper.py) and publishes how far it got in
``TASK_DIR/stdin.fed``. The drone fetches only while the spool holds less than
``AHEAD`` bytes the task has not read, so a task that does not read leaves the
bytes at the relay, the relay's window fills and the pilot's upload waits.

The spool is the drone's record of what it has: its size is the offset of the
next request, and that offset acknowledges every byte below it, so the relay
drops them. A drone restarted at any moment resumes at the spool's size and
every byte reaches the task exactly once. At the pilot's eof the drone writes
``TASK_DIR/stdin.eof`` holding the total size, and the wrapper closes the pipe
once it has fed that much.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Final

import httpx
from dragoon.drone import safefile
from dragoon.drone.client import (
    DroneReplaced,
    JitteredBackoff,
    RelayLink,
    RelayUnavailable,
    error_code,
)
from dragoon.drone.dirwatch import Poke
from dragoon.drone.state import write_json

log = logging.getLogger("dragoon.drone")

SPOOL: Final = "stdin"
EOF_MARK: Final = "stdin.eof"
FED: Final = "stdin.fed"
CHUNK: Final = 256 * 1024
AHEAD: Final = 1024 * 1024  # bytes fetched beyond what the task has read, at most (+ a chunk)
HOLD: Final = 20  # seconds the relay may hold a request while the pilot sends nothing
IDLE: Final = 0.05  # seconds between looks at a full spool where nothing says it drained


def fed_offset(task_dir: Path) -> int:
    """How far the wrapper has fed the task; 0 when it has not said (or said nonsense).

    The task can write its task dir: what sits at the path is opened without
    following a symlink or waiting on a FIFO, and a bad value only makes the
    drone fetch less.
    """
    try:
        fd, _ = safefile.open_regular(task_dir / FED)
    except OSError:
        return 0
    try:
        text = os.read(fd, 32)
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else 0


class StdinFetcher:
    """Keeps the spool ``AHEAD`` bytes ahead of the task, until the pilot's eof."""

    def __init__(self, client: RelayLink, *, task_id: str, task_dir: Path) -> None:
        self.client = client
        self.task_id = task_id
        self.dir = task_dir
        self._backoff = JitteredBackoff()

    def done(self) -> bool:
        return (self.dir / EOF_MARK).exists()

    async def run(self, exited: asyncio.Event, fed: Poke | None = None,
                  look_every: float = IDLE) -> None:
        """Fetch until eof, the task's exit (then cancelled), or a refusal that is final.

        A full spool is looked at again when ``fed`` is set (the wrapper rewrote
        ``stdin.fed``: the task read some) or after ``look_every`` seconds.
        """
        if self.done() or exited.is_set():
            return
        try:
            fd, found = safefile.open_regular(self.dir / SPOOL, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            log.warning("task %s: its stdin spool cannot be opened (%s); the task gets no more "
                        "stdin", self.task_id, exc)
            return
        try:
            await self._loop(fd, found.st_size, exited, fed, look_every)
        except DroneReplaced:
            return  # the daemon says why and stops; the task gets no more stdin from here
        finally:
            os.close(fd)

    async def _loop(self, fd: int, offset: int, exited: asyncio.Event, fed: Poke | None,
                    look_every: float) -> None:
        while not exited.is_set():
            room = AHEAD - (offset - fed_offset(self.dir))
            if room <= 0:
                if fed is None:
                    await asyncio.sleep(look_every)
                else:
                    await fed.wait(look_every)
                continue
            params = {"offset": offset, "limit": min(CHUNK, room), "wait": HOLD}
            try:
                response = await self.client.request(
                    "GET", f"/v1/worker/tasks/{self.task_id}/stdin", params=params,
                    read_timeout=HOLD + 30.0)
            except RelayUnavailable:
                await asyncio.sleep(self._backoff.next_delay())
                continue
            self._backoff.reset()
            if response.status_code != 200:
                if not await self._refused(response):
                    if error_code(response) == "offset_gap":
                        # Bytes are lost for good (a relay restored from a backup): the task
                        # reads EOF after what it has, rather than wait for ever.
                        write_json(self.dir / EOF_MARK, {"size": offset})
                    return
                continue
            if response.headers.get("X-Dragoon-Offset") != str(offset):
                log.warning("task %s: the relay answered stdin for another offset; asking again",
                            self.task_id)
                await asyncio.sleep(self._backoff.next_delay())
                continue
            data = response.content
            if data:
                await asyncio.to_thread(_write_all, fd, data)
                offset += len(data)
            if response.headers.get("X-Dragoon-Eof") == "1":
                write_json(self.dir / EOF_MARK, {"size": offset})
                log.info("task %s: stdin closed by the pilot after %d bytes", self.task_id,
                         offset)
                return

    async def _refused(self, response: httpx.Response) -> bool:
        """Log a refusal; True to ask again (after a pause), False when it is final."""
        status = response.status_code
        code = error_code(response)
        if status in (404, 409) and code in ("not_found", "task_finished", "no_stdin"):
            log.info("task %s: the relay has no more stdin for it (%s)", self.task_id, code)
            return False
        if status == 409 and code == "offset_gap":
            log.error("task %s: the relay's stdin and this drone's spool disagree (%s); the "
                      "task reads EOF after what it has", self.task_id, response.json())
            return False
        log.warning("task %s: stdin refused: HTTP %d %s; retrying", self.task_id, status, code)
        await asyncio.sleep(self._backoff.next_delay())
        return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def prepare(task_dir: Path) -> None:
    """The empty spool, before the wrapper starts: it opens it at once."""
    with contextlib.suppress(FileExistsError):
        fd = os.open(task_dir / SPOOL, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     0o600)
        os.close(fd)
