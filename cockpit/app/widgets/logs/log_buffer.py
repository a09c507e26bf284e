"""An append-only store of a task's output lines with flat memory.

A training run can print millions of lines; keeping them as Python strings
would cost ~100 bytes a line and make the cockpit the heaviest process on the
pilot's laptop. Like toolong, we keep the bytes in a spool file and only an
index of line offsets in memory (9 bytes a line); the view reads the few lines
it shows with `pread` and caches their rendering.

stdout and stderr arrive as separate byte streams (each addressed by offset on
the relay); lines are interleaved in the order they are appended and tagged
with their stream (the app appends in the task's own order: cockpit/ordered.py).
A line that has not ended yet is held per stream and shown as the tail of the
view until its newline arrives.
"""

from __future__ import annotations

import os
import tempfile
from array import array
from bisect import bisect_left, bisect_right
from itertools import accumulate, islice
from typing import Final

from dragoon.cockpit.app.widgets.logs.ansi import parse_line, strip_escapes

STDOUT: Final = 0
STDERR: Final = 1
_STREAMS: Final = {"stdout": STDOUT, "stderr": STDERR}
_SEARCH_CHUNK: Final = 4 << 20
# What the pane reads of one line: a task can print a 10 MB line, which would cost
# its bytes at every repaint; past this the line is counted, not shown or read for colour.
MAX_LINE_BYTES: Final = 32 << 10


def clean_line(raw: bytes) -> str:
    """Bytes of one line as the pilot sees its text: colours read, other escapes dropped.

    The visible text of `ansi.parse_line`: the last ``\\r`` segment, tabs
    expanded, SGR colour sequences taken out (the view draws them as styles),
    every other escape or control sequence dropped, and what is left through
    the one rule for untrusted text (cockpit/safe_text.py): a BEL shows as ␇,
    a C1 control or a bidi override as �. Lines past `MAX_LINE_BYTES` are cut.
    """
    return parse_line(decode_line(raw)).text


def decode_line(raw: bytes) -> str:
    """A line's bytes as text, cut at `MAX_LINE_BYTES`, without its line ending."""
    return raw[:MAX_LINE_BYTES].decode("utf-8", "replace").rstrip("\r\n")


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

    def note(self, text: str) -> int:
        """A line of dragoon's own on stderr (why the output stops here), on a line of its
        own: a stderr line the task left unfinished is ended first."""
        lead = b"\n" if self._partial[STDERR] else b""
        return self.append("stderr", lead + text.encode() + b"\n")

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
        """(stream code, visible text) of line `index` (0 is the oldest line still kept)."""
        code, raw, _ = self.line_bytes(index)
        return code, clean_line(raw)

    def line_bytes(self, index: int) -> tuple[int, bytes, int]:
        """(stream code, bytes, full length) of line `index`, without its newline; the
        bytes are cut at `MAX_LINE_BYTES`, the length is what the task wrote."""
        count = len(self._starts)
        if index < count:
            start = self._starts[index]
            end = self._starts[index + 1] if index + 1 < count else self._end
            length = end - start - 1
            return self._streams[index], os.pread(self._fd, min(length, MAX_LINE_BYTES),
                                                  start), length
        tails = self._tails()
        code = tails[index - count]
        partial = self._partial[code]
        return code, bytes(partial[:MAX_LINE_BYTES]), len(partial)

    def _offset(self, index: int) -> int:
        """Where complete line `index` starts in the spool (the end for the line after the last)."""
        return self._starts[index] if index < len(self._starts) else self._end

    def lines_bytes(self, first: int, stop: int) -> tuple[bytes, bytes]:
        """Complete lines `first` to `stop - 1` as one read: their bytes, newlines kept, and
        their stream codes, one byte each (the colour index folds a block at a time)."""
        stop = min(stop, len(self._starts))
        if first >= stop:
            return b"", b""
        start = self._starts[first]
        return (os.pread(self._fd, self._offset(stop) - start, start),
                self._streams[first:stop].tobytes())

    def find(self, query: str, start: int, *, backwards: bool = False) -> int | None:
        """Index of the next line at or after `start` (before it, backwards) whose visible
        text contains `query`, case-insensitively (escape sequences are not text: a
        coloured word is found). Scans the spool in blocks of whole lines, not line by line."""
        needle = query.lower().encode()
        count = len(self._starts)
        if not needle or count == 0:
            return None
        starts = self._starts
        if backwards:
            stop = min(start, count - 1) + 1
            while stop > 0:
                first = min(bisect_left(starts, self._offset(stop) - _SEARCH_CHUNK), stop - 1)
                hit = self._search(first, stop, needle, backwards=True)
                if hit is not None:
                    return hit
                stop = first
            return None
        first = max(start, 0)
        while first < count:
            stop = bisect_right(starts, starts[first] + _SEARCH_CHUNK, lo=first + 1)
            hit = self._search(first, stop, needle, backwards=False)
            if hit is not None:
                return hit
            first = stop
        return None

    def _search(self, first: int, stop: int, needle: bytes, *, backwards: bool) -> int | None:
        block = strip_escapes(self.lines_bytes(first, stop)[0]).lower()
        hit = block.rfind(needle) if backwards else block.find(needle)
        return None if hit < 0 else first + block.count(b"\n", 0, hit)

    def memory_bytes(self) -> int:
        """What the index and the unfinished lines hold in memory (the spool is on disk)."""
        return (self._starts.itemsize * len(self._starts) + len(self._streams)
                + sum(len(p) for p in self._partial.values()))
