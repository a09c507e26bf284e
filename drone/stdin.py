"""A task's stdin, relay → spool file, only as fast as the task reads it.

The pilot's bytes wait at the relay (a bounded window, relay/stdin.py), sealed by the
pilot under the task key as records (shared/e2e.py, kind ``stdin``, name ``stdin``; the
last one final, at the pilot's EOF). The drone takes them with
``GET /v1/worker/tasks/{id}/stdin?offset=N`` (N counts stored, sealed bytes), opens them
in order with a ``RecordReader`` and appends the plaintext to the spool
``TASK_DIR/stdin``; the wrapper feeds the task's stdin pipe from that spool
(drone/wrapper.py) and publishes how far it got in ``TASK_DIR/stdin.fed``. The drone
fetches only while the spool holds less than ``AHEAD`` bytes the task has not read, so a
task that does not read leaves the bytes at the relay, the relay's window fills and the
pilot's upload waits.

Where the drone stands in the sealed stream is ``TASK_DIR/stdin.pos``: the stored offset
of the next record and that record's position (index, plaintext offset), written after
the record's plaintext is in the spool and before the next request, whose offset
acknowledges (and lets the relay drop) every stored byte below it. Requests start at a
record boundary only: a record the relay's answer cut is asked for again whole. So a
drone killed at any moment resumes at ``stdin.pos``, reopens what the relay still holds
from there, skips the plaintext the spool already has (its size), and every byte reaches
the task exactly once. At the final record the drone writes ``TASK_DIR/stdin.eof``
holding the total size, and the wrapper closes the pipe once it has fed that much.

A record that does not open, or stands where it does not belong (cut, reordered,
repeated, forged: ``E2EError``), or an end of stdin the relay claims without the pilot's
final record, stops the feed: the task reads EOF after the bytes that opened, never a
forged one, and the reason is written to ``TASK_DIR/stdin.note``, which the task's
finish carries as a note (drone/runner.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
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
from dragoon.drone.state import read_json, write_json
from dragoon.shared.e2e import (
    HEADER_BYTES,
    OVERHEAD,
    E2EError,
    Position,
    RecordReader,
    parse_header,
)

log = logging.getLogger("dragoon.drone")

SPOOL: Final = "stdin"
EOF_MARK: Final = "stdin.eof"
FED: Final = "stdin.fed"
POS: Final = "stdin.pos"
NOTE: Final = "stdin.note"
KIND: Final = "stdin"  # the stream of the task's records (shared/e2e.py)
NAME: Final = "stdin"
CHUNK: Final = 256 * 1024
AHEAD: Final = 1024 * 1024  # bytes fetched beyond what the task has read, at most (+ a chunk)
HOLD: Final = 20  # seconds the relay may hold a request while the pilot sends nothing
IDLE: Final = 0.05  # seconds between looks at a full spool where nothing says it drained
MAX_LIMIT: Final = 1 << 20  # the most the relay hands out in one answer


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


@dataclass(frozen=True)
class StreamPos:
    """Where the drone stands in the sealed stdin: ``stored`` bytes of it opened (a record
    boundary, the offset of the next request), and the next record's ``at``."""

    stored: int = 0
    at: Position = field(default_factory=Position)

    def to_json(self) -> dict[str, int]:
        return {"stored": self.stored, "index": self.at.index, "offset": self.at.offset}

    @classmethod
    def load(cls, task_dir: Path) -> StreamPos:
        raw = read_json(task_dir / POS)
        if not isinstance(raw, dict):
            return cls()
        try:
            values = [int(raw[k]) for k in ("stored", "index", "offset")]
        except (KeyError, TypeError, ValueError):
            return cls()
        return cls(values[0], Position(values[1], values[2]))


def stdin_note(task_dir: Path) -> str | None:
    """Why the drone stopped feeding the task's stdin early, if it did (for its notes)."""
    raw = read_json(task_dir / NOTE)
    note = raw.get("note") if isinstance(raw, dict) else None
    return note if isinstance(note, str) else None


