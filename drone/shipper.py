"""Shipping one output stream of one task: spool file → relay, exactly once, in order.

The wrapper writes the task's stdout/stderr, and their ``order`` (shared/
order.py), to spool files; this reads each from the
offset the relay has acknowledged and posts chunks of at most 256 KiB with
their offset. The relay appends a chunk only at its current length, so a
resend after a lost answer is acknowledged, not appended twice, and a 409
``offset_gap`` tells the shipper where the relay really is. At most WINDOW
chunks are in flight per stream, so memory stays flat whatever the task
writes; small writes that arrive meanwhile go out together in the next round.

The spool is opened once, without following a symlink or waiting on a FIFO
(``drone/safefile.py``), and read through that fd in a thread: the task
writes to the very inode the drone reads, so a task that deletes or replaces
its spool file (the task dir is writable by it) loses nothing it wrote to its
stdout, and nothing the task puts at that path can stall the drone.

Once the task's finish is recorded the relay's log is closed: a resend of bytes
it holds is still acknowledged (a drone that restarted before its cleanup ships
them again), and anything new is 409 ``task_finished``, which ends the shipping
(``TaskFinished``) instead of being retried forever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from dragoon.drone import safefile
from dragoon.drone.client import JitteredBackoff, RelayLink, RelayUnavailable, error_code
from dragoon.drone.dirwatch import Poke
from dragoon.drone.release import Releaser

log = logging.getLogger("dragoon.drone")

CHUNK: Final = 256 * 1024
WINDOW: Final = 4  # chunks in flight per stream: memory stays at WINDOW * CHUNK
# Seconds between looks at a quiet spool where nothing tells the shipper that it grew (no
# inotify: drone/dirwatch.py); with inotify the wrapper's writes wake it, and it looks on its
# own only every dirwatch.SAFETY_LOOK.
IDLE_POLL: Final = 0.025
INLINE_READ: Final = 64 * 1024  # a window this small is read on the loop (ship_once)


class TaskGone(Exception):
    """The relay no longer knows the task (404): its output has nowhere to go."""


class TaskFinished(TaskGone):
    """The relay recorded the task's end (409 ``task_finished``): it takes nothing more."""


class StreamRefused(Exception):
    """The relay does not take this stream (422): an older relay, which knows no ``order``."""


