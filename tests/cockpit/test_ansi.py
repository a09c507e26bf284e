"""The log pane's SGR reader: colours kept, every other escape dropped, hostile input bounded."""

from __future__ import annotations

from dragoon.cockpit.app.widgets.logs.ansi import (
    BOLD,
    DEFAULT,
    DIM,
    ITALIC,
    MAX_SGR_PARAMS,
    REVERSE,
    STRIKE,
    TRUECOLOUR,
    UNDERLINE,
    SgrState,
    advance,
    apply_sgr,
    parse_line,
    strip_escapes,
)
from dragoon.cockpit.app.widgets.logs.colour_index import CHECKPOINT_LINES, LineColours
from dragoon.cockpit.app.widgets.logs.log_buffer import (
    MAX_LINE_BYTES,
    STDERR,
    STDOUT,
    LogBuffer,
    clean_line,
)
from dragoon.cockpit.safe_text import UNSAFE

RED = SgrState(fg=1)


def runs(text: str, state: SgrState = DEFAULT) -> list[tuple[str, SgrState]]:
    return parse_line(text, state).runs


def test_sixteen_colours_bright_and_backgrounds() -> None:
    assert runs("\x1b[31mred\x1b[0m plain") == [("red", RED), (" plain", DEFAULT)]
    assert runs("\x1b[91;44mx")[0][1] == SgrState(fg=9, bg=4)
    assert runs("\x1b[30;107mx")[0][1] == SgrState(fg=0, bg=15)
    assert runs("\x1b[31m\x1b[39mx")[0][1] == DEFAULT
    assert runs("\x1b[41m\x1b[49mx")[0][1] == DEFAULT


def test_256_colours_and_truecolour_in_both_notations() -> None:
    assert apply_sgr(DEFAULT, "38;5;208") == SgrState(fg=208)
    assert apply_sgr(DEFAULT, "48;5;17") == SgrState(bg=17)
    assert apply_sgr(DEFAULT, "38;2;255;128;0") == SgrState(fg=TRUECOLOUR + 0xFF8000)
    assert apply_sgr(DEFAULT, "38:2::1:2:3") == SgrState(fg=TRUECOLOUR + 0x010203)
    assert apply_sgr(DEFAULT, "38:2:1:2:3") == SgrState(fg=TRUECOLOUR + 0x010203)
    assert apply_sgr(DEFAULT, "48:5:99") == SgrState(bg=99)
    # what follows an extended colour is read too
    assert apply_sgr(DEFAULT, "38;5;1;1;48;2;0;0;9") == SgrState(1, TRUECOLOUR + 9, BOLD)


def test_attributes_set_and_clear_one_by_one() -> None:
    state = apply_sgr(DEFAULT, "1;2;3;4;7;9")
    assert state.flags == BOLD | DIM | ITALIC | UNDERLINE | REVERSE | STRIKE
    assert apply_sgr(state, "22").flags == ITALIC | UNDERLINE | REVERSE | STRIKE
    assert apply_sgr(state, "23;24;27;29").flags == BOLD | DIM
    assert apply_sgr(state, "4:0").flags & UNDERLINE == 0
    assert apply_sgr(DEFAULT, "4:3").flags == UNDERLINE  # curly underline: an underline
    for reset in ("", "0", "00", ";"):
        assert apply_sgr(SgrState(3, 4, BOLD), reset) == DEFAULT, reset
    assert apply_sgr(RED, "0;32") == SgrState(fg=2)


def test_out_of_range_and_malformed_colours_change_nothing_unsafe() -> None:
    assert apply_sgr(RED, "38;5;256") == RED
    assert apply_sgr(RED, "38;2;300;0;0") == RED
    assert apply_sgr(RED, "38;7;1;1") == RED  # unknown kind: the rest is not read
    assert apply_sgr(RED, "38") == RED
    assert apply_sgr(RED, "5;6;8;53") == RED  # blink, conceal, overline: ignored
    assert apply_sgr(DEFAULT, "99999999999999999999") == DEFAULT


