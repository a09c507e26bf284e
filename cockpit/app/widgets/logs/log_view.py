"""A virtualised view of a task's output, built on Textual's line API.

Only the visible lines are ever read and rendered (`render_line`), from a
`LogBuffer` index, with an LRU of rendered strips; so a million-line log
scrolls like a ten-line one. Chunks are appended to the buffer as they come,
but the widget repaints at most `FLUSH_HZ` times a second and not at all while
hidden. Following (stick to the bottom) stops when the pilot scrolls up and
resumes when they reach the bottom again or press End.

Colours: each line is read by `ansi.parse_line` from the state its stream is
in before it (`colour_index.LineColours`, checkpoints every 1,024 lines), so a
line inside a red run is red; only SGR becomes style, every other escape is
dropped. Long lines either scroll sideways (←/→, h/l) or wrap (`w`). Wrapping
keeps the line index: `scroll_y` is always the top line, a wrapped line takes
as many rows as it needs, and the rows on screen are laid out from the top
line only (or, at the end, from the last line upwards, so the end is always
shown); nothing is ever computed for lines off screen.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar, Final
from weakref import WeakKeyDictionary

from dragoon.cockpit.app.widgets.logs.ansi import (
    BOLD,
    DEFAULT_COLOUR,
    DIM,
    ITALIC,
    REVERSE,
    STRIKE,
    TRUECOLOUR,
    UNDERLINE,
    SgrState,
    parse_line,
)
from dragoon.cockpit.app.widgets.logs.colour_index import LineColours
from dragoon.cockpit.app.widgets.logs.log_buffer import (
    STDERR,
    LogBuffer,
    decode_line,
)
from dragoon.cockpit.formatting import human_size
from dragoon.cockpit.theme import STDERR_STYLE as STDERR_COLOUR
from rich.cells import get_character_cell_size
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

FLUSH_HZ: Final = 20
CACHE_LINES: Final = 2_000

STDOUT_STYLE: Final = Style()
STDERR_STYLE: Final = Style.parse(STDERR_COLOUR)
MATCH_STYLE: Final = Style(bgcolor="rgb(95,75,0)", bold=True)
CUT_STYLE: Final = Style(dim=True, italic=True)
SIDE_STEP: Final = 8  # columns per ←/→

_NAMES: Final = ("black", "red", "green", "yellow", "blue", "magenta", "cyan", "white")
_PALETTE: Final = (*_NAMES, *(f"bright_{name}" for name in _NAMES))


def _colour(value: int) -> Color | None:
    if value == DEFAULT_COLOUR:
        return None
    if value < 16:
        return Color.parse(_PALETTE[value])
    if value < TRUECOLOUR:
        return Color.from_ansi(value)
    rgb = value - TRUECOLOUR
    return Color.from_rgb(rgb >> 16, rgb >> 8 & 0xFF, rgb & 0xFF)


def sgr_style(state: SgrState) -> Style:
    """An SGR state as a rich style; the stream's colour shows where the task set none."""
    flags = state.flags
    return Style(color=_colour(state.fg), bgcolor=_colour(state.bg),
                 bold=bool(flags & BOLD) or None, dim=bool(flags & DIM) or None,
                 italic=bool(flags & ITALIC) or None,
                 underline=bool(flags & UNDERLINE) or None,
                 reverse=bool(flags & REVERSE) or None, strike=bool(flags & STRIKE) or None)


_styles: dict[tuple[int, SgrState, bool], Style] = {}


def _style(stream: int, state: SgrState, match: bool) -> Style:
    key = (stream, state, match)
    style = _styles.get(key)
    if style is None:
        if len(_styles) > 4096:  # a hostile log can name 16 M truecolours
            _styles.clear()
        style = STDERR_STYLE if stream == STDERR else STDOUT_STYLE
        style = style + sgr_style(state)
        if match:
            style += MATCH_STYLE
        _styles[key] = style
    return style


