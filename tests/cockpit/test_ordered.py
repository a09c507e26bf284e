"""Replaying stdout and stderr in the recorded order (cockpit/ordered.py), whatever arrives when.

The streams arrive in pieces and in any order relative to each other; these
feed them every which way (seeded, so a failure repeats) and check that the
sink sees every byte once, in the order the order stream records, and that a
lying or missing order stream costs order, never bytes, memory or a hang.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from dragoon.cockpit import ordered
from dragoon.cockpit.ordered import Interleaver, follow_in_order
from dragoon.shared.order import HEADER, encode_run


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []

    def __call__(self, stream: str, data: bytes) -> None:
        assert data
        self.got.append((stream, data))

    def joined(self) -> list[tuple[str, bytes]]:
        """Consecutive pieces of one stream joined: what a pane shows is the same."""
        out: list[tuple[str, bytes]] = []
        for stream, data in self.got:
            if out and out[-1][0] == stream:
                out[-1] = (stream, out[-1][1] + data)
            else:
                out.append((stream, data))
        return out

    def of(self, stream: str) -> bytes:
        return b"".join(d for s, d in self.got if s == stream)


def program(lines: int) -> tuple[list[tuple[str, bytes]], dict[str, bytes]]:
    """What a task wrote, run by run, and the three streams the relay would hold."""
    runs = [("stdout" if i % 2 == 0 else "stderr", f"{'out' if i % 2 == 0 else 'err'} {i}\n"
             .encode()) for i in range(lines)]
    streams = {"stdout": b"", "stderr": b"", "order": HEADER}
    for stream, data in runs:
        streams[stream] += data
        streams["order"] += encode_run(stream, len(data))
    return runs, streams


def _joined_of(runs: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    sink = Sink()
    for stream, data in runs:
        sink(stream, data)
    return sink.joined()


def pieces(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 12))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@pytest.mark.parametrize("seed", range(40))
def test_any_arrival_order_ends_in_the_recorded_order(seed: int) -> None:
    rng = random.Random(seed)
    runs, streams = program(rng.randint(1, 60))
    queues = {name: pieces(data, rng) if data else [] for name, data in streams.items()}
    sink = Sink()
    merge = Interleaver(sink, clock=Clock())
    while any(queues.values()):
        name = rng.choice([n for n, q in queues.items() if q])
        chunk = queues[name].pop(0)
        merge.order(chunk) if name == "order" else merge.data(name, chunk)
        if not queues[name]:
            merge.end(name)
    for name in queues:
        merge.end(name)
    assert sink.joined() == _joined_of(runs)
    assert merge.held == 0


def test_bytes_wait_for_their_run_and_runs_for_their_bytes() -> None:
    sink = Sink()
    merge = Interleaver(sink, clock=Clock())
    merge.data("stderr", b"E1\n")
    merge.order(HEADER + encode_run("stdout", 3))
    assert sink.got == []  # stdout comes first, and is not here yet
    merge.data("stdout", b"o1\n")
    merge.order(encode_run("stderr", 3))
    assert sink.got == [("stdout", b"o1\n"), ("stderr", b"E1\n")]


def test_a_run_that_claims_more_than_exists_shows_what_exists_at_the_end() -> None:
    sink = Sink()
    merge = Interleaver(sink, clock=Clock())
    merge.order(HEADER + encode_run("stdout", 10**12) + encode_run("stderr", 4))
    merge.data("stdout", b"tiny")
    merge.data("stderr", b"err\n")
    assert sink.of("stderr") == b""  # still waiting: the task may print the rest
    merge.end("order")
    merge.end("stdout")
    assert sink.got == [("stdout", b"tiny"), ("stderr", b"err\n")]
    merge.end("stderr")
    assert merge.held == 0


def test_held_bytes_go_through_after_the_hold_and_are_never_shown_twice() -> None:
    clock, sink = Clock(), Sink()
    merge = Interleaver(sink, clock=clock, hold_seconds=3.0)
    merge.order(HEADER + encode_run("stdout", 5) + encode_run("stderr", 4))
    merge.data("stderr", b"err\n")
    merge.tick()
    assert sink.got == []
    clock.now += 3.0
    merge.tick()
    assert sink.got == [("stderr", b"err\n")]  # the stdout it waited on never came
    merge.data("stdout", b"late\n")  # now it comes; its run is used, stderr's is skipped
    merge.order(encode_run("stdout", 3))
    merge.data("stdout", b"ok\n")
    assert sink.joined() == [("stderr", b"err\n"), ("stdout", b"late\nok\n")]


def test_no_order_at_all_is_an_older_drone_arrival_order_then() -> None:
    clock, sink = Clock(), Sink()
    merge = Interleaver(sink, clock=clock, hold_seconds=5.0, no_order_seconds=1.0)
    merge.data("stdout", b"a\n")
    clock.now += 0.9
    merge.tick()
    assert sink.got == []
    clock.now += 0.1
    merge.tick()
    assert sink.got == [("stdout", b"a\n")] and merge.arrival_order
    merge.data("stderr", b"b\n")  # no wait any more
    assert sink.got[-1] == ("stderr", b"b\n")

    sink = Sink()
    finished = Interleaver(sink, clock=Clock())
    finished.data("stderr", b"x\n")
    finished.end("order")  # ended with nothing in it: no wait at all
    assert sink.got == [("stderr", b"x\n")]


def test_a_malformed_order_turns_into_arrival_order_losing_nothing() -> None:
    sink = Sink()
    merge = Interleaver(sink, clock=Clock())
    merge.data("stderr", b"first\n")
    merge.data("stdout", b"second\n")
    merge.order(HEADER + b"o 7\n\x1b[2J\n")
    assert sink.joined() == [("stdout", b"second\n"), ("stderr", b"first\n")]
    merge.data("stdout", b"more\n")
    assert sink.of("stdout") == b"second\nmore\n" and merge.arrival_order


def test_too_many_held_bytes_go_through() -> None:
    sink = Sink()
    merge = Interleaver(sink, clock=Clock(), hold_limit=1000)
    merge.order(HEADER + encode_run("stdout", 1))
    merge.data("stderr", b"x" * 1001)
    assert sink.of("stderr") == b"x" * 1001 and merge.held == 0


def test_an_order_far_ahead_of_its_data_pauses_its_follower(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ordered, "ORDER_LIMIT", 1 << 10)
    monkeypatch.setattr(ordered, "PARSE_SLICE", 1 << 8)
    merge = Interleaver(Sink(), clock=Clock())
    merge.order(HEADER + encode_run("stdout", 1) * 1000)
    assert not merge.wants_order
    merge.end("stdout")  # every run now claims bytes that will never come: all used up
    assert merge.wants_order


@pytest.mark.anyio
async def test_follow_in_order_over_three_followers() -> None:
    runs, streams = program(50)

    async def follow(stream: str) -> AsyncIterator[bytes]:
        for chunk in pieces(streams[stream], random.Random(stream)):
            await asyncio.sleep(0)
            yield chunk

    sink = Sink()
    await asyncio.wait_for(follow_in_order(follow, sink), timeout=10)
    assert sink.joined() == _joined_of(runs)


@pytest.mark.anyio
async def test_an_older_relay_without_an_order_stream_gives_arrival_order() -> None:
    class Refused(Exception):
        status = 422

    async def follow(stream: str) -> AsyncIterator[bytes]:
        if stream == "order":
            raise Refused("stream: string does not match")
        yield f"{stream}\n".encode()

    sink = Sink()
    await asyncio.wait_for(follow_in_order(follow, sink), timeout=10)
    assert sorted(sink.got) == [("stderr", b"stderr\n"), ("stdout", b"stdout\n")]
