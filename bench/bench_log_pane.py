"""Log pane benchmark: a 1,000,000-line log, plain and coloured, jumped through and wrapped.

The pane runs alone, headless (`App.run_test` lays out and renders every frame;
it only does not write to a terminal), 120x40. Each figure is a key pressed
through the pilot and the frame after it, best and median of `--rounds`:

- End from the top (cold: the colour checkpoints of the whole log are worked out);
- Home, then End again (warm);
- `w` at the end (wrap on), `w` again (off), page up in wrap mode;
- memory: the line index, plus the colour checkpoints.

    .venv/bin/python bench/bench_log_pane.py [--lines 1000000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dragoon.cockpit.app.widgets.logs.colour_index import LineColours
from dragoon.cockpit.app.widgets.logs.log_buffer import LogBuffer
from dragoon.cockpit.app.widgets.logs.log_view import LogView
from textual.app import App, ComposeResult


def plain_log(lines: int) -> bytes:
    return b"".join(b"step %07d loss=0.5 lr=3e-4 tokens/s=12345\n" % i for i in range(lines))


def coloured_log(lines: int) -> bytes:
    """Every line coloured (as rich or a logging formatter prints it), a red run left open
    every 1,000 lines and closed 10 lines later, a 300-column line every 50."""
    out = []
    for i in range(lines):
        line = b"\x1b[36m%07d\x1b[0m \x1b[1mloss\x1b[22m=0.5 \x1b[38;5;208mlr\x1b[39m=3e-4" % i
        if i % 1000 == 0:
            line += b" \x1b[31mopen run"
        if i % 1000 == 10:
            line += b"\x1b[0m closed"
        if i % 50 == 0:
            line += b" " + b"=" * 300
        out.append(line)
    return b"\n".join(out) + b"\n"


class LogPaneOnly(App[None]):
    def compose(self) -> ComposeResult:
        yield LogView(id="log")


async def timed(pilot, action: Callable[[], object], rounds: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(rounds):
        await pilot.pause()
        start = time.perf_counter()
        action()
        await pilot.pause()
        times.append(time.perf_counter() - start)
    return min(times) * 1000, statistics.median(times) * 1000


async def measure(name: str, data: bytes, rounds: int) -> None:
    app = LogPaneOnly()
    async with app.run_test(size=(120, 40)) as pilot:
        view = app.query_one(LogView)
        buffer = LogBuffer()
        start = time.perf_counter()
        for offset in range(0, len(data), 1 << 20):
            buffer.append("stdout", data[offset:offset + (1 << 20)])
        fill = time.perf_counter() - start
        view.attach(buffer)
        view.follow = False
        view.scroll_to(y=0, animate=False, immediate=True)
        view.focus()
        await pilot.pause()

        def cold_end() -> None:
            view._colours[buffer] = LineColours(buffer)  # forget every checkpoint
            view._cache.clear()
            view.action_follow()

        def home_end() -> None:
            view.action_top()
            view.action_follow()

        def wrap_twice() -> None:
            view.action_toggle_wrap()

        results = {"End, cold": await timed(pilot, cold_end, rounds),
                   "Home then End, warm": await timed(pilot, home_end, rounds)}
        view.wrap = False
        results["w (toggle) at the end"] = await timed(pilot, wrap_twice, rounds * 2)
        if not view.wrap:
            view.action_toggle_wrap()
        results["page up, wrapped"] = await timed(pilot, view.action_page_up, rounds)

        def page_up_now() -> None:  # the same without the scroll animation's frames
            view.scroll_to(y=view.scroll_y - view.size.height, animate=False, immediate=True)

        results["page up, wrapped, still"] = await timed(pilot, page_up_now, rounds)
        await pilot.pause()
        assert view.wrap and view.line_count == len(buffer)
        colours = view.colours().memory_bytes()
        print(f"\n{name}: {len(buffer):,} lines, {len(data) / 1e6:.0f} MB, "
              f"filled in {fill:.2f} s; index {buffer.memory_bytes() / 1e6:.1f} MB, "
              f"colour checkpoints {colours / 1e3:.0f} kB")
        for what, (best, median) in results.items():
            print(f"  {what:<26} best {best:7.1f} ms   median {median:7.1f} ms")
        buffer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(measure("plain", plain_log(args.lines), args.rounds))
    asyncio.run(measure("coloured", coloured_log(args.lines), args.rounds))


if __name__ == "__main__":
    main()
