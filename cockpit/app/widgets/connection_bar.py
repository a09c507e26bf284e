"""The top bar: where the cockpit is connected, how fast, and what waits in the inbox.

The unread count lives here so it is visible from every view of the main screen.
"""

from __future__ import annotations

from dragoon.cockpit.app.messages import Link
from dragoon.cockpit.safe_text import clean
from dragoon.cockpit.theme import LINK_STYLES
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget


class ConnectionBar(Widget):
    DEFAULT_CSS = """
    ConnectionBar { height: 1; background: $panel; color: $text; padding: 0 1; }
    """

    link: reactive[Link] = reactive(Link.CONNECTING)
    detail: reactive[str] = reactive("")
    rtt: reactive[float | None] = reactive(None)
    unread: reactive[int] = reactive(0)
    counts: reactive[str] = reactive("")
    readonly: reactive[bool] = reactive(False)

    def __init__(self, relay_url: str, pilot: str, **kwargs: str) -> None:
        super().__init__(**kwargs)
        self.relay_url = relay_url
        self.pilot = pilot

    def render(self) -> Text:
        icon, style = LINK_STYLES[self.link]
        text = Text()
        text.append(f" {icon} {self.link.value} ", style=style)
        if self.detail and self.link is not Link.CONNECTED:
            text.append(f" {clean(self.detail)}", style="yellow")  # often the relay's words
        text.append(" ")
        text.append(f" ✉ {self.unread} unread ",
                    style="bold black on yellow" if self.unread else "dim")
        text.append(f"  {clean(self.relay_url)}", style="bold")
        if self.pilot:
            text.append(f"  pilot {clean(self.pilot)}")  # the name the relay answered
        if self.rtt is not None and self.link is Link.CONNECTED:
            text.append(f"  rtt {self.rtt * 1000:.0f} ms", style="dim")
        if self.readonly:
            text.append("  READ-ONLY", style="bold magenta")
        if self.counts:
            text.append(f"  {self.counts}", style="dim")
        return text
