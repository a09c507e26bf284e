"""Untrusted text is data, in the cockpit: a lying relay's and drone's words render inert.

The rule itself (cockpit/safe_text.py) is pinned first. Then the app runs over
a relay that lies (a fixed source whose drone names, labels, states, metrics,
task ids, names, commands, errors, messages, artifact paths, log output, relay
URL and pilot name carry rich markup, terminal escapes, 8-bit CSI and bidi
overrides): every view opens without a markup error, and no rendered screen
(the grid, the tree, the log pane and its title, the detail screen and its raw
JSON, the inbox, a toast, the palette, the dialogs, the connection bar) holds
a control character, only the placeholders. Last, a real relay and a lying
drone (``DroneClient``) bring such text in the way an attacker would.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dragoon.cockpit import safe_text
from dragoon.cockpit.app.application import CockpitApp
from dragoon.cockpit.app.live import SESSION_ENDED, LiveSource, describe
from dragoon.cockpit.app.messages import Link
from dragoon.cockpit.app.screens.detail import TaskDetailScreen
from dragoon.cockpit.app.screens.dialogs import ConfirmScreen, PromptScreen
from dragoon.cockpit.app.screens.inbox import InboxScreen
from dragoon.cockpit.app.widgets.logs.log_buffer import clean_line
from dragoon.cockpit.client import RelayClient, RelayError
from dragoon.cockpit.safe_text import clean, plain
from textual.command import CommandPalette

from tests.cockpit.fixed_source import NOW, FixedSource, demo_snapshot, fixed_clock, make_drone
from tests.cockpit.fixed_source import make_task as fixed_task
from tests.cockpit.waiting import showing, until
from tests.support import records
from tests.support.relay import RelayProcess

pytestmark = pytest.mark.anyio

TITLE = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J"
CSI8 = "\x9b31m"
BIDI = "\u202egnp.exe\u202c"
HOSTILE = f"[/] [bold red]boom {TITLE}{CLEAR}{CSI8}{BIDI}"
SHOWN = "[/] [bold red]boom ␛]0;pwned␇␛[2J\ufffd31m\ufffdgnp.exe\ufffd"
UNSAFE = ("\x1b", "\x07", "\x9b", "\u202e", "\u202c", "\u2066", "\u2069")


# -- the rule --------------------------------------------------------------------------------


def test_controls_become_visible_one_column_placeholders() -> None:
    assert clean(HOSTILE) == SHOWN
    assert clean("a\tb\nc\rd\x00e\x7f") == "a b␊c␍d␀e␡"
    assert clean("\x85next line\u2028\u2029\ud800") == "\ufffdnext line\ufffd\ufffd\ufffd"
    for char in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069":
        assert clean(f"a{char}b") == "a\ufffdb"
    text = "".join(map(chr, range(0x00, 0xa0)))
    assert len(clean(text)) == len(text)  # one character for one: cell widths hold


def test_ordinary_text_of_every_script_is_shown_as_written() -> None:
    for text in ("lr sweep", "entraînement ✓ 日本", "שלום עולם", "مرحبا", "👩‍💻 ok", "x[/]"):
        assert clean(text) == text
    assert clean(42) == "42" and clean(None) == "None"


def test_plain_text_is_never_read_as_markup() -> None:
    text = plain(f"x[/] [bold]{TITLE}", style="red")
    assert text.plain == "x[/] [bold]␛]0;pwned␇"
    assert text.spans == [] and str(text.style) == "red"


def test_safe_text_is_pure() -> None:
    """The CLI's `dragoon run` imports it; rich only when `plain` is called."""
    source = Path(safe_text.__file__)
    tree = ast.parse(source.read_text())
    top = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    names = {alias.name for node in top for alias in node.names}
    modules = {getattr(node, "module", None) for node in top}
    assert not {"rich", "textual"} & {str(m).split(".")[0] for m in modules | names}


def test_log_lines_drop_escapes_and_keep_the_rule_for_the_rest() -> None:
    # a log line's escape sequences are read (colours) or dropped (all else), never shown
    # or passed on; a BEL, C1 or bidi control left between them follows the one rule
    shown = "step 1 \ufffdgnp.exe\ufffd"
    assert clean_line(f"step 1 {TITLE}{BIDI}\r\n".encode()) == shown
    assert clean_line(b"\x1b[31mred\x07\ttab\n") == "red␇    tab"


def test_errors_are_described_as_safe_text() -> None:
    assert describe(RelayError("protocol", HOSTILE)) == f"protocol: {SHOWN}"
    assert describe(RelayError("bad_session", "the session was revoked")) == SESSION_ENDED


# -- a lying relay ---------------------------------------------------------------------------

