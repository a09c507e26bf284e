"""The spooled, indexed store behind the log pane."""

from __future__ import annotations

import subprocess
import sys

from dragoon.cockpit.app.widgets.logs.log_buffer import STDERR, STDOUT, LogBuffer, clean_line


def lines(buffer: LogBuffer) -> list[tuple[int, str]]:
    return [buffer.line(i) for i in range(len(buffer))]


def test_streams_interleave_in_arrival_order_and_unfinished_lines_show_at_the_end() -> None:
    buffer = LogBuffer()
    buffer.append("stdout", b"a\nb")
    buffer.append("stderr", b"e1\n")
    assert lines(buffer) == [(STDOUT, "a"), (STDERR, "e1"), (STDOUT, "b")]
    buffer.append("stdout", b"c\n")
    assert lines(buffer) == [(STDOUT, "a"), (STDERR, "e1"), (STDOUT, "bc")]
    assert buffer.complete_lines == 3
    assert buffer.received == {"stdout": 5, "stderr": 3}  # the offsets to resume from


def test_a_chunk_split_inside_a_utf8_character_is_joined_before_decoding() -> None:
    buffer = LogBuffer()
    data = "température\n".encode()
    buffer.append("stdout", data[:5])
    buffer.append("stdout", data[5:])
    assert lines(buffer) == [(STDOUT, "température")]


def test_progress_bars_keep_their_last_state_and_escapes_are_not_text() -> None:
    assert clean_line(b"10%\r50%\r100%\n") == "100%"
    # the colour is the view's to draw; the tab stops at the visible column 8
    assert clean_line(b"\x1b[31mred\ttab\n") == "red" + " " * 5 + "tab"


def test_index_is_capped_and_memory_stays_flat() -> None:
    buffer = LogBuffer(max_lines=1000)
    for _ in range(30):
        buffer.append("stdout", b"".join(b"line %d\n" % i for i in range(100)))
    assert len(buffer) <= 1000
    assert buffer.dropped + len(buffer) == 3000
    assert buffer.line(len(buffer) - 1) == (STDOUT, "line 99")
    assert buffer.memory_bytes() <= 9 * 1000


def test_a_million_lines_cost_nine_bytes_each_in_memory() -> None:
    buffer = LogBuffer()
    block = b"".join(b"step %07d loss=0.5\n" % i for i in range(100_000))
    for _ in range(10):
        buffer.append("stdout", block)
    assert len(buffer) == 1_000_000
    assert buffer.memory_bytes() == 9_000_000
    assert buffer.line(999_999) == (STDOUT, "step 0099999 loss=0.5")
    assert buffer.max_width == len("step 0099999 loss=0.5")


def test_find_forwards_and_backwards_case_insensitively() -> None:
    buffer = LogBuffer()
    buffer.append("stdout", b"alpha\nBeta\ngamma\nbeta again\n")
    assert buffer.find("beta", 0) == 1
    assert buffer.find("beta", 2) == 3
    assert buffer.find("BETA", 3, backwards=True) == 3
    assert buffer.find("beta", 2, backwards=True) == 1
    assert buffer.find("delta", 0) is None
    assert buffer.find("", 0) is None


def test_importing_the_cockpit_verb_does_not_import_textual() -> None:
    code = ("import sys, dragoon.cockpit.cli.tui; "
            "sys.exit(1 if 'textual' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
