"""Replaying a task's stdout and stderr in the order the task wrote them, from the ``order`` stream.

The three streams (stdout, stderr, order: shared/order.py) are followed
separately and arrive in any order relative to each other: a run recorded in
``order`` can come before its bytes, and bytes before their run. `Interleaver`
holds what arrived early and hands each byte to its sink exactly once, in the
recorded order, so the log pane (and a terminal) ends in the task's own order.

What it never does is wait for ever or without bound, whatever a drone sends:

- bytes held for ``hold_seconds`` (the order lags, or claims bytes that never
  come, or the task's older drone sends no order at all) or more than
  ``hold_limit`` bytes in all are let through in arrival order; runs that
  cover bytes already shown are then skipped, so a late order stream only
  costs the order of what was let through, never a byte shown twice;
- a run that claims more bytes than its stream ends with is cut to what exists;
- a malformed order stream, or one that ends without a header (an older
  drone), turns the rest into arrival order;
- once the order stream has ended, bytes it does not cover (the relay's cap
  marker, say) are shown as they come.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from dragoon.shared.order import OrderReader

HOLD_SECONDS: Final = 3.0
HOLD_LIMIT: Final = 8 << 20  # bytes held in all, both streams
DATA_STREAMS: Final = ("stdout", "stderr")

#: ``sink(stream, data)``: where the bytes go, in order (``LogBuffer.append``, a terminal).
Sink = Callable[[str, bytes], object]


@dataclass
class _Pending:
    """A recorded run, as far as it is not shown yet."""

    stream: str
    size: int


class Interleaver:
    """stdout and stderr bytes in, the same bytes out to ``sink`` in the recorded order."""

    def __init__(self, sink: Sink, *, hold_seconds: float = HOLD_SECONDS,
                 hold_limit: int = HOLD_LIMIT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sink = sink
        self.hold_seconds = hold_seconds
        self.hold_limit = hold_limit
        self._clock = clock
        self._reader = OrderReader()
        self._runs: deque[_Pending] = deque()
        self._held = {s: bytearray() for s in DATA_STREAMS}
        self._held_since: dict[str, float | None] = dict.fromkeys(DATA_STREAMS)
        self._shown = dict.fromkeys(DATA_STREAMS, 0)  # bytes given to the sink
        self._covered = dict.fromkeys(DATA_STREAMS, 0)  # bytes the runs consumed so far cover
        self._ended: set[str] = set()
        self.arrival_order = False  # the order stream is of no (more) use: bytes go as they come
        self._for_good = False  # arrival order because the stream broke or ended, not a stall

    # ----- what the followers feed

    def data(self, stream: str, chunk: bytes) -> None:
        if not chunk:
            return
        if self.arrival_order or self._order_done():
            self._pump()
            self._show(stream, bytes(chunk))
            return
        if not self._held[stream]:
            self._held_since[stream] = self._clock()
        self._held[stream] += chunk
        self._pump()
        if self._order_done():
            self._release_held()  # bytes the ended order stream does not cover
        self.tick()

    def order(self, chunk: bytes) -> None:
        had_header = self._reader.header_seen
        runs = self._reader.feed(chunk)
        self._runs.extend(_Pending(run.stream, run.size) for run in runs)
        if self._reader.header_seen and not had_header and not self._for_good:
            self.arrival_order = False  # late, not absent: order again from here on
        self._pump()
        if self._reader.broken is not None:
            self._let_through()

    def end(self, stream: str) -> None:
        """``stream`` (a data stream or ``order``) is over: the task finished and all is read."""
        self._ended.add(stream)
        if stream == "order" and not self._reader.header_seen:
            self._let_through()  # an older drone: there is no order to wait for
        self._pump()
        if self._order_done():
            self._let_through()  # what the runs did not cover goes as it comes

    def tick(self) -> None:
        """Let held bytes through once they waited too long or weigh too much; call it
        now and then (the cockpit does every quarter second) so a stall ends on time."""
        now = self._clock()
        waited = any(since is not None and now - since >= self.hold_seconds
                     for since in self._held_since.values())
        if waited or sum(map(len, self._held.values())) > self.hold_limit:
            if not self._reader.header_seen:
                self.arrival_order = True  # no order after all this time: an older drone
            self._release_held()

    @property
    def held(self) -> int:
        return sum(map(len, self._held.values()))

    # ----- inside

    def _order_done(self) -> bool:
        return "order" in self._ended and not self._runs

    def _pump(self) -> None:
        """Hand over every byte the runs at the head of the queue allow."""
        while self._runs:
            run = self._runs[0]
            stream, size = run.stream, run.size
            ahead = self._shown[stream] - self._covered[stream]
            if ahead > 0:  # let through earlier: the run is skipped that far
                skip = min(size, ahead)
                self._covered[stream] += skip
                size -= skip
            held = self._held[stream]
            take = min(size, len(held))
            if take:
                self._show(stream, bytes(held[:take]), held=True)
                self._covered[stream] += take
                size -= take
            if size and stream in self._ended:
                size = 0  # claims bytes the stream ended without: what exists is shown
            if size:
                run.size = size
                return
            self._runs.popleft()

    def _show(self, stream: str, data: bytes, *, held: bool = False) -> None:
        if held:
            del self._held[stream][:len(data)]
            if not self._held[stream]:
                self._held_since[stream] = None
        self._shown[stream] += len(data)
        self._sink(stream, data)

    def _release_held(self) -> None:
        """Every held byte, oldest stream first: order is given up for them, not bytes."""
        waiting = sorted((since, s) for s, since in self._held_since.items() if since is not None)
        for _since, stream in waiting:
            self._show(stream, bytes(self._held[stream]), held=True)

    def _let_through(self) -> None:
        """From now on bytes go as they come, after what the runs known so far still order."""
        self._pump()
        self.arrival_order = self._for_good = True
        self._release_held()