EVIL_DRONE = f"evil[/]{TITLE}"
EVIL_TASK = f"t-[/]{CLEAR}"
EVIL_PATH = f"out/{TITLE}[/]{BIDI}.pt"


def hostile_snapshot() -> Any:
    snapshot = demo_snapshot()
    snapshot.drones.append(make_drone(
        9, name=EVIL_DRONE, labels=["[/]", TITLE, BIDI], state="online", hostname=HOSTILE,
        version=HOSTILE, running="[/]", slots=TITLE,
        metrics={"cpu_percent": float("nan"), "mem_total": "[/]", "mem_used": CLEAR,
                 "gpus": "[/]", TITLE: BIDI}))
    snapshot.tasks.append(fixed_task(
        50, "running", EVIL_DRONE, id=EVIL_TASK, name=HOSTILE, error=HOSTILE, pilot=HOSTILE,
        created_at=NOW - 1, started_at=NOW - 30, signal=None, dispatched_at=TITLE,
        cpu_seconds="[/]", peak_rss=CLEAR, stdout_size="[/]", exit_code=None,
        spec={"command": HOSTILE, "env": {"X": HOSTILE}, "cwd": HOSTILE, "timeout": TITLE,
              "grace": 10, "artifacts": [HOSTILE], "name": HOSTILE}))
    snapshot.messages.append({"id": 3, "task": EVIL_TASK, "drone": EVIL_DRONE, "text": HOSTILE,
                              "created_at": NOW - 10, "acked": False})
    return snapshot


class LyingRelay(FixedSource):
    """A relay that says whatever it likes; it keeps what the app asks to download."""

    relay_url = f"https://relay.example/{TITLE}"
    pilot = f"[/]{CLEAR}"

    def __init__(self) -> None:
        super().__init__(hostile_snapshot(), logs={
            "stdout": b"ok\n" + HOSTILE.encode() + b"\n" + b"\x1b[31mred\x07\n",
            "stderr": f"warning {TITLE}{BIDI}\n".encode()})
        self.downloads: list[Path] = []

    async def artifacts(self, task_id: str) -> list[dict[str, Any]]:
        return [{"path": EVIL_PATH, "size": TITLE, "sha256": HOSTILE, "uploaded_at": "[/]"}]

    async def download_artifact(self, task_id: str, artifact: dict[str, Any],
                                dest: Path, *, force: bool = False) -> Path:
        self.downloads.append(dest)
        return dest


def screen_text(app: CockpitApp) -> str:
    """What the terminal would be sent for the whole screen, as SVG text: no control
    character may be in it, whatever the relay said."""
    svg = app.export_screenshot()
    for char in UNSAFE:
        assert char not in svg, f"{char!r} reached the screen"
    return svg.replace("&#160;", " ")


async def loaded(pilot: Any, app: CockpitApp) -> None:
    await until(pilot, lambda: app.snapshots and not app._pending and app._log_task,
                what="the lying snapshot on screen")
    await until(pilot, lambda: len(app.log_view.buffer) >= 4, what="the log")
    app.log_view._flush(force=True)
    await pilot.pause()


