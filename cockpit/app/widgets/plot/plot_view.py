"""The job view's plot pane: a reported metric against a parameter or time, in braille."""

from __future__ import annotations

from collections.abc import Sequence

from dragoon.cockpit.app.widgets.plot.braille import Point, framed
from dragoon.cockpit.safe_text import clean
from rich.text import Text
from textual.widget import Widget


class PlotView(Widget):
    """Draws what it was last given at its own size; `show` replaces the points."""

    DEFAULT_CSS = "PlotView { height: 12; }"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.points: list[Point] = []
        self.categories: list[str] | None = None
        self.title = ""

    def show(self, points: Sequence[Point], categories: Sequence[str] | None,
             title: str) -> None:
        self.points = list(points)
        self.categories = None if categories is None else [clean(c) for c in categories]
        self.title = clean(title)
        self.refresh()

    def render(self) -> Text:
        width, height = max(8, self.size.width), max(3, self.size.height)
        text = Text(self.title[:width] + "\n", style="bold")
        text.append("\n".join(framed(self.points, width, height - 1,
                                     categories=self.categories)))
        return text