class StdinFetcher:
    """Keeps the spool ``AHEAD`` bytes ahead of the task, until the pilot's eof."""

    def __init__(self, client: RelayLink, *, task_id: str, task_dir: Path,
                 task_key: bytes | None) -> None:
        self.client = client
        self.task_id = task_id
        self.dir = task_dir
        self.task_key = task_key
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
            if self.task_key is None:
                self._stop(found.st_size, "the drone holds no task key to open the pilot's "
                                          "stdin with")
                return
            await self._loop(fd, found.st_size, exited, fed, look_every)
        except DroneReplaced:
            return  # the daemon says why and stops; the task gets no more stdin from here
        finally:
            os.close(fd)

    def _stop(self, spool: int, why: str) -> None:
        """The task reads EOF after the ``spool`` bytes it has; ``why`` goes to its notes."""
        log.error("task %s: stdin stopped after %d bytes: %s", self.task_id, spool, why)
        write_json(self.dir / NOTE, {"note": f"stdin stopped after {spool} bytes: {why}"})
        write_json(self.dir / EOF_MARK, {"size": spool})

    async def _loop(self, fd: int, spool: int, exited: asyncio.Event, fed: Poke | None,
                    look_every: float) -> None:
        assert self.task_key is not None
        pos = StreamPos.load(self.dir)
        need = 0  # the stored size of a record the last answer held only part of
        while not exited.is_set():
            room = AHEAD - (spool - fed_offset(self.dir))
            if room <= 0:
                if fed is None:
                    await asyncio.sleep(look_every)
                else:
                    await fed.wait(look_every)
                continue
            limit = min(MAX_LIMIT, max(min(CHUNK, room) + OVERHEAD, need))
            params = {"offset": pos.stored, "limit": limit, "wait": HOLD}
            try:
                response = await self.client.request(
                    "GET", f"/v1/worker/tasks/{self.task_id}/stdin", params=params,
                    read_timeout=HOLD + 30.0)
            except RelayUnavailable:
                await asyncio.sleep(self._backoff.next_delay())
                continue
            if response.status_code != 200:
                self._backoff.reset()
                if not await self._refused(response):
                    if error_code(response) == "offset_gap":
                        # Bytes are lost for good (a relay restored from a backup): the task
                        # reads EOF after what it has, rather than wait for ever.
                        self._stop(spool, "the relay no longer holds the stdin this drone "
                                          "had not taken")
                    return
                continue
            if response.headers.get("X-Dragoon-Offset") != str(pos.stored):
                log.warning("task %s: the relay answered stdin for another offset; asking again",
                            self.task_id)
                await asyncio.sleep(self._backoff.next_delay())
                continue
            data = response.content
            reader = RecordReader(self.task_key, task_id=self.task_id, kind=KIND, name=NAME,
                                  at=pos.at, consumed=pos.stored)
            plaintext, rest, broken = _open_whole(reader, data)
            progressed = reader.consumed > pos.stored
            if progressed:
                self._backoff.reset()
                # A drone killed after the spool write and before stdin.pos has these bytes
                # once: what the spool already holds of them is skipped.
                skip = max(0, spool - pos.at.offset)
                if len(plaintext) > skip:
                    await asyncio.to_thread(_write_all, fd, plaintext[skip:])
                spool = max(spool, pos.at.offset + len(plaintext))
                pos = StreamPos(reader.consumed, reader.position)
                write_json(self.dir / POS, pos.to_json(), durable=False)
            if broken is not None:
                self._stop(spool, broken)  # after the records that opened, none of the rest
                return
            if reader.finished:
                write_json(self.dir / EOF_MARK, {"size": spool})
                log.info("task %s: stdin closed by the pilot after %d bytes", self.task_id,
                         spool)
                return
            if response.headers.get("X-Dragoon-Eof") == "1":
                self._stop(spool, f"{reader.where}: the relay closed stdin without the pilot's "
                                  "final record (cut)")
                return
            # A record the answer held only part of is asked for again from its start, whole:
            # a request's offset must never acknowledge bytes not yet in the spool.
            need = 0 if not rest else (HEADER_BYTES + CHUNK if len(rest) < HEADER_BYTES
                                       else parse_header(rest).record_size)
            if need > MAX_LIMIT:
                self._stop(spool, f"{reader.where}: a record claims {need} bytes, more than "
                                  "the relay hands out at once")
                return
            if not progressed and data and len(data) < limit:
                # Less than asked and no whole record: the relay holds a part of one only
                # (the pilot posts whole records). Not worth hammering on.
                await asyncio.sleep(self._backoff.next_delay())

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


def _open_whole(reader: RecordReader, data: bytes) -> tuple[bytes, bytes, str | None]:
    """Open the whole records in ``data`` one by one: the plaintext of those that opened,
    the bytes of a record begun but not whole, and why the stream broke, if it did (the
    records before the one that broke are the pilot's, and still fed)."""
    out: list[bytes] = []
    used = 0
    try:
        while len(data) - used >= HEADER_BYTES and not reader.finished:
            size = parse_header(data[used:used + HEADER_BYTES]).record_size
            if len(data) - used < size:
                break
            out.append(reader.feed(data[used:used + size]))
            used += size
    except E2EError as exc:
        detail = exc.detail if exc.detail.startswith(reader.where) else (
            f"{reader.where}: {exc.detail}")
        return b"".join(out), b"", detail
    return b"".join(out), data[used:], None


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
