"""The log pane on screen: task colours as styles, other escapes gone, long lines reachable."""

from __future__ import annotations

import re

import pytest
from dragoon.cockpit.app.application import CockpitApp
from dragoon.cockpit.app.widgets.logs.log_view import MATCH_STYLE, LogView
from dragoon.cockpit.safe_text import UNSAFE
from rich.color import Color
from rich.style import Style
from textual.app import App, ComposeResult
from textual.strip import Strip

from tests.cockpit.fixed_source import FixedSource, fixed_clock
from tests.cockpit.waiting import until

pytestmark = pytest.mark.anyio

RED = Color.parse("red")


class LogOnly(App[None]):
    def compose(self) -> ComposeResult:
        yield LogView(id="log")


async def shown(pilot, data: dict[str, bytes], size: tuple[int, int] = (80, 24)) -> LogView:  # type: ignore[no-untyped-def]
    view = pilot.app.query_one(LogView)
    for stream, chunk in data.items():
        view.append(stream, chunk)
    view._flush(force=True)
    view.focus()
    await pilot.pause()
    return view


def rows(view: LogView) -> list[Strip]:
    return [view.render_line(y) for y in range(view.scrollable_content_region.height)]


def style_of(strip: Strip, text: str) -> Style:
    for segment in strip:
        if text in segment.text:
            assert segment.style is not None
            return segment.style
    raise AssertionError(f"{text!r} not in {strip.text!r}")


async def test_a_red_line_renders_red_and_the_next_line_starts_red() -> None:
    async with LogOnly().run_test(size=(80, 24)) as pilot:
        view = await shown(pilot, {"stdout": b"\x1b[31mred line\nstill red\x1b[0m plain\n"
                                             b"\x1b[1;38;5;208mbold orange\x1b[m "
                                             b"\x1b[48;2;0;0;255;4mblue under\x1b[0m\n"})
        first, second, third = rows(view)[:3]
        assert first.text.rstrip() == "red line"
        assert style_of(first, "red line").color == RED
        assert style_of(second, "still red").color == RED  # the colour outlives the newline
        assert style_of(second, "plain").color != RED
        orange = style_of(third, "bold orange")
        assert orange.bold and orange.color == Color.from_ansi(208)
        blue = style_of(third, "blue under")
        assert blue.underline and blue.bgcolor == Color.from_rgb(0, 0, 255)
        between = [segment.style for segment in third if segment.text == " "]
        assert between and not between[0].bold  # ESC[m between them reset the bold


async def test_stderr_keeps_its_colour_and_its_own_state() -> None:
    async with LogOnly().run_test(size=(80, 24)) as pilot:
        view = await shown(pilot, {"stdout": b"\x1b[32mgreen, never reset\n",
                                   "stderr": b"warning\n"})
        out, err = rows(view)[:2]
        assert style_of(out, "green").color == Color.parse("green")
        # stdout's open green does not paint stderr: it keeps the stderr colour
        assert style_of(err, "warning").color == Color.parse("rgb(255,135,135)")


async def test_titles_cursor_moves_and_other_sequences_never_reach_the_screen() -> None:
    hostile = (b"a\x1b]0;pwned\x07b\x1b[2J\x1b[H\x1b[10;10Hc\x1b[?1049h\x1bP+q544e\x1b\\d"
               b"\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\\x1b[5A\x1bc\x1b\n")
    async with LogOnly().run_test(size=(80, 24)) as pilot:
        view = await shown(pilot, {"stdout": hostile + b"\xc2\x9b31m\xe2\x80\xaeevil\x07\n"})
        first, second = rows(view)[:2]
        assert first.text.rstrip() == "abcdlink"
        assert second.text.rstrip() == "\ufffd31m\ufffdevil␇"  # 8-bit CSI, bidi, BEL: inert
        for strip in rows(view):
            for segment in strip:
                assert not UNSAFE.search(segment.text), segment.text
                assert segment.style is None or not segment.style.link  # no hyperlink
        # what the driver would write for these rows: Textual's own SGRs and the text
        written = "".join(strip.render(pilot.app.console) for strip in rows(view))
        assert re.sub("\x1b\\[[0-9;]*m", "", written).replace("\n", "").isprintable()
        assert "\x1b" in written and "pwned" not in written
        svg = pilot.app.export_screenshot()
        assert not any(char in svg for char in "\x1b\x07\x9b\u202e")
        assert "pwned" not in svg and "evil.example" not in svg


async def test_wrap_shows_a_long_lines_end_and_keeps_the_lines_after_it() -> None:
    long = b"start " + b"x" * 250 + b" END"
    async with LogOnly().run_test(size=(80, 24)) as pilot:
        view = await shown(pilot, {"stdout": b"\x1b[31m" + long + b"\nnext line\n"})
        assert "END" not in "".join(strip.text for strip in rows(view))
        await pilot.press("w")
        await pilot.pause()
        assert view.wrap
        texts = [strip.text.rstrip() for strip in rows(view)]
        assert texts[0].startswith("start ") and texts[3].endswith(" END")
        assert texts[4] == "next line"
        assert style_of(rows(view)[3], "END").color == RED  # the colour wraps with the text
        await pilot.press("w")
        await pilot.pause()
        assert not view.wrap and rows(view)[1].text.rstrip() == "next line"


