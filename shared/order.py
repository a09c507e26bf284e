"""The ``order`` stream: which of stdout and stderr each run of a task's output bytes belongs to.

A task's stdout and stderr travel as two byte streams, each addressed by
offset; on their own they cannot say whether a stderr line came before or
after a stdout line. The task wrapper (drone/wrapper.py, which writes these
bytes itself because it may import nothing of the package) reads both pipes
and records, after each run of bytes of one stream, a line in a third stream,
``order``, shipped and stored exactly like the other two:

- the first line is ``dragoon-order 1`` (the format and its version);
- then one ASCII line per run: ``o N`` (the next N bytes of stdout) or
  ``e N`` (of stderr), N decimal, > 0, without leading zeros, at most 15 digits.

Only whole lines count, so a reader can stop at any byte boundary and go on
later. A line of another lowercase letter (not o, e), a space and printable text is
an extension a reader skips (a later version may add one); anything else is
malformed, and the reader (``OrderReader``) says so once and reads no more.
The counts never claim bytes the spools do not hold yet when they are written;
a reader of a hostile drone's order must still expect them to (cockpit/
ordered.py shows what exists).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

STREAM: Final = "order"
HEADER: Final = b"dragoon-order 1\n"
TAGS: Final = {b"o": "stdout", b"e": "stderr"}
MAX_LINE: Final = 64  # bytes; a longer line without its newline is malformed
_RUN: Final = re.compile(rb"([oe]) ([1-9][0-9]{0,14})")
_EXTENSION: Final = re.compile(rb"[a-df-np-z] [\x20-\x7e]*")  # not o or e


@dataclass(frozen=True)
class Run:
    """``size`` more bytes of ``stream`` (``stdout`` or ``stderr``) come next."""

    stream: str
    size: int


def encode_run(stream: str, size: int) -> bytes:
    """One record, as the wrapper writes it (tests and tools build order bytes with this)."""
    tag = next(t for t, name in TAGS.items() if name == stream)
    if size <= 0:
        raise ValueError("a run has at least one byte")
    return tag + b" %d\n" % size


class OrderReader:
    """Reads an order stream fed in pieces cut anywhere; yields the runs of whole lines.

    ``header_seen`` tells a reader that the task's drone records the order at
    all (an older drone sends no order stream); ``broken`` is why the stream
    stopped being read, or None.
    """

    def __init__(self) -> None:
        self._partial = bytearray()
        self.header_seen = False
        self.broken: str | None = None

    def feed(self, data: bytes) -> list[Run]:
        if self.broken is not None:
            return []
        self._partial += data
        runs: list[Run] = []
        start = 0
        while (end := self._partial.find(b"\n", start)) >= 0:
            line = bytes(self._partial[start:end])
            start = end + 1
            if not self.header_seen:
                if line + b"\n" != HEADER:
                    return self._break(runs, "it does not start with the format's header")
                self.header_seen = True
                continue
            if (match := _RUN.fullmatch(line)) is not None:
                runs.append(Run(TAGS[match[1]], int(match[2])))
            elif not _EXTENSION.fullmatch(line) or len(line) > MAX_LINE:
                return self._break(runs, f"a malformed record {line[:MAX_LINE]!r}")
        del self._partial[:start]
        if len(self._partial) > MAX_LINE:
            return self._break(runs, "a record longer than any the format has")
        return runs

    def _break(self, runs: list[Run], why: str) -> list[Run]:
        self.broken = why
        self._partial.clear()
        return runs
