"""An append-only store of a task's output lines with flat memory.

A training run can print millions of lines; keeping them as Python strings
would cost ~100 bytes a line and make the cockpit the heaviest process on the
pilot's laptop. Like toolong, we keep the bytes in a spool file and only an
index of line offsets in memory (9 bytes a line); the view reads the few lines
it shows with `pread` and caches their rendering.

stdout and stderr arrive as separate byte streams (each addressed by offset on
the relay); lines are interleaved in arrival order and tagged with their
stream. A line that has not ended yet is held per stream and shown as the
tail of the view until its newline arrives.
"""

from __future__ import annotations

import os
import tempfile
from array import array
from bisect import bisect_right
from itertools import accumulate, islice
from typing import Final

from dragoon.cockpit.safe_text import clean

STDOUT: Final = 0
STDERR: Final = 1
_STREAMS: Final = {"stdout": STDOUT, "stderr": STDERR}
_SEARCH_CHUNK: Final = 4 << 20


def clean_line(raw: bytes) -> str:
    """Bytes of one line as the terminal would leave it: last `\\r` segment, tabs expanded.

    Then the one rule for untrusted text (cockpit/safe_text.py): a task's output
    is the task's to write, not to steer the pilot's terminal with, so an escape
    shows as ␛ (and keeps cell widths), a bidi override as �.
    """
    text = raw.decode("utf-8", "replace").rstrip("\r\n")
    if "\r" in text:
        text = text.rsplit("\r", 1)[-1]
    return clean(text.expandtabs(8))


class LogBuffer:
    """Lines of stdout and stderr, spooled to disk, indexed by number.

    `max_lines` bounds the index: past it the oldest tenth is forgotten and
    `dropped` counts how many, so memory stays flat whatever the task prints.
    """

    def __init__(self, *, max_lines: int = 20_000_000) -> None:
        self._file = tempfile.TemporaryFile(prefix="dragoon-log-")  # noqa: SIM115 - owned here
        self._fd = self._file.fileno()
        self._end = 0
        self._starts = array("q")  # byte offset of each line in the spool
        self._streams = array("B")
        self._partial: dict[int, bytearray] = {STDOUT: bytearray(), STDERR: bytearray()}
        self.max_lines = max_lines
        self.dropped = 0
        self.max_width = 0
        self.received = {"stdout": 0, "stderr": 0}  # bytes per stream: the follow offsets
        self.generation = 0  # bumped when indices shift (lines dropped), to invalidate caches

    def close(self) -> None:
        self._file.close()

    # ------------------------------------------------------------------ writing

    def append(self, stream: str, data: bytes) -> int:
        """Add a chunk of `stream`; returns how many complete lines it finished."""
        if not data:
            return 0
        self.received[stream] = self.received.get(stream, 0) + len(data)
        code = _STREAMS[stream]
        partial = self._partial[code]
        partial += data
        last_nl = partial.rfind(b"\n")
        if last_nl < 0:
            self.max_width = max(self.max_width, len(partial))
            return 0
        block = bytes(partial[: last_nl + 1])
        del partial[: last_nl + 1]
        base = self._end
        os.pwrite(self._fd, block, base)
        self._end += len(block)
        starts = self._starts
        lengths = [len(part) + 1 for part in block.split(b"\n")[:-1]]
        count = len(lengths)
        starts.extend(islice(accumulate(lengths, initial=base), count))
        self._streams.extend(bytes([code]) * count)
        self.max_width = max(self.max_width, max(lengths) - 1)
        if len(starts) > self.max_lines:
            self._drop(max(len(starts) - self.max_lines, self.max_lines // 10))
        return count

    def _drop(self, count: int) -> None:
        del self._starts[:count]
        del self._streams[:count]
        self.dropped += count
        self.generation += 1

    # ------------------------------------------------------------------ reading

    @property
    def complete_lines(self) -> int:
        return len(self._starts)

    def _tails(self) -> list[int]:
        return [code for code in (STDOUT, STDERR) if self._partial[code]]

    def __len__(self) -> int:
        return len(self._starts) + len(self._tails())

    def line(self, index: int) -> tuple[int, str]:
        """(stream code, text) of line `index` (0 is the oldest line still kept)."""
        count = len(self._starts)
        if index < count:
            start = self._starts[index]
            end = self._starts[index + 1] if index + 1 < count else self._end
            return self._streams[index], clean_line(os.pread(self._fd, end - start, start))
        tails = self._tails()
        code = tails[index - count]
        return code, clean_line(bytes(self._partial[code]))

    def find(self, query: str, start: int, *, backwards: bool = False) -> int | None:
        """Index of the next line at or after `start` (before it, backwards) containing
        `query`, case-insensitively; scans the spool in large blocks, not line by line."""
        needle = query.lower().encode()
        count = len(self._starts)
        if not needle or count == 0:
            return None
        if backwards:
            return self._find_backwards(needle, min(start, count - 1))
        if start >= count:
            return None
        pos = self._starts[max(start, 0)]
        while pos < self._end:
            size = min(_SEARCH_CHUNK, self._end - pos)
            block = os.pread(self._fd, size + len(needle), pos).lower()
            hit = block.find(needle)
            if hit >= 0 and hit < size + len(needle):
                return bisect_right(self._starts, pos + hit) - 1
            pos += size
        return None

    def _find_backwards(self, needle: bytes, start: int) -> int | None:
        if start < 0:
            return None
        end = self._starts[start + 1] if start + 1 < len(self._starts) else self._end
        first = self._starts[0]
        while end > first:
            pos = max(first, end - _SEARCH_CHUNK)
            block = os.pread(self._fd, end - pos, pos).lower()
            hit = block.rfind(needle)
            if hit >= 0:
                return bisect_right(self._starts, pos + hit) - 1
            end = pos + len(needle) - 1 if pos > first else first
        return None

    def memory_bytes(self) -> int:
        """What the index and the unfinished lines hold in memory (the spool is on disk)."""
        return (self._starts.itemsize * len(self._starts) + len(self._streams)
                + sum(len(p) for p in self._partial.values()))