async def test_every_view_renders_a_lying_relays_words_inert(tmp_path: Path) -> None:
    source = LyingRelay()
    app = CockpitApp(source, clock=fixed_clock, ping_interval=3600, download_dir=tmp_path)
    async with app.run_test(size=(200, 50), notifications=True) as pilot:
        await loaded(pilot, app)
        assert app._log_task == EVIL_TASK
        main = screen_text(app)
        for fragment in (" evil[/]␛]0;pwned␇ ", " [/],␛]0;pwned␇,",  # the grid's cells
                         ">evil[/]␛]0;pwned␇<", " t-[/]␛[2J ",  # the tree, the log's title
                         # the log: escapes read as colour or dropped, never shown or sent
                         "red␇", "warning \ufffdgnp.exe\ufffd",
                         "[/] [bold red]boom \ufffd31m\ufffdgnp.exe\ufffd"):
            assert fragment in main, fragment
        app.bar.link, app.bar.detail = Link.RECONNECTING, HOSTILE
        await pilot.pause()
        bar = screen_text(app)
        assert "relay.example/␛]0;pwned␇" in bar and "[/]␛[2J" in bar and SHOWN in bar

        await pilot.press("i")
        await until(pilot, lambda: showing(app, InboxScreen), what="the inbox")
        await pilot.pause()
        assert SHOWN in screen_text(app)
        await pilot.press("escape")

        app.tree.select_task(EVIL_TASK)
        app.tree.focus()
        await until(pilot, lambda: app.tree.selected_task_id == EVIL_TASK, what="the cursor")
        await pilot.press("enter")
        await until(pilot, lambda: showing(app, TaskDetailScreen)
                    and app.screen.artifact_rows, what="the detail and its artifacts")
        await pilot.pause()
        detail = screen_text(app)
        assert SHOWN in detail and "out/␛]0;pwned␇[/]\ufffdgnp.exe\ufffd.pt" in detail
        await pilot.press("d")
        await until(pilot, lambda: source.downloads, what="the download")
        # saved under its last part ("[/]" holds a slash), as safe text: no bidi in a file name
        assert source.downloads == [tmp_path / "]\ufffdgnp.exe\ufffd.pt"]
        await pilot.press("y")  # the raw JSON: escaped by JSON itself, lines kept
        await pilot.pause()
        assert "\\u001b]0;pwned\\u0007" in screen_text(app)
        await pilot.press("escape")

        await pilot.press("ctrl+p")
        await until(pilot, lambda: showing(app, CommandPalette), what="the palette")
        await pilot.press(*"cancel")
        await until(pilot, lambda: "dragoon cancel t-[/]␛[2J" in screen_text(app),
                    what="the palette's command line for the lying task")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.main, what="the main screen")

        app.grid.focus()
        app.grid.move_cursor(row=app.grid.get_row_index(EVIL_DRONE))
        await pilot.press("D")
        await until(pilot, lambda: showing(app, ConfirmScreen), what="the question")
        assert "Drain drone evil[/]␛]0;pwned␇?" in screen_text(app)
        await pilot.press("n")
        await until(pilot, lambda: app.screen is app.main, what="the main screen")
        await pilot.press("f")
        await until(pilot, lambda: showing(app, PromptScreen), what="the prompt")
        assert "Fetch a file from evil[/]␛]0;pwned␇" in screen_text(app)
        await pilot.press("escape")

        source.events_queue.put_nowait(("message", {
            "id": 4, "task": EVIL_TASK, "drone": EVIL_DRONE, "text": f"toast {HOSTILE}",
            "created_at": NOW, "acked": False}))
        await until(pilot, lambda: f"toast {SHOWN}" in screen_text(app), what="the toast")
        assert "✉ t-[/]␛[2J" in screen_text(app)


# -- a lying drone through a real relay ------------------------------------------------------


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    with RelayProcess(tmp_path_factory.mktemp("hostile-cockpit") / "relay") as process:
        yield process


async def test_a_lying_drones_words_reach_the_cockpit_inert(relay: RelayProcess,
                                                            tmp_path: Path) -> None:
    pilot = relay.pilot("alice")
    liar = relay.drone("liar-1", ["gpu"], slots=2)
    assert liar.poll(hostname="box[/]", version="[b]9",
                     metrics={"cpu_percent": TITLE, "gpus": [{"util": "[/]"}]}).status_code == 200
    task = pilot.submit("echo hi", drone="liar-1", name="x[/] [bold red]boom")["id"]
    assert [t["id"] for t in liar.poll().json()["tasks"]] == [task]
    # Sealed as a drone does: the liar has the task key (it runs the task), the relay not.
    output = records.seal(records.task_key(pilot, task), task, "stdout",
                          f"step 1 {TITLE}{CSI8}\n".encode())
    assert liar.log(task, "stdout", 0, output).status_code == 200
    assert liar.message(task, 0, HOSTILE).status_code == 200
    assert liar.blob(b"w", task=task, path=EVIL_PATH).status_code == 200
    client = RelayClient(relay.url, signer=pilot.signer, token=pilot.token,
                         env=pilot.env, timeout=10.0)
    app = CockpitApp(LiveSource(client, pilot="alice"), ping_interval=0.5)
    async with app.run_test(size=(200, 50)) as driver:
        await until(driver, lambda: app.link is Link.CONNECTED and task in app.state.tasks
                    and not app._pending, timeout=20, what="the cockpit on the lying data")
        app.attach_log(task)
        await until(driver, lambda: len(app.log_view.buffer) >= 1, timeout=20, what="the log")
        app.log_view._flush(force=True)
        await driver.pause()
        main = screen_text(app)
        assert "x[/] [bold red]boom" in main and "step 1 \ufffd31m" in main
        finish = liar.finish(task, "failed", exit_code=1, error=HOSTILE,
                             stdout_size=len(output), stderr_size=0)
        assert finish.status_code == 200, finish.text
        await until(driver, lambda: app.state.tasks[task].get("error") == HOSTILE,
                    timeout=20, what="the lying error")
        app.push_screen(TaskDetailScreen(task, state=app.state, clock=app.clock))
        await until(driver, lambda: showing(app, TaskDetailScreen)
                    and app.screen.artifact_rows, timeout=20, what="the detail")
        await driver.pause()
        detail = screen_text(app)
        assert SHOWN in detail and "out/␛]0;pwned␇[/]\ufffdgnp.exe\ufffd.pt" in detail
