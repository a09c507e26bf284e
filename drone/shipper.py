"""Shipping one output stream of one task: spool file → relay, exactly once, in order.

The wrapper writes the task's stdout/stderr, and their ``order`` (shared/
order.py), to plaintext spool files; each is sealed into records beside it
(drone/sealer.py: the relay reads none of it) and this ships the sealed spool
from the offset the relay has acknowledged, in chunks of at most 256 KiB with
their offset (a chunk need not end on a record: the relay stores bytes). The
relay appends a chunk only at its current length, so a resend after a lost
answer is acknowledged, not appended twice, and a 409
``offset_gap`` tells the shipper where the relay really is. At most WINDOW
chunks are in flight per stream, so memory stays flat whatever the task
writes; small writes that arrive meanwhile go out together in the next round.

The plaintext spool is opened once, without following a symlink or waiting on a
FIFO (``drone/safefile.py``), and read through that fd: the task writes to the
very inode the drone reads, so a task that deletes or replaces its spool file
loses nothing it wrote to its stdout, and nothing the task puts at that path can
stall the drone.

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

from dragoon.drone.client import JitteredBackoff, RelayLink, RelayUnavailable, error_code
from dragoon.drone.dirwatch import Poke
from dragoon.drone.release import Releaser
from dragoon.drone.sealer import RECORD, SealedSpool

log = logging.getLogger("dragoon.drone")

CHUNK: Final = 256 * 1024
WINDOW: Final = 4  # chunks in flight per stream: memory stays at WINDOW * CHUNK
# Seconds between looks at a quiet spool where nothing tells the shipper that it grew (no
# inotify: drone/dirwatch.py); with inotify the wrapper's writes wake it, and it looks on its
# own only every dirwatch.SAFETY_LOOK.
IDLE_POLL: Final = 0.025
INLINE_READ: Final = 64 * 1024  # a window this small is read on the loop (ship_once)
SEAL_AHEAD: Final = 2 * WINDOW * CHUNK  # sealed, not yet acknowledged: at most this much


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
        sealer: SealedSpool,
        acked: int = 0,
        on_ack: Callable[[str, int], None] | None = None,
        optional: bool = False,
    ) -> None:
        self.client = client
        self.task_id = task_id
        self.stream = stream
        self.sealer = sealer
        self.spool = sealer.path
        self.acked = acked
        self._on_ack = on_ack
        # A durable checkpoint past the punched region first: a resume never walks zeros.
        self._releaser = Releaser(sealer.path,
                                  before_punch=lambda: sealer.checkpoint(durable=True))
        self._backoff = JitteredBackoff()
        # An optional stream (``order``) the relay refuses is given up, not retried for ever:
        # the task's output must not wait on its order.
        self.optional = optional
        self.given_up = False

    def spool_size(self) -> int:
        """Bytes in the sealed spool: whole records."""
        return self.sealer.size

    def close(self) -> None:
        self.sealer.close()

    async def seal(self, exited: bool) -> None:
        """Seal what the wrapper wrote since (off the loop when it is more than a little),
        but no further than SEAL_AHEAD past what the relay holds: the sealed spool is a
        window over the output, not a second copy of it."""
        room = SEAL_AHEAD - (self.sealer.size - self.acked)
        if room <= 0 or (room < RECORD and self.sealer.pending() > room):
            return  # wait for the relay's acks rather than seal a sliver of a record
        if self.sealer.pending() <= INLINE_READ:
            self.sealer.seal_new(exited=exited, limit=room)
        else:
            await asyncio.to_thread(self.sealer.seal_new, exited=exited, limit=room)

    async def ship_once(self, exited: bool = False) -> bool:
        """Seal what is new (``exited``: and end the stream), then send the next chunks of
        the sealed spool (up to WINDOW at once); True when the relay's offset moved.

        Chunks travel in parallel to hide the relay's per-request cost; the
        relay still appends strictly in offset order, so a chunk that overtakes
        its predecessor is answered ``offset_gap`` and simply sent again.
        """
        await self.seal(exited)
        size = self.spool_size()
        if self.acked >= size:
            return False
        start = self.acked
        offsets = list(range(start, min(size, start + WINDOW * CHUNK), CHUNK))
        fd = self.sealer.fd()

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
                      "the spool; they arrive as zeros (the pilot sees a stream that does not "
                      "open)", self.task_id, self.stream, self._releaser.released)
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
                moved = await self.ship_once(exited.is_set())
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
            if exited.is_set() and self.sealer.finished and self.acked >= self.spool_size():
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