class StreamShipper:
    """Keeps ``acked`` equal to what the relay holds, and pushes the rest of the spool."""

    def __init__(
        self,
        client: RelayLink,
        *,
        task_id: str,
        stream: str,
        spool: Path,
        acked: int = 0,
        on_ack: Callable[[str, int], None] | None = None,
        optional: bool = False,
    ) -> None:
        self.client = client
        self.task_id = task_id
        self.stream = stream
        self.spool = spool
        self.acked = acked
        self._on_ack = on_ack
        self._releaser = Releaser(spool)
        self._backoff = JitteredBackoff()
        self._fd: int | None = None
        self._refused: str | None = None  # why the spool could not be opened, if so
        # An optional stream (``order``) the relay refuses is given up, not retried for ever:
        # the task's output must not wait on its order.
        self.optional = optional
        self.given_up = False

    def _open(self) -> int | None:
        """The spool's fd, opened on first need (the wrapper creates the file)."""
        if self._fd is None and self._refused is None:
            try:
                self._fd, _ = safefile.open_regular(self.spool)
            except FileNotFoundError:
                return None
            except OSError as exc:  # NotRegular included
                self._refused = str(exc)
                log.warning("task %s %s: the spool %s is %s; its output cannot be shipped",
                            self.task_id, self.stream, self.spool, exc)
        return self._fd

    def spool_size(self) -> int:
        """Bytes in the spool; what the relay holds when the spool cannot be read."""
        fd = self._open()
        if fd is None:
            return self.acked if self._refused else 0
        return os.fstat(fd).st_size

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def ship_once(self) -> bool:
        """Send the next chunks (up to WINDOW at once); True when the relay's offset moved.

        Chunks travel in parallel to hide the relay's per-request cost; the
        relay still appends strictly in offset order, so a chunk that overtakes
        its predecessor is answered ``offset_gap`` and simply sent again.
        """
        size = self.spool_size()
        if self.acked >= size:
            return False
        start = self.acked
        offsets = list(range(start, min(size, start + WINDOW * CHUNK), CHUNK))
        fd = self._open()
        assert fd is not None  # spool_size() found it open

        def read() -> list[tuple[int, bytes]]:
            return [(o, os.pread(fd, min(CHUNK, size - o), o)) for o in offsets]

        # A few KiB of the drone's own regular file come from the page cache in microseconds:
        # read at once, not through a thread hop (most of a millisecond on a busy box, on the
        # path from a tiny task's exit to its finish); a bigger window is read off the loop.
        chunks = read() if size - start <= INLINE_READ else await asyncio.to_thread(read)
        results = await asyncio.gather(*(self._post(o, data) for o, data in chunks if data),
                                       return_exceptions=True)
        acked = [r[1] for r in results if isinstance(r, tuple) and r[0] == "ok"]
        gaps = [r[1] for r in results if isinstance(r, tuple) and r[0] == "gap"]
        if acked:
            self._advance(max(acked))
        elif gaps:
            # No chunk of this round landed: the relay's answer is the truth, even backwards.
            expected = max(gaps)
            if expected != self.acked:
                log.info("task %s %s: relay holds %d bytes, resuming there (was %d)",
                         self.task_id, self.stream, expected, self.acked)
            self._advance(expected)
        for result in results:
            if isinstance(result, TaskGone | StreamRefused):
                raise result
        if not acked and not gaps:
            failure = next((r for r in results if isinstance(r, BaseException)), None)
            if isinstance(failure, RelayUnavailable):
                raise failure
            if failure is not None:
                raise RelayUnavailable(f"log shipping failed: {failure!r}")
        return self.acked != start

    async def _post(self, offset: int, data: bytes) -> tuple[str, int]:
        params = {"task": self.task_id, "stream": self.stream, "offset": offset}
        response = await self.client.request("POST", "/v1/worker/log", params=params, body=data)
        if response.status_code == 200:
            return "ok", int(response.json()["next_offset"])
        code = error_code(response)
        if response.status_code == 409 and code == "offset_gap":
            return "gap", int(response.json()["expected"])
        if response.status_code == 409 and code == "task_finished":
            final = response.json().get("size")
            raise TaskFinished(f"relay closed task {self.task_id}'s {self.stream} at {final} "
                               f"bytes (the task finished); the spool holds {self.spool_size()}")
        if response.status_code == 404:
            raise TaskGone(f"relay does not know task {self.task_id}")
        if response.status_code == 422 and self.optional:
            raise StreamRefused(f"the relay takes no {self.stream} stream (HTTP 422 {code})")
        raise RelayUnavailable(f"log refused: HTTP {response.status_code} {code}")

    def _advance(self, offset: int) -> None:
        if offset < self._releaser.released:
            # Only if the relay lost bytes it had acknowledged as durable (a restored backup).
            log.error("task %s %s: relay asks again for bytes below %d, already released from "
                      "the spool; they arrive as zeros", self.task_id, self.stream,
                      self._releaser.released)
        self.acked = offset
        self._releaser.acknowledged(offset)
        if self._on_ack is not None:
            self._on_ack(self.stream, offset)

    async def run(self, exited: asyncio.Event, poke: Poke | None = None,
                  look_every: float = IDLE_POLL) -> None:
        """Ship until the task has exited and the relay holds every byte of the spool.

        A quiet spool is looked at again when ``poke`` is set (the spool changed, or the
        task exited: the runner pokes every shipper then) or after ``look_every`` seconds.
        """
        while not self.given_up:
            try:
                moved = await self.ship_once()
            except StreamRefused as exc:
                log.warning("task %s: %s; its %s is not shipped (upgrade the relay)",
                            self.task_id, exc, self.stream)
                self.given_up = True
                return
            except RelayUnavailable:
                await asyncio.sleep(self._backoff.next_delay())
                continue
            self._backoff.reset()
            if moved:
                continue
            if exited.is_set() and self.acked >= self.spool_size():
                return
            if poke is None:
                await asyncio.sleep(look_every)
            else:
                await poke.wait(look_every)


class AckedOffsets:
    """The relay's acknowledged offsets, kept in ``acked.json`` as a restart hint.

    Written at most once a second and without fsync: a stale hint only costs a
    409 ``offset_gap`` round trip, never a byte.
    """

    def __init__(self, path: Path, write: Callable[[Path, dict[str, int]], None]) -> None:
        self.path = path
        self._write = write
        self.offsets: dict[str, int] = {"stdout": 0, "stderr": 0, "order": 0}
        self._last_write = 0.0

    def update(self, stream: str, offset: int) -> None:
        self.offsets[stream] = offset
        now = time.monotonic()
        if now - self._last_write >= 1.0:
            self.flush()

    def flush(self) -> None:
        self._last_write = time.monotonic()
        self._write(self.path, dict(self.offsets))
