"""Sealing one output stream on the drone: the wrapper's plaintext spool → a spool of records.

The wrapper (stdlib only, it cannot seal) writes the task's stdout, stderr and
their order to plaintext spools in the task dir. Before anything is shipped, the
shipper calls ``SealedSpool.seal_new``: the plaintext not yet sealed becomes
records (shared/e2e.py, kind ``out``, name = the stream) appended to a sealed
spool beside it (``stdout.rec``), and only that file is shipped, by byte offset
exactly as before, so the relay's offsets are offsets in the sealed stream and a
resend after a lost answer is still the same bytes.

Exactly once across a crash: the sealed spool is the truth. A restarted drone
walks its records by their clear headers (``e2e.parse_header``; from a
checkpoint, ``stdout.rec.json``, when there is one) and learns the next record's
index, the plaintext offset sealed so far, and whether the final record is
written; a torn tail (a record half written when the drone died) was never
shipped, since a record is written whole before the shipper reads it, and is cut
off. Sealing then goes on from that plaintext offset, so no byte is sealed twice
and none is skipped.

Once the task has exited every byte is in the plaintext spool (the wrapper drains
the pipes before it writes exit.json): the rest is sealed and the last record is
marked final, or an empty final record is added — exactly once, since a resumed
spool knows it has one. A plaintext spool the drone may not read (the task put a
FIFO or a symlink there) is an empty stream, still ended by its final record.

Disk: the plaintext below what is sealed is punched out (drone/release.py) once
the sealed spool is synced, and the sealed spool below what the relay holds, once
a durable checkpoint past it exists (a resume never walks a punched region).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
import time
from pathlib import Path
from typing import Final

from dragoon.drone import safefile
from dragoon.drone.release import Releaser
from dragoon.drone.state import read_json, write_json
from dragoon.shared import e2e

log = logging.getLogger("dragoon.drone")

RECORD: Final = 256 * 1024  # plaintext in one record at most
# Plaintext sealed in one call: the shipper calls again each round, and seals no further
# ahead of what the relay holds than its own bound (shipper.SEAL_AHEAD), so a task writing
# gigabytes costs one record of memory and a few MiB of sealed spool, not a copy of it all.
SEAL_STEP: Final = 4 * RECORD
CHECKPOINT_EVERY: Final = 1.0  # seconds between (non-durable) checkpoints
SUFFIX: Final = ".rec"


class SealedSpool:
    """The sealed spool of one stream: ``size`` bytes of whole records, ``finished`` once the
    final record is among them."""

    def __init__(self, *, task_key: bytes, task_id: str, stream: str, plain: Path,
                 sealed: Path | None = None) -> None:
        self.task_id = task_id
        self.stream = stream
        self.plain = plain
        self.path = sealed if sealed is not None else plain.with_name(plain.name + SUFFIX)
        self.checkpoint_path = self.path.with_name(self.path.name + ".json")
        self._key = task_key
        self._plain_fd: int | None = None
        self._plain_refused = False
        self._fd: int | None = None
        self._writer: e2e.RecordWriter | None = None
        self._size = 0  # whole records in the sealed spool (once it is opened)
        self._last_checkpoint = 0.0
        self._checkpointed = 0  # the sealed size the checkpoint on disk names
        self._plain_releaser = Releaser(plain, before_punch=self._sync)
        self._lock = threading.Lock()
        self._closed = False

    # -- opening and resuming ------------------------------------------------------------------

    def fd(self) -> int:
        """The sealed spool's fd, opened (and resumed) on first need."""
        if self._fd is None:
            self._resume()
        assert self._fd is not None
        return self._fd

    @property
    def size(self) -> int:
        """Bytes of whole records in the sealed spool: what may be shipped."""
        self.fd()
        return self._size

    @property
    def finished(self) -> bool:
        self.fd()
        assert self._writer is not None
        return self._writer.finished

    @property
    def sealed_plain(self) -> int:
        """Plaintext bytes sealed so far."""
        self.fd()
        assert self._writer is not None
        return self._writer.position.offset

    def _open(self) -> int:
        """The drone's own file in its own task dir; never what the task may have put there
        (a symlink, a FIFO): that is removed, and the stream starts again from nothing."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(self.path, flags, 0o600)
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return fd
            os.close(fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                raise
        log.warning("task %s %s: %s is not the drone's sealed spool any more; starting it "
                    "again", self.task_id, self.stream, self.path)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.checkpoint_path.unlink(missing_ok=True)
        return os.open(self.path, flags | os.O_EXCL, 0o600)

    def _resume(self) -> None:
        fd = self._open()
        try:
            size = os.fstat(fd).st_size
            start, at, final = self._checkpoint(size)
            used, at, final = _walk(fd, size, start, at, final)
            if used < size:
                log.info("task %s %s: cutting a torn record off the sealed spool (%d bytes "
                         "past %d)", self.task_id, self.stream, size - used, used)
                os.ftruncate(fd, used)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._size = used
        self._writer = e2e.RecordWriter(self._key, task_id=self.task_id, kind="out",
                                        name=self.stream, at=at)
        self._writer.finished = final

    def _checkpoint(self, size: int) -> tuple[int, e2e.Position, bool]:
        """Where to start walking: the checkpoint if it holds, else the spool's start."""
        saved = read_json(self.checkpoint_path)
        if isinstance(saved, dict):
            try:
                start = int(saved["size"])
                at = e2e.Position(int(saved["index"]), int(saved["offset"]))
                final = saved["final"] is True
            except (KeyError, TypeError, ValueError):
                return 0, e2e.Position(), False
            if 0 <= start <= size:
                return start, at, final
        return 0, e2e.Position(), False

    def checkpoint(self, *, durable: bool = False) -> None:
        if self._writer is None:
            return
        self._last_checkpoint = time.monotonic()
        self._checkpointed = self._size
        at = self._writer.position
        write_json(self.checkpoint_path, {"size": self._size, "index": at.index,
                                          "offset": at.offset, "final": self._writer.finished},
                   durable=durable)

    def _sync(self) -> None:
        """Before plaintext is punched out: the records holding it are on disk for good."""
        os.fdatasync(self.fd())
        self.checkpoint(durable=True)

    # -- sealing ---------------------------------------------------------------------------

    def _plain_size(self) -> int:
        if self._plain_fd is None and not self._plain_refused:
            try:
                self._plain_fd, _ = safefile.open_regular(self.plain)
            except FileNotFoundError:
                return 0
            except OSError as exc:  # NotRegular included
                self._plain_refused = True
                log.warning("task %s %s: the spool %s is %s; its output cannot be shipped",
                            self.task_id, self.stream, self.plain, exc)
        if self._plain_fd is None:
            return 0
        return os.fstat(self._plain_fd).st_size

    def pending(self) -> int:
        """Plaintext bytes written and not yet sealed."""
        return max(0, self._plain_size() - self.sealed_plain)

    def seal_new(self, *, exited: bool, limit: int = SEAL_STEP) -> bool:
        """Seal what the wrapper wrote since, at most ``limit`` bytes of it; with ``exited``,
        end the stream once all of it is sealed. True if the sealed spool grew. May run in a
        thread: ``close`` waits for it (a shipper cancelled meanwhile must not close fds
        under it). Records go to the spool one by one, so memory stays at one record
        whatever the task writes."""
        with self._lock:
            return self._seal_new(exited, limit)

    def _seal_new(self, exited: bool, limit: int) -> bool:
        if self._closed:
            return False
        fd = self.fd()
        writer = self._writer
        assert writer is not None
        if writer.finished:
            return False
        end = self._plain_size()
        start = writer.position.offset
        stop = min(end, start + max(limit, 1))
        grew = False
        while start < stop:
            assert self._plain_fd is not None
            piece = os.pread(self._plain_fd, min(RECORD, stop - start), start)
            if not piece:
                break
            start += len(piece)
            record = writer.seal(piece, final=exited and start >= end)
            _write_all(fd, self._size, record)
            self._size += len(record)
            grew = True
        if exited and not writer.finished and start >= end:
            record = writer.seal(b"", final=True)
            _write_all(fd, self._size, record)
            self._size += len(record)
            grew = True
        if not grew:
            if self._checkpointed != self._size and \
                    time.monotonic() - self._last_checkpoint >= CHECKPOINT_EVERY:
                self.checkpoint()  # a quiet stream's last records are in it too, in time
            return False
        if writer.finished or time.monotonic() - self._last_checkpoint >= CHECKPOINT_EVERY:
            self.checkpoint()
        self._plain_releaser.acknowledged(writer.position.offset)
        return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for fd in (self._fd, self._plain_fd):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._fd = self._plain_fd = None


def _walk(fd: int, size: int, start: int, at: e2e.Position,
          final: bool) -> tuple[int, e2e.Position, bool]:
    """Whole records from ``start`` by their clear headers (the drone trusts its own disk):
    the bytes they end at, the position after them, and whether the last was final."""
    used = start
    while not final and size - used >= e2e.HEADER_BYTES:
        try:
            header = e2e.parse_header(os.pread(fd, e2e.HEADER_BYTES, used))
        except e2e.E2EError:
            break  # not a record: a torn or damaged tail, cut off
        if size - used < header.record_size or header.index != at.index \
                or header.offset != at.offset:
            break
        used += header.record_size
        at, final = header.after, header.final
    return used, at, final


def _write_all(fd: int, offset: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
