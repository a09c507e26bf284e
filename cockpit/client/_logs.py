"""Opening a task's output on the pilot's side: the relay's stored records → plaintext.

The drone seals stdout, stderr and their order as records (shared/e2e.py, kind
``out``) and the relay stores those bytes without reading them. A read of the
relay's ``/log`` is fed to one ``RecordReader`` per (task, stream), which opens
each record under the task key and checks it holds where it stands; what the
pilot is given is the plaintext of whole records, and the offsets it is told
(``next_offset``) are stored offsets at record boundaries, so a follower that
resumes from one starts on a record. A reader is kept per boundary it handed out
(``Marks``): a read that starts on one continues that reader's sequence, one
that starts at 0 begins a new one, and any other offset is refused, since a
record cannot be checked from the middle of a stream.

At the relay's end of the stream (``eof``) the final record must have been
opened; if it was not, the output was cut: by the relay's output cap when the
relay says so out of band (``X-Dragoon-Truncated``, with the cap: ``cut_at``),
otherwise by whoever altered the stream (``E2EError``). Nothing after a record
that fails is ever handed out.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from dragoon.shared import e2e

MARKS_KEPT: Final = 64  # boundaries remembered per client: the followers in flight, and then some
KIND: Final = "out"


@dataclass(frozen=True)
class _Mark:
    position: e2e.Position
    finished: bool
    error: e2e.E2EError | None = None  # what the next read from here raises


class Marks:
    """The record boundaries this client handed out, per (task, stream): where reads resume."""

    def __init__(self) -> None:
        self._marks: OrderedDict[tuple[str, str, int], _Mark] = OrderedDict()

    def reader(self, task_key: bytes, *, task_id: str, stream: str,
               offset: int) -> e2e.RecordReader:
        if offset == 0:
            mark = _Mark(e2e.Position(), False)
        else:
            found = self._marks.get((task_id, stream, offset))
            if found is None:
                raise e2e.E2EError(
                    f"task {task_id} {stream}: offset {offset} is not a record boundary this "
                    "client has read to; read the stream from 0")
            mark = found
        if mark.error is not None:
            raise mark.error
        reader = e2e.RecordReader(task_key, task_id=task_id, kind=KIND, name=stream,
                                  at=mark.position, consumed=offset)
        reader.finished = mark.finished
        return reader

    def remember(self, task_id: str, stream: str, reader: e2e.RecordReader,
                 error: e2e.E2EError | None = None) -> None:
        """A boundary handed out; with ``error``, the record there did not open: a read from
        it raises that (after the records before it were handed out)."""
        key = (task_id, stream, reader.consumed)
        self._marks[key] = _Mark(reader.position, reader.finished, error)
        self._marks.move_to_end(key)
        while len(self._marks) > MARKS_KEPT:
            self._marks.popitem(last=False)


def open_records(reader: e2e.RecordReader, stored: bytes) -> tuple[bytes, bytes,
                                                                    e2e.E2EError | None]:
    """Feed ``reader`` the whole records of ``stored``, one at a time: the plaintext of those
    that opened, the bytes of a record not whole yet, and the error of the first that did not
    open (its plaintext and everything after it are dropped)."""
    out: list[bytes] = []
    used = 0
    while len(stored) - used >= e2e.HEADER_BYTES:
        try:
            size = e2e.parse_header(stored[used:used + e2e.HEADER_BYTES]).record_size
        except e2e.E2EError:
            size = len(stored) - used  # the reader says why, in its words
        if len(stored) - used < size:
            break
        try:
            out.append(reader.feed(stored[used:used + size]))
        except e2e.E2EError as error:
            return b"".join(out), b"", error
        used += size
    return b"".join(out), stored[used:], None


def check_end(reader: e2e.RecordReader, *, partial: int, cut_at: int | None,
              state: str | None) -> None:
    """At the relay's end of the stream: the final record was opened and nothing follows it,
    unless the relay's cap cut the stream (said out of band, ``cut_at``), or the drone never
    finished the task: a ``lost`` task's output ends where its drone stopped, and a task
    that ended without running (cancelled while queued, refused by its drone) has none."""
    if cut_at is not None:
        return
    if not reader.finished and (state == "lost" or (
            state != "succeeded" and reader.consumed == 0 and not partial)):
        return
    if not reader.finished:
        raise e2e.E2EError(f"{reader.where}: the stream ends without its final record (cut "
                           "short); the relay altered the stream, nothing after this point "
                           "is shown")
    if partial:
        raise e2e.E2EError(f"{reader.where}: bytes after the final record; the relay altered "
                           "the stream, nothing after this point is shown")


def cut_notice(cap: int) -> str:
    """What the pilot is told where the relay's cap ended the output."""
    return f"[dragoon: output cut at the relay's cap of {cap} bytes]"