async def test_sideways_scroll_reaches_a_long_lines_end() -> None:
    async with LogOnly().run_test(size=(80, 24)) as pilot:
        view = await shown(pilot, {"stdout": b"start\t" + b"y" * 300 + b" END\nshort\n"})
        for _ in range(60):
            await pilot.press("l")
        await pilot.pause()
        assert view.scroll_x == view.max_scroll_x > 0
        assert rows(view)[0].text.rstrip().endswith(" END")
        await pilot.press(*["h"] * 60)
        await pilot.pause()
        assert view.scroll_x == 0 and rows(view)[0].text.startswith("start")
        await pilot.press("right")
        await pilot.pause()
        assert view.scroll_x == 8


async def test_wrapped_follow_shows_the_last_rows_of_the_last_line() -> None:
    lines = b"".join(b"line %d " % i + b"z" * 150 + b" end %d\n" % i for i in range(200))
    async with LogOnly().run_test(size=(80, 24)) as pilot:
        view = await shown(pilot, {"stdout": lines})
        await pilot.press("w")
        await until(pilot, lambda: view.follow and view.scroll_y == view.max_scroll_y,
                    what="the wrapped view at the end")
        await pilot.pause()
        texts = [strip.text.rstrip() for strip in rows(view)]
        assert texts[-1].endswith("end 199")
        view.append("stdout", b"\x1b[35mlast words\n")
        view._flush()
        await until(pilot, lambda: rows(view)[-1].text.rstrip() == "last words",
                    what="the new line at the bottom")
        await pilot.press("pageup")
        await pilot.pause()
        assert not view.follow
        await pilot.press("end")
        await pilot.pause()
        assert view.follow and rows(view)[-1].text.rstrip() == "last words"


async def test_search_matches_the_visible_text_of_a_coloured_line() -> None:
    log = b"".join(b"step %d ok\n" % i for i in range(100))
    log += b"step 100 \x1b[1;31mer\x1b[0;31mror\x1b[0m: \x1b]0;hidden\x07disk full\n"
    app = CockpitApp(FixedSource(logs={"stdout": log}), clock=fixed_clock, ping_interval=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.snapshots and not app._pending, what="the snapshot")
        app.attach_log("t-0000000000")
        view = app.log_view
        await until(pilot, lambda: view.line_count == 101, what="the log")
        view.focus()
        await pilot.press("slash", *"error: disk", "enter")
        await until(pilot, lambda: view.match_line == 100, what="the match")
        match = view.render_line(100 - round(view.scroll_y))
        assert match.text.rstrip() == "step 100 error: disk full"
        assert style_of(match, "ror").bgcolor == MATCH_STYLE.bgcolor
        assert style_of(match, "ror").color == RED
        await pilot.press("slash", *"31m", "enter")  # escape codes are not text
        await pilot.pause()
        assert view.match_line == 100
        assert app.log_view.buffer.find("hidden", 0) is None


async def test_wrap_moves_a_wide_character_to_the_next_row_whole() -> None:
    async with LogOnly().run_test(size=(20, 10)) as pilot:
        view = await shown(pilot, {"stdout": ("a" * 19 + "漢字です\n").encode()})
        await pilot.press("w")
        await pilot.pause()
        texts = [strip.text.rstrip() for strip in rows(view)]
        assert texts[:2] == ["a" * 19, "漢字です"]


async def test_wrapped_pages_move_by_the_rows_on_screen_not_by_lines() -> None:
    lines = b"".join(b"%03d " % i + b"w" * 150 + b"\n" for i in range(100))  # 2 rows each
    async with LogOnly().run_test(size=(80, 24)) as pilot:
        view = await shown(pilot, {"stdout": lines})
        view.action_top()
        await pilot.press("w")
        await pilot.pause()
        assert rows(view)[0].text.startswith("000 ")
        await pilot.press("pagedown")
        await pilot.pause()
        tops = [strip.text[:4] for strip in rows(view)]
        assert tops[0] == "011 "  # the last line the first page showed (rows 22, 23)
        await pilot.press("pageup")
        await pilot.pause()
        assert rows(view)[0].text.startswith("000 ")


async def test_a_line_past_the_cap_says_how_much_more_there_is() -> None:
    async with LogOnly().run_test(size=(80, 24)) as pilot:
        view = await shown(pilot, {"stdout": b"\x1b[32m" + b"g" * (40 << 10) + b" END\n"})
        view.scroll_to(x=view.max_scroll_x, animate=False, immediate=True)
        await pilot.pause()
        end = rows(view)[0]
        assert end.text.rstrip().endswith("g … 8.0 KiB more")
        assert style_of(end, "more").italic and style_of(end, "g").color == Color.parse("green")


async def test_ten_megabytes_of_escapes_without_a_newline_draw_as_a_count() -> None:
    flood = b"\x1b[31m\x1b]0;pwned\x07\x1b[2J\x1b[" + b"1;" * 5_000_000
    async with LogOnly().run_test(size=(80, 24)) as pilot:
        view = await shown(pilot, {"stdout": flood})  # the unfinished tail line
        await pilot.press("w")
        await pilot.pause()
        first = rows(view)[0]
        assert first.text.strip() == "… 9.5 MiB more"  # nothing of it shows, or is sent
        view.append("stdout", b"\nred after it\n")
        view._flush()
        await until(pilot, lambda: rows(view)[1].text.rstrip() == "red after it",
                    what="the next line")
        assert style_of(rows(view)[1], "red after it").color == RED
