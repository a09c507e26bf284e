"""``dragoon run``'s stdin: whether the task gets it (ssh's rules), and the upload.

``ssh host cmd`` forwards its stdin. dragoon does too, with one difference
that ssh users ask for with ``ssh -n`` or ``< /dev/null`` anyway: a terminal
is not forwarded unless ``-i`` says so, because a task that never reads would
otherwise leave the pilot's keystrokes stolen, and a forgotten ``run box --
cat`` would wait for input nobody sees it wanting. So (docs/cli.md, "Stdin"):

- ``-n``: no stdin, from anything (``ssh -n``); the task reads EOF.
- ``-i``: forward stdin, a terminal included (type, then Ctrl-D for EOF).
- neither: forward a pipe, a file, a socket; a terminal, /dev/null or a closed
  fd 0 give the task EOF at once without a stdin stream at all.

Ctrl-C (detaching) closes the task's stdin after what the relay already took,
so the task reads EOF instead of waiting for a pilot who left.

The upload reads fd 0 in a daemon thread (a read that blocks on a terminal
must never keep the CLI from exiting) at most two chunks ahead of what the
relay took, seals each chunk under the task key as one record (shared/e2e.py,
kind ``stdin``, name ``stdin``; the last one, at EOF or at a detach, final) and
posts it at its stored offset: the relay answers the next offset, holds the
record while its window is full, and a resend after a lost answer is
acknowledged, never stored twice. The relay's offsets count sealed bytes; the
drone opens the records in order and feeds their plaintext (drone/stdin.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import stat
import threading
from typing import Final

import click
from dragoon.cockpit.cli._common import OneLineUsageError
from dragoon.cockpit.cli._follow import on_retry
from dragoon.cockpit.client import Backoff, RelayClient, RelayError
from dragoon.cockpit.safe_text import clean
from dragoon.shared.e2e import OVERHEAD, Position, RecordWriter

UPLOAD: Final = 256 * 1024  # the relay's chunk cap (max_log_chunk): one record a POST
CHUNK: Final = UPLOAD - OVERHEAD  # plaintext read at once: its record is one upload
KIND: Final = "stdin"  # the stream the drone opens (drone/stdin.py)
NAME: Final = "stdin"


def wants_stdin(*, interactive: bool, no_stdin: bool, fd: int = 0) -> bool:
    """Whether the task reads ``fd``: the rules above."""
    if interactive and no_stdin:
        raise OneLineUsageError("-i/--stdin and -n/--no-stdin contradict each other")
    if no_stdin:
        return False
    try:
        found = os.fstat(fd)
    except OSError:
        return False  # fd 0 is closed
    if interactive:
        return True
    if os.isatty(fd):
        return False
    if stat.S_ISCHR(found.st_mode):
        with contextlib.suppress(OSError):
            null = os.stat(os.devnull)
            if (found.st_dev, found.st_ino) == (null.st_dev, null.st_ino):
                return False
    return True


def _notice(message: str) -> None:
    click.echo(f"dragoon: {clean(message)}", err=True)


def _start_reader(fd: int, loop: asyncio.AbstractEventLoop,
                  chunks: asyncio.Queue[bytes]) -> None:
    def read() -> None:
        while True:
            try:
                data = os.read(fd, CHUNK)
            except OSError:
                data = b""  # a hung-up terminal: EOF
            try:
                asyncio.run_coroutine_threadsafe(chunks.put(data), loop).result()
            except (RuntimeError, concurrent.futures.CancelledError):
                return  # the CLI is done with stdin
            if not data:
                return

    threading.Thread(target=read, name="stdin-reader", daemon=True).start()


class StdinFeed:
    """The upload of fd 0 to one task's stdin; ``offset`` is what the relay has taken (in
    sealed bytes), ``positions`` the stream position at each record boundary the pilot
    sealed, so a final record can be sealed where the relay says the stream stands."""

    def __init__(self, client: RelayClient, task_id: str, fd: int = 0) -> None:
        self.client = client
        self.task_id = task_id
        self.fd = fd
        self.offset = 0
        self.closed = False
        self.positions: dict[int, Position] = {0: Position()}
        self._key: bytes | None = None

    async def _task_key(self) -> bytes | None:
        """The key the task was sealed with: this pilot sealed it (or can open it)."""
        if self._key is None:
            with contextlib.suppress(RelayError):
                self._key = await self.client._task_key(self.task_id)
        return self._key

    def _writer(self, key: bytes, offset: int) -> RecordWriter | None:
        at = self.positions.get(offset)
        if at is None:
            return None
        return RecordWriter(key, task_id=self.task_id, kind=KIND, name=NAME, at=at)

    def _sealed(self, writer: RecordWriter, offset: int, data: bytes, *, final: bool
                ) -> bytes:
        record = writer.seal(data, final=final)
        # Only the boundaries still ahead of the relay's offset can be asked for again.
        self.positions = {k: v for k, v in self.positions.items() if k >= offset}
        self.positions[offset + len(record)] = writer.position
        return record

    async def run(self) -> None:
        """Send ``fd`` until EOF; quiet when the task is over first."""
        key = await self._task_key()
        if key is None:
            _notice(f"stdin for {self.task_id} not sent: this pilot cannot open the task "
                    "(no task key to seal it with)")
            self.closed = True
            return
        writer = RecordWriter(key, task_id=self.task_id, kind=KIND, name=NAME)
        chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        _start_reader(self.fd, asyncio.get_running_loop(), chunks)
        backoff = Backoff(on_retry=on_retry)
        while True:
            data = await chunks.get()
            eof = not data
            record = self._sealed(writer, self.offset, data, final=eof)
            try:
                self.offset = await _send(self.client, self.task_id, self.offset, record, eof,
                                          backoff)
            except RelayError as exc:
                if exc.code not in ("task_finished", "stdin_closed"):
                    _notice(f"stdin for {self.task_id} stopped: {exc.detail}")
                self.closed = True
                return
            if eof:
                self.closed = True
                return

    async def close(self) -> None:
        """Detaching: the task reads EOF after what it was sent, rather than wait for ever.

        An empty final record, sealed at the position of the relay's offset (a record
        boundary this pilot sealed). Best effort, a few quick tries: the pilot is leaving,
        and a task that ended meanwhile needs nothing.
        """
        if self.closed or self._key is None:
            return
        offset = self.offset
        for _ in range(3):
            writer = self._writer(self._key, offset)
            if writer is None:
                return  # not a boundary this pilot sealed: nothing to close it with
            record = writer.seal(b"", final=True)
            try:
                answer = await self.client.send_stdin(task_id=self.task_id, offset=offset,
                                                      data=record, eof=True, wait=0)
            except RelayError as exc:
                expected = (exc.body or {}).get("expected")
                if exc.code == "offset_gap" and isinstance(expected, int):
                    offset = expected
                    continue
                return
            if answer.eof:
                self.closed = True
                return
            offset = answer.next_offset  # a chunk in flight landed: close after it


async def _send(client: RelayClient, task_id: str, offset: int, data: bytes, eof: bool,
                backoff: Backoff) -> int:
    """One chunk, until the relay holds it: the offset after it."""
    start, pending = offset, data
    while True:
        try:
            answer = await client.send_stdin(task_id=task_id, offset=start, data=pending,
                                             eof=eof)
        except RelayError as exc:
            if exc.code == "window_full":
                backoff.reset()  # the relay held it as long as it may: simply ask again
                continue
            expected = (exc.body or {}).get("expected")
            if exc.code == "offset_gap" and isinstance(expected, int) \
                    and start <= expected <= start + len(pending) and expected != start:
                pending, start = pending[expected - start:], expected
                continue
            await backoff.wait(exc)  # raises what is not worth retrying
            continue
        backoff.reset()
        return answer.next_offset
