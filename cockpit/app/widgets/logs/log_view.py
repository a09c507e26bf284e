"""A virtualised view of a task's output, built on Textual's line API.

Only the visible lines are ever read and rendered (`render_line`), from a
`LogBuffer` index, with an LRU of rendered strips; so a million-line log
scrolls like a ten-line one. Chunks are appended to the buffer as they come,
but the widget repaints at most `FLUSH_HZ` times a second and not at all while
hidden. Following (stick to the bottom) stops when the pilot scrolls up and
resumes when they reach the bottom again or press End.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar, Final

from dragoon.cockpit.app.widgets.logs.log_buffer import STDERR, LogBuffer
from dragoon.cockpit.theme import STDERR_STYLE as STDERR_COLOUR
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


class LogView(ScrollView, can_focus=True):
    """stdout in the default colour, stderr in red, one buffer per attached task."""

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

    def on_mount(self) -> None:
        self.set_interval(1 / FLUSH_HZ, self._flush)
        self._flush(force=True)

    # ------------------------------------------------------------------ data in

    def attach(self, buffer: LogBuffer) -> None:
        """Show another task's buffer (the pane keeps no copy of the text)."""
        self.buffer = buffer
        self._cache.clear()
        self._shown_lines = 0
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
        self.virtual_size = Size(buffer.max_width + 1, total)
        if self.follow:
            self._stick_to_end()
            # a horizontal scrollbar may appear with this layout and eat the last line
            self.call_after_refresh(self._stick_to_end)
        self.refresh()

    def _stick_to_end(self) -> None:
        if self.follow:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True, force=True)

    def on_resize(self) -> None:
        self.call_after_refresh(self._stick_to_end)

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
        top = max(0, line - self.scrollable_content_region.height // 2)
        self.scroll_to(y=top, animate=False, immediate=True, force=True)
        self.refresh()

    def action_next_match(self) -> None:
        if self.query_text:
            self.search(self.query_text)

    def action_previous_match(self) -> None:
        if self.query_text:
            self.search(self.query_text, backwards=True)

    # ------------------------------------------------------------------ painting

    def _line_strip(self, index: int) -> Strip:
        strip = self._cache.get(index)
        if strip is not None:
            self._cache.move_to_end(index)
            return strip
        stream, text = self.buffer.line(index)
        style = STDERR_STYLE if stream == STDERR else STDOUT_STYLE
        if index == self.match_line:
            style = style + MATCH_STYLE
        strip = Strip([Segment(text, style)])
        self._cache[index] = strip
        if len(self._cache) > CACHE_LINES:
            self._cache.popitem(last=False)
        return strip

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        base = self.rich_style
        if index >= min(self._shown_lines, len(self.buffer)):
            return Strip.blank(width, base)
        strip = self._line_strip(index)
        return strip.crop_extend(scroll_x, scroll_x + width, base).apply_style(base)

    @property
    def line_count(self) -> int:
        return self._shown_lines