def test_every_other_sequence_is_dropped_whole() -> None:
    cases = {
        "a\x1b[2Jb": "ab",  # erase display
        "a\x1b[10;20Hb": "ab",  # cursor position
        "a\x1b[5Ab\x1b[Kc": "abc",  # cursor up, erase line
        "a\x1b]0;pwned\x07b": "ab",  # window title, BEL-terminated
        "a\x1b]2;pwned\x1b\\b": "ab",  # window title, ST-terminated
        "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\": "click",  # hyperlink
        "a\x1bP+q544e\x1b\\b": "ab",  # DCS (XTGETTCAP)
        "a\x1b_apc\x1b\\b\x1b^pm\x07c\x1bXsos\x07d": "abcd",
        "a\x1b[?1049hb\x1b[?25l": "ab",  # alternate screen, hide cursor
        "a\x1b[>4;2mb": "ab",  # modifyOtherKeys: final m, but private, not SGR
        "a\x1b[1 mb": "ab",  # an intermediate byte: not SGR
        "a\x1bcb": "ab",  # RIS, full reset
        "a\x1b7b\x1b8c\x1b(0d": "abcd",  # save/restore cursor, line-drawing charset
        "a\x1b": "a",  # a lone ESC at the end
        "a\x1b\x1b[31mb": "ab",
    }
    for text, shown in cases.items():
        assert parse_line(text).text == shown, repr(text)
    assert runs("a\x1b[>4;2mb") == [("ab", DEFAULT)]
    assert runs("\x1b[1 m\x1b[?31mx") == [("x", DEFAULT)]


def test_controls_between_sequences_stay_inert_pictures() -> None:
    # BEL, an 8-bit CSI (never read as one), a bidi override, NUL: the safe_text rule
    shown = parse_line("\x07\u009b31m\u202eevil\x00").text
    assert shown == "␇\ufffd31m\ufffdevil␀"
    assert not any(char in shown for char in "\x1b\x07\u009b\u202e\x00")
    assert parse_line("\x1b[31m\u202egnp.exe").runs == [("\ufffdgnp.exe", RED)]


def test_carriage_return_keeps_the_last_segment_and_the_colours_before_it() -> None:
    assert runs("\x1b[32m 10%\r\x1b[1m 50%\r100%") == [("100%", SgrState(fg=2, flags=BOLD))]
    assert parse_line("done\r").text == ""


def test_tabs_expand_from_the_visible_column() -> None:
    assert parse_line("\x1b[31mred\x1b[0m\ttab").text == "red     tab"
    assert clean_line(b"\x1b[31mred\ttab\n") == "red     tab"


def test_unterminated_sequences_end_with_their_line() -> None:
    assert parse_line("ok \x1b[31").text == "ok "
    assert parse_line("ok \x1b]0;title without end").text == "ok "
    buffer = LogBuffer()
    buffer.append("stdout", b"one \x1b]0;no end\ntwo\n\x1b[3\n1mthree\n")
    assert [buffer.line(i)[1] for i in range(4)] == ["one ", "two", "", "1mthree"]
    colours = LineColours(buffer)
    assert colours.start_state(3, STDOUT) == DEFAULT  # a split SGR is no SGR


def test_huge_parameter_lists_are_not_an_sgr() -> None:
    params = "1;" * 1_000_000 + "31"
    line = f"a\x1b[{params}mb"
    assert parse_line(line).runs == [("ab", DEFAULT)]
    assert advance(DEFAULT, line.encode()) == DEFAULT
    longest = ";" * (MAX_SGR_PARAMS - 2) + "31"
    assert parse_line(f"\x1b[{longest}mx").runs == [("x", RED)]


