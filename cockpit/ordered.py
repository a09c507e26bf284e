"""Replaying a task's stdout and stderr in the order the task wrote them, from the ``order`` stream.

The three streams (stdout, stderr, order: shared/order.py) are followed
separately and arrive in any order relative to each other: a run recorded in
``order`` can come before its bytes, and bytes before their run. `Interleaver`
holds what arrived early and hands each byte to its sink exactly once, in the
recorded order, so the log pane (and a terminal) ends in the task's own order.

What it never does is wait for ever or without bound, whatever a drone sends:

- bytes held for ``hold_seconds`` (the order lags, or claims bytes that never
  come; ``NO_ORDER_SECONDS`` while no order came at all, as from an older
  drone, which sends none) or more than
  ``hold_limit`` bytes in all are let through in arrival order; runs that
  cover bytes already shown are then skipped, so a late order stream only
  costs the order of what was let through, never a byte shown twice;
- a run that claims more bytes than its stream ends with is cut to what exists;
- a malformed order stream, or one that ends without a header (an older
  drone), turns the rest into arrival order;
- once the order stream has ended, bytes it does not cover (the relay's cap
  marker, say) are shown as they come;
- the order is kept as the bytes it came as (a few bytes a run) and read a
  slice at a time as the data needs it; past ``ORDER_LIMIT`` unread bytes
  (``wants_order`` is False) its follower waits, so memory stays flat however
  far ahead of the data an order runs.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Final

from dragoon.shared.order import STREAM, OrderReader

HOLD_SECONDS = 5.0  # not Final: read when an Interleaver is made (tests lengthen it)
NO_ORDER_SECONDS = 2.0  # the hold before any order arrived: an older drone sends none
HOLD_LIMIT: Final = 8 << 20  # bytes held in all, both streams
ORDER_LIMIT = 4 << 20  # unread order bytes kept before its follower waits (tests shrink it)
PARSE_SLICE = 64 << 10  # order bytes read into runs at a time (likewise)
TICK_SECONDS: Final = 0.25
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

    def __init__(self, sink: Sink, *, hold_seconds: float | None = None,
                 no_order_seconds: float | None = None, hold_limit: int = HOLD_LIMIT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sink = sink
        self.hold_seconds = HOLD_SECONDS if hold_seconds is None else hold_seconds
        self.no_order_seconds = NO_ORDER_SECONDS if no_order_seconds is None else no_order_seconds
        self.hold_limit = hold_limit
        self._clock = clock
        self._reader = OrderReader()
        self._order_raw = bytearray()  # order bytes not read into runs yet
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
        if self._for_good:
            return
        self._order_raw += chunk
        had_header = self._reader.header_seen
        self._refill()
        if self._reader.header_seen and not had_header and not self._for_good:
            self.arrival_order = False  # late, not absent: order again from here on
        self._pump()

    def _refill(self) -> None:
        """Read the next slice of the order into runs, when the runs read so far are used."""
        while not self._runs and self._order_raw and self._reader.broken is None:
            piece = bytes(self._order_raw[:PARSE_SLICE])
            del self._order_raw[:PARSE_SLICE]
            self._runs.extend(_Pending(run.stream, run.size) for run in self._reader.feed(piece))
        if self._reader.broken is not None and not self._for_good:
            self._order_raw.clear()
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
        hold = self.hold_seconds if self._reader.header_seen else min(self.hold_seconds,
                                                                      self.no_order_seconds)
        waited = any(since is not None and now - since >= hold
                     for since in self._held_since.values())
        if waited or sum(map(len, self._held.values())) > self.hold_limit:
            if not self._reader.header_seen:
                self.arrival_order = True  # no order after all this time: an older drone
            self._release_held()

    @property
    def held(self) -> int:
        return sum(map(len, self._held.values()))

    @property
    def wants_order(self) -> bool:
        """False while enough order is waiting for its data: its follower pauses."""
        return len(self._order_raw) < ORDER_LIMIT or self._for_good

    # ----- inside

    def _order_done(self) -> bool:
        return "order" in self._ended and not self._runs and not self._order_raw

    def _pump(self) -> None:
        """Hand over every byte the runs at the head of the queue allow."""
        while True:
            if not self._runs:
                self._refill()
                if not self._runs:
                    return
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

    def flush(self) -> None:
        """Show every byte held, now: a stream failed (a record that does not open) and the
        bytes that did open before it are the task's own, whatever their order."""
        self._let_through()

    def _let_through(self) -> None:
        """From now on bytes go as they come, after what the runs known so far still order."""
        self.arrival_order = self._for_good = True
        self._pump()
        self._release_held()


async def follow_in_order(follow: Callable[[str], AsyncIterator[bytes]], sink: Sink, *,
                          tick_seconds: float = TICK_SECONDS) -> None:
    """Follow stdout, stderr and order (``follow(stream)`` yields a stream's bytes until the
    task is over and all is read) and hand the bytes to ``sink`` in the recorded order.

    An older relay refuses the ``order`` stream (422): the output then goes in
    arrival order, as it did before there was one.
    """
    merge = Interleaver(sink)

    async def data(stream: str) -> None:
        async for chunk in follow(stream):
            merge.data(stream, chunk)
        merge.end(stream)

    async def order() -> None:
        try:
            async for chunk in follow(STREAM):
                merge.order(chunk)
                while not merge.wants_order:
                    await asyncio.sleep(tick_seconds)
        except Exception as error:
            if getattr(error, "status", None) != 422:
                raise
        merge.end(STREAM)

    async def ticker() -> None:
        while True:
            await asyncio.sleep(tick_seconds)
            merge.tick()

    jobs = [asyncio.ensure_future(job) for job in (data("stdout"), data("stderr"), order())]
    clock = asyncio.ensure_future(ticker())
    try:
        await asyncio.gather(*jobs)
    except Exception:
        merge.flush()  # what arrived before the failure is shown, then the failure
        raise
    finally:
        for job in (*jobs, clock):
            job.cancel()
        await asyncio.gather(*jobs, clock, return_exceptions=True)
