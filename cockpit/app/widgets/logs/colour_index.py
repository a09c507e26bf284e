"""The colour each line of a log starts in, without keeping a state per line.

A terminal's colour outlives the line that set it: after ``ESC[31m`` and a
newline the next line is still red until something resets it. The view
renders only the lines on screen, so it must know the state line 900,000
starts in without reading the 899,999 before it every time. We keep a
checkpoint every `CHECKPOINT_LINES` lines (the state of each stream there;
states are shared, so ~0.1 byte a line) and fold forward from the nearest one
(`ansi.advance` over one read of the lines in between). Blocks with no escape
byte at all, which is most of a plain log, cost one ``in`` test.

stdout and stderr each carry their own state: they come from two pipes whose
interleaving in the buffer is arrival order, not the order the task wrote
them, so a colour one stream left open must not paint the other.

Checkpoints are computed lazily, in order, and stay valid as lines are added
(a complete line never changes). When the buffer forgets its oldest lines
(`generation` changes) they are recomputed from the default state.
"""

from __future__ import annotations

from itertools import compress
from typing import Final

from dragoon.cockpit.app.widgets.logs.ansi import DEFAULT, SgrState, advance
from dragoon.cockpit.app.widgets.logs.log_buffer import MAX_LINE_BYTES, STDERR, STDOUT, LogBuffer

CHECKPOINT_LINES: Final = 1024

StreamStates = tuple[SgrState, SgrState]  # (stdout, stderr)

_INVERT: Final = bytes.maketrans(b"\x00\x01", b"\x01\x00")


def fold(states: StreamStates, block: bytes, streams: bytes, *, cut: bool) -> StreamStates:
    """Each stream's state after the lines of `block` (newline-ended, `streams` one code
    per line), reading each line as the view does: cut at `MAX_LINE_BYTES` (`cut`: the
    buffer holds a line that long; otherwise no line needs looking at)."""
    if b"\x1b" not in block:  # one byte: memchr, far faster than a longer needle
        return states
    out, err = states
    if not cut and STDERR not in streams:  # the common case: one stream, no split
        return advance(out, block), err
    lines = block.split(b"\n")[:-1]
    if cut:
        lines = [line[:MAX_LINE_BYTES] for line in lines]
    if STDERR not in streams:
        return advance(out, b"\n".join(lines)), err
    if STDOUT not in streams:
        return out, advance(err, b"\n".join(lines))
    return (advance(out, b"\n".join(compress(lines, streams.translate(_INVERT)))),
            advance(err, b"\n".join(compress(lines, streams))))


class LineColours:
    """Per buffer: `start_state(index)`, the state line `index`'s stream is in before it."""

    def __init__(self, buffer: LogBuffer) -> None:
        self.buffer = buffer
        self._generation = buffer.generation
        self._checkpoints: list[StreamStates] = [(DEFAULT, DEFAULT)]
        self._interned: dict[StreamStates, StreamStates] = {}
        self._cursor = 0  # the last line asked about, and the states before it
        self._cursor_states: StreamStates = (DEFAULT, DEFAULT)

    def _reset_if_shifted(self) -> None:
        if self.buffer.generation != self._generation:
            self._generation = self.buffer.generation
            self._checkpoints = [(DEFAULT, DEFAULT)]
            self._interned.clear()
            self._cursor, self._cursor_states = 0, (DEFAULT, DEFAULT)

    def _checkpoint(self, number: int) -> StreamStates:
        checkpoints = self._checkpoints
        while len(checkpoints) <= number:
            first = (len(checkpoints) - 1) * CHECKPOINT_LINES
            states = fold(checkpoints[-1],
                          *self.buffer.lines_bytes(first, first + CHECKPOINT_LINES),
                          cut=self.buffer.max_width > MAX_LINE_BYTES)
            checkpoints.append(self._interned.setdefault(states, states))
        return checkpoints[number]

    def states_before(self, index: int) -> StreamStates:
        """Both streams' states before line `index`; a line past the complete ones (an
        unfinished tail) starts where its stream's complete lines left off."""
        self._reset_if_shifted()
        index = min(index, self.buffer.complete_lines)
        cursor = self._cursor
        if not cursor <= index < cursor + CHECKPOINT_LINES:  # far away: the checkpoint
            cursor = index - index % CHECKPOINT_LINES
            self._cursor_states = self._checkpoint(index // CHECKPOINT_LINES)
        if index > cursor:
            self._cursor_states = fold(self._cursor_states,
                                       *self.buffer.lines_bytes(cursor, index),
                                       cut=self.buffer.max_width > MAX_LINE_BYTES)
        self._cursor = index
        return self._cursor_states

    def start_state(self, index: int, stream: int) -> SgrState:
        return self.states_before(index)[stream]

    def memory_bytes(self) -> int:
        """About what the checkpoints hold: a list slot each, the states shared."""
        return 8 * len(self._checkpoints) + 200 * len(self._interned)