def test_ten_megabytes_of_escapes_without_a_newline() -> None:
    buffer = LogBuffer()
    flood = b"\x1b[31m\x1b]0;t\x07\x1b[2J" * (10_000_000 // 15)
    buffer.append("stdout", flood)
    buffer.append("stdout", b"after\nnext\n")
    # the first 32 KiB are read and show nothing; the rest (and "after") is counted
    assert buffer.line(0) == (STDOUT, "") and buffer.line(1) == (STDOUT, "next")
    assert buffer.line_bytes(0)[2] == len(flood) + len(b"after")
    colours = LineColours(buffer)
    assert colours.start_state(1, STDOUT) == RED  # the colour the line's first 32 KiB left
    assert buffer.find("after", 0) == 0 and buffer.find("2J", 0) is None


def test_the_end_state_folded_from_bytes_is_the_parsers() -> None:
    lines = ["\x1b[31mred", "\x1b]0;\x1b[32mgreen after an unterminated OSC",
             "\x1b[1;38;5;9m\x1b[0m\x1b[4m", "\x1b[3\x1b[35m", "x\x1b[>1m\x1b[2 m",
             "\x1b]8;;u\x1b\\[31m", "\x1b\x1b[33m", "\x1b[38:2::1:2:3m\x1b[22;1m",
             "\x1b[m\x1b[44", "\u009b31m\x1b[36m", "\x1b[7m\r\x1b[27;9m"]
    state = DEFAULT
    for line in lines:
        parsed = parse_line(line, state)
        assert advance(state, line.encode()) == parsed.end, repr(line)
        state = parsed.end
    assert advance(DEFAULT, "\n".join(lines).encode()) == state


def test_search_sees_visible_text_only() -> None:
    assert strip_escapes(b"\x1b[31mre\x1b[0md \x1b]0;title\x07x\n") == b"red x\n"
    buffer = LogBuffer()
    buffer.append("stdout", b"plain\n\x1b[31mre\x1b[0md\n\x1b]0;secret\x07\n")
    assert buffer.find("red", 0) == 1
    assert buffer.find("red", 2, backwards=True) == 1
    assert buffer.find("31m", 0) is None
    assert buffer.find("secret", 0) is None


def test_colour_carries_across_lines_and_checkpoints_per_stream() -> None:
    buffer = LogBuffer()
    buffer.append("stdout", b"\x1b[31mred from here\n")
    buffer.append("stderr", b"\x1b[1mbold stderr\n")
    body = b"".join(b"line %d\n" % i for i in range(3 * CHECKPOINT_LINES))
    buffer.append("stdout", body)
    buffer.append("stdout", b"\x1b[0mreset\nafter\n")
    buffer.append("stdout", b"\x1b[32mtail without newline")
    colours = LineColours(buffer)
    last = buffer.complete_lines
    assert colours.start_state(2, STDOUT) == RED
    assert colours.start_state(2, STDERR) == SgrState(flags=BOLD)  # its own stream's state
    assert colours.start_state(2 + 2 * CHECKPOINT_LINES + 7, STDOUT) == RED
    assert colours.start_state(5, STDOUT) == RED  # back up: from the checkpoint again
    assert colours.start_state(last - 1, STDOUT) == DEFAULT
    assert colours.start_state(last, STDOUT) == DEFAULT  # the unfinished tail
    assert colours.memory_bytes() < 2_000


def test_lines_past_the_cap_are_cut_and_counted() -> None:
    buffer = LogBuffer()
    buffer.append("stdout", b"\x1b[31m" + b"x" * MAX_LINE_BYTES + b"\x1b[32m\nnext\n")
    stream, raw, length = buffer.line_bytes(0)
    assert stream == STDOUT
    assert len(raw) == MAX_LINE_BYTES and length == MAX_LINE_BYTES + 10
    # what is not read is not read for colour either, by every path to the state
    assert LineColours(buffer).start_state(1, STDOUT) == RED
    assert LineColours(buffer).start_state(2, STDOUT) == RED


def test_nothing_unsafe_survives_any_mix() -> None:
    hostile = "".join(chr(c) for c in range(0x00, 0xA0) if c != 0x0A) + "\u202e\u2066"
    for text in (hostile, "\x1b[" + hostile, "\x1b]" + hostile, hostile * 3):
        for shown, _ in parse_line(text).runs:
            assert not UNSAFE.search(shown), repr(shown)