class LogView(ScrollView, can_focus=True):
    """stdout in the default colour, stderr in red (each as the task coloured them), one
    buffer per attached task; long lines scroll sideways or wrap (`w`)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("end", "follow", "Follow", id="log.follow"),
        Binding("home", "top", "Top", show=False, id="log.top"),
        Binding("up", "scroll_up", "Up", show=False),
        Binding("down", "scroll_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        # less motion: j k scroll a line, g the top, G the bottom (and follow again, as End)
        Binding("j", "scroll_down", "Down", show=False, id="log.down"),
        Binding("k", "scroll_up", "Up", show=False, id="log.up"),
        Binding("g", "top", "Top", show=False, id="log.g"),
        Binding("G", "follow", "Bottom", show=False, id="log.bottom"),
        Binding("n", "next_match", "Next match", show=False, id="log.next"),
        Binding("N", "previous_match", "Previous match", show=False, id="log.previous"),
        Binding("w", "toggle_wrap", "Wrap", show=False, id="log.wrap"),
        Binding("left,h", "side(-1)", "Left", show=False, id="log.left"),
        Binding("right,l", "side(1)", "Right", show=False, id="log.right"),
    ]

    DEFAULT_CSS = """
    LogView { background: $surface; }
    """

    follow: reactive[bool] = reactive(True, init=False)

    class FollowChanged(Message):
        """So the pane title can say whether the view is following."""

        def __init__(self, view: LogView, follow: bool) -> None:
            super().__init__()
            self.view = view
            self.follow = follow

    def __init__(self, buffer: LogBuffer | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.buffer = buffer or LogBuffer()
        self._cache: OrderedDict[int, Strip] = OrderedDict()
        self._cache_generation = self.buffer.generation
        self._dirty = False
        self._shown_lines = 0  # lines the virtual size knows about
        self.query_text = ""
        self.match_line: int | None = None
        self.wrap = False
        self._colours: WeakKeyDictionary[LogBuffer, LineColours] = WeakKeyDictionary()
        # the widest line drawn since attaching, in cells: the sideways extent. A line's
        # bytes say nothing reliable (escapes take bytes and no cells, a tab one byte and
        # up to eight cells), and measuring every line would read the whole log
        self._widest = 0
        self._resize_pending = False
        self._wrap_end = 0  # in wrap mode: the scroll position that shows the end
        self._wrap_overflow = False  # ... laid out from the bottom up
        self._wrap_region = (0, 0)  # the pane's size those two were worked out for
        self._layout_key: tuple[int, ...] | None = None
        self._layout: list[tuple[int, int]] = []  # wrap mode: (line, row of it) per screen row
        self._cuts: OrderedDict[int, tuple[Strip, int, list[int]]] = OrderedDict()

    def on_mount(self) -> None:
        self.set_interval(1 / FLUSH_HZ, self._flush)
        self._flush(force=True)

    # ------------------------------------------------------------------ data in

    def attach(self, buffer: LogBuffer) -> None:
        """Show another task's buffer (the pane keeps no copy of the text)."""
        self.buffer = buffer
        self._cache.clear()
        self._cuts.clear()
        self._shown_lines = 0
        self._widest = 0
        self.match_line = None
        self.follow = True
        self._flush(force=True)

    def append(self, stream: str, data: bytes) -> None:
        """Add output; painting is deferred to the next flush tick."""
        self.buffer.append(stream, data)
        self._dirty = True

    def mark_dirty(self) -> None:
        self._dirty = True

    def _flush(self, force: bool = False) -> None:
        if not (self._dirty or force):
            return
        if not force and not self.is_on_screen:
            return  # hidden panes are not written to; the buffer still fills
        self._dirty = False
        buffer = self.buffer
        if buffer.generation != self._cache_generation:
            self._cache.clear()
            self._cache_generation = buffer.generation
        total = len(buffer)
        # the last line may be an unfinished one that grew: forget its strip
        for index in range(max(0, self._shown_lines - 2), total):
            self._cache.pop(index, None)
        self._shown_lines = total
        self._layout_key = None
        self._update_virtual_size()
        if self.follow:
            self._stick_to_end()
            # a horizontal scrollbar may appear with this layout and eat the last line
            self.call_after_refresh(self._stick_to_end)
        self.refresh()

    def _stick_to_end(self) -> None:
        if self.follow:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True, force=True)

    def on_resize(self) -> None:
        self._layout_key = None
        if self.wrap:
            self._update_virtual_size()
        self.call_after_refresh(self._stick_to_end)

    def _update_virtual_size(self) -> None:
        """Lines tall and as wide as the widest line; when wrapping, as wide as the pane
        and one position past the last top line, which shows the end laid out upwards."""
        total = self._shown_lines
        if not self.wrap:
            self.virtual_size = Size(self._widest + 1, total)
            return
        region = self.scrollable_content_region
        self._wrap_region = (region.width, region.height)
        top, self._wrap_overflow = self._end_top(region.width, region.height)
        # positions 0 .. top show their line at the top; if that cuts the end, one more
        # position shows it, laid out from the last row upwards
        self._wrap_end = top + self._wrap_overflow
        self.virtual_size = Size(region.width, self._wrap_end + region.height)

    @property
    def is_on_screen(self) -> bool:
        return self.display and self.is_attached and self.screen.is_current and bool(self.size)

    # ------------------------------------------------------------------ follow

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        at_end = round(new_value) >= self.max_scroll_y
        if at_end != self.follow:
            self.follow = at_end

    def watch_show_vertical_scrollbar(self, show: bool) -> None:
        """A scrollbar that appears after the view scrolled (the log followed its end before
        it overflowed) starts at the top: put its thumb where the view is."""
        if show:
            self.vertical_scrollbar.position = self.scroll_y

    def watch_follow(self, follow: bool) -> None:
        self.post_message(self.FollowChanged(self, follow))

    def action_follow(self) -> None:
        self.follow = True
        self._flush(force=True)

    def action_top(self) -> None:
        self.scroll_to(y=0, animate=False)

    # ------------------------------------------------------------------ search

    def search(self, query: str, *, backwards: bool = False) -> int | None:
        """Jump to the next line containing `query` (wrapping at the end); stops following
        so the match stays put."""
        self.query_text = query
        current = self.match_line if self.match_line is not None else int(self.scroll_y) - 1
        start = current - 1 if backwards else current + 1
        found = self.buffer.find(query, max(start, 0), backwards=backwards)
        if found is None:  # wrap around, as less does
            wrap = len(self.buffer) - 1 if backwards else 0
            found = self.buffer.find(query, wrap, backwards=backwards)
        if found is None:
            return None
        self._show_match(found)
        return found

    def _show_match(self, line: int) -> None:
        old = self.match_line
        self.match_line = line
        for index in (old, line):
            if index is not None:
                self._cache.pop(index, None)
        self.follow = False
        region = self.scrollable_content_region
        top, rows = line, 0
        if self.wrap:  # as many lines above it as fill half the pane
            while top > 0 and rows + self._rows_of(top - 1, region.width) <= region.height // 2:
                top -= 1
                rows += self._rows_of(top, region.width)
        else:
            top = max(0, line - region.height // 2)
        self._layout_key = None
        self.scroll_to(y=top, animate=False, immediate=True, force=True)
        self.refresh()

    def action_next_match(self) -> None:
        if self.query_text:
            self.search(self.query_text)

    def action_previous_match(self) -> None:
        if self.query_text:
            self.search(self.query_text, backwards=True)

    # ------------------------------------------------------------------ long lines

    def _widened(self) -> None:
        self._resize_pending = False
        if not self.wrap:
            self._update_virtual_size()
            if self.follow:  # a horizontal scrollbar may have come to eat the last line
                self.call_after_refresh(self._stick_to_end)

    def action_toggle_wrap(self) -> None:
        """Wrap long lines or scroll sideways; the top line stays the top line."""
        top = round(self.scroll_y)
        self.wrap = not self.wrap
        self._layout_key = None
        self.scroll_to(x=0, animate=False, immediate=True, force=True)
        self._update_virtual_size()
        if self.follow:
            self._stick_to_end()
            self.call_after_refresh(self._stick_to_end)
        else:
            self.scroll_to(y=top, animate=False, immediate=True, force=True)
        self.refresh()

    def action_page_down(self) -> None:
        """Wrapping, a page is the rows on screen, not as many lines: the last line shown
        becomes the top one."""
        if not self.wrap:
            super().action_page_down()
            return
        region = self.scrollable_content_region
        layout = self._wrapped_rows(region.width, region.height)
        top = round(self.scroll_y)
        if layout:
            top = max(layout[-1][0], top + 1)
        self.scroll_to(y=top, animate=False, immediate=True)

    def action_page_up(self) -> None:
        """Wrapping: the lines above the top one that fill a screen, rows counted."""
        if not self.wrap:
            super().action_page_up()
            return
        region = self.scrollable_content_region
        layout = self._wrapped_rows(region.width, region.height)
        first = layout[0][0] if layout else round(self.scroll_y)
        top, rows = first, 0
        while top > 0 and rows + self._rows_of(top - 1, region.width) <= region.height:
            top -= 1
            rows += self._rows_of(top, region.width)
        self.scroll_to(y=min(top, first - 1) if first else 0, animate=False, immediate=True)

    def action_side(self, direction: int) -> None:
        if not self.wrap:
            self.scroll_to(x=max(0, self.scroll_x + direction * SIDE_STEP), animate=False,
                           immediate=True)

    # ------------------------------------------------------------------ painting

    def colours(self) -> LineColours:
        colours = self._colours.get(self.buffer)
        if colours is None:
            colours = self._colours[self.buffer] = LineColours(self.buffer)
        return colours

    def _line_strip(self, index: int) -> Strip:
        """Line `index` whole, in its colours: cached, then cropped or cut into rows."""
        strip = self._cache.get(index)
        if strip is not None:
            self._cache.move_to_end(index)
            return strip
        stream, raw, length = self.buffer.line_bytes(index)
        state = self.colours().start_state(index, stream)
        match = index == self.match_line
        segments = [Segment(text, _style(stream, run_state, match))
                    for text, run_state in parse_line(decode_line(raw), state).runs]
        if length > len(raw):
            segments.append(Segment(f" … {human_size(length - len(raw))} more", CUT_STYLE))
        strip = Strip(segments)
        if strip.cell_length > self._widest:
            self._widest = strip.cell_length
            if not self._resize_pending:  # once per frame, after it
                self._resize_pending = True
                self.call_later(self._widened)
        self._cache[index] = strip
        if len(self._cache) > CACHE_LINES:
            self._cache.popitem(last=False)
        return strip

    def _row_starts(self, index: int, width: int) -> list[int]:
        """The cells where each wrapped row of line `index` starts: a wide character
        that would straddle the edge starts the next row (a crop would blank it)."""
        strip = self._line_strip(index)
        known = self._cuts.get(index)
        if known is not None and known[0] is strip and known[1] == width:
            return known[2]
        text, length = strip.text, strip.cell_length
        if length == len(text):  # one cell a character: cut every `width`
            starts = list(range(0, max(length, 1), width))
        else:
            starts, column, row_start = [0], 0, 0
            for char in text:
                size = get_character_cell_size(char)
                if column + size - row_start > width and column > row_start:
                    row_start = column
                    starts.append(column)
                column += size
        self._cuts[index] = (strip, width, starts)
        if len(self._cuts) > CACHE_LINES:
            self._cuts.popitem(last=False)
        return starts

    def _rows_of(self, index: int, width: int) -> int:
        return len(self._row_starts(index, max(width, 1)))

    def _end_top(self, width: int, height: int) -> tuple[int, bool]:
        """In wrap mode, the line at the top when the end is shown, and whether the rows
        from it to the end overflow the pane (then they are laid out from the bottom up).
        Reads only the lines that fit on screen."""
        top, rows = min(self._shown_lines, len(self.buffer)), 0
        while top > 0 and rows < height:
            top -= 1
            rows += self._rows_of(top, width)
        return top, rows > height

    def _wrapped_rows(self, width: int, height: int) -> list[tuple[int, int]]:
        """(line, row of that line) for each row on screen, in wrap mode."""
        top = round(self.scroll_y)
        key = (top, width, height, self._shown_lines, self.buffer.generation,
               -1 if self.match_line is None else self.match_line)
        if key == self._layout_key:
            return self._layout
        if (width, height) != self._wrap_region:  # a scrollbar came or went: size again
            self.call_later(self._update_virtual_size)
        total = min(self._shown_lines, len(self.buffer))
        layout: list[tuple[int, int]] = []
        if self._wrap_overflow and top >= self._wrap_end:
            index = total  # the end: the last rows of the last lines, from the bottom up
            while index > 0 and len(layout) < height:
                index -= 1
                rows = self._rows_of(index, width)
                layout[:0] = [(index, row) for row in range(rows)]
            layout = layout[-height:]
        else:
            index = top
            while index < total and len(layout) < height:
                rows = self._rows_of(index, width)
                layout.extend((index, row) for row in range(min(rows, height - len(layout))))
                index += 1
        self._layout_key, self._layout = key, layout
        return layout

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        region = self.scrollable_content_region
        width = region.width
        base = self.rich_style
        if self.wrap:
            layout = self._wrapped_rows(width, region.height)
            if y >= len(layout):
                return Strip.blank(width, base)
            index, row = layout[y]
            starts = self._row_starts(index, width)
            end = starts[row + 1] if row + 1 < len(starts) else None
            strip = self._line_strip(index).crop(starts[row], end)
            return strip.extend_cell_length(width, base).apply_style(base)
        index = scroll_y + y
        if index >= min(self._shown_lines, len(self.buffer)):
            return Strip.blank(width, base)
        strip = self._line_strip(index)
        return strip.crop_extend(scroll_x, scroll_x + width, base).apply_style(base)

    @property
    def line_count(self) -> int:
        return self._shown_lines
