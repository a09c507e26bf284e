"""The order stream's format (shared/order.py): runs of whole lines, readable at any boundary."""

from __future__ import annotations

import pytest
from dragoon.shared.order import HEADER, OrderReader, Run, encode_run

SAMPLE = HEADER + encode_run("stdout", 4096) + encode_run("stderr", 17) + encode_run("stdout", 1)
RUNS = [Run("stdout", 4096), Run("stderr", 17), Run("stdout", 1)]


def test_runs_are_read_whole_or_cut_at_every_byte() -> None:
    assert SAMPLE == b"dragoon-order 1\no 4096\ne 17\no 1\n"
    assert OrderReader().feed(SAMPLE) == RUNS
    for cut in range(len(SAMPLE) + 1):
        reader = OrderReader()
        assert reader.feed(SAMPLE[:cut]) + reader.feed(SAMPLE[cut:]) == RUNS, cut
    reader = OrderReader()
    assert [run for i in range(len(SAMPLE)) for run in reader.feed(SAMPLE[i:i + 1])] == RUNS
    assert reader.header_seen and reader.broken is None


def test_a_partial_last_line_is_not_a_run_yet() -> None:
    reader = OrderReader()
    assert reader.feed(HEADER + b"o 40") == []
    assert reader.feed(b"96\n") == [Run("stdout", 4096)]


def test_extension_records_are_skipped() -> None:
    assert OrderReader().feed(HEADER + b"t 1700000000.25\ne 3\n") == [Run("stderr", 3)]


@pytest.mark.parametrize("bad", [
    b"o 0\n", b"o 012\n", b"o -1\n", b"x\n", b"O 1\n", b"o 1 \n", b"o 1234567890123456\n",
    b"o\x1b[2J 1\n", b"e " + b"9" * 100,
])
def test_a_malformed_record_stops_the_reading_once(bad: bytes) -> None:
    reader = OrderReader()
    assert reader.feed(HEADER + b"o 2\n" + bad + b"e 5\n") == [Run("stdout", 2)]
    assert reader.broken is not None
    assert reader.feed(b"e 5\n") == []


def test_a_stream_without_the_header_is_not_an_order() -> None:
    reader = OrderReader()
    assert reader.feed(b"o 5\n") == [] and reader.broken is not None
    assert not reader.header_seen


def test_encode_run_refuses_an_empty_run() -> None:
    with pytest.raises(ValueError, match="at least one byte"):
        encode_run("stdout", 0)
