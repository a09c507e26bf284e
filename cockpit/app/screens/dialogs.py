"""Modal dialogs: submit, confirm, fetch and the in-app TOTP login.

Each returns its answer through `dismiss`, so the app's actions read as
`answer = await self.push_screen_wait(Dialog(...))` and hold no widget state.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


class ConfirmScreen(ModalScreen[bool]):
    """Destructive actions ask first (k9s); Enter/y confirms, Escape/n declines."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, *, yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm", classes="dialog"):
            yield Static(self.question, id="question")
            with Horizontal(classes="buttons"):
                yield Button(self.yes, variant="error", id="yes")
                yield Button("No", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


@dataclass
class SubmitRequest:
    """What the submit dialog produces: the body of `POST /v1/tasks`, split for the client."""

    spec: dict[str, Any]
    drone: str | None = None
    labels: list[str] | None = None
    errors: list[str] = field(default_factory=list)


def parse_duration(text: str) -> int | None:
    """`90`, `90s`, `15m`, `3h`, `1d` → seconds; empty → None (no timeout)."""
    text = text.strip().lower()
    if not text:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(float(text))


def build_submit(*, target: str, command: str, timeout: str, artifacts: str, env: str,
                 name: str) -> SubmitRequest:
    """Turn the dialog's fields into a request; pure, so its rules are unit-tested."""
    request = SubmitRequest(spec={})
    target = target.strip()
    if target.startswith(("labels:", "label:")):
        labels = [x.strip() for x in target.split(":", 1)[1].split(",") if x.strip()]
        if not labels:
            request.errors.append("give at least one label after labels:")
        request.labels = labels
    elif target:
        request.drone = target
    else:
        request.errors.append("give a drone name or labels:a,b")
    if not command.strip():
        request.errors.append("the command is empty")
    spec: dict[str, Any] = {"command": command.strip()}
    try:
        spec["timeout"] = parse_duration(timeout)
    except ValueError:
        request.errors.append(f"timeout {timeout!r} is not like 90s, 15m or 3h")
    globs = [g for g in (x.strip() for x in artifacts.split(",")) if g]
    if globs:
        spec["artifacts"] = globs
    pairs: dict[str, str] = {}
    try:
        words = shlex.split(env)
    except ValueError as exc:
        words = []
        request.errors.append(f"env: {exc}")
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            request.errors.append(f"env entry {word!r} is not K=V")
        else:
            pairs[key] = value
    if pairs:
        spec["env"] = pairs
    if name.strip():
        spec["name"] = name.strip()
    request.spec = spec
    return request


class SubmitScreen(ModalScreen[SubmitRequest | None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Submit"),
    ]

    def __init__(self, *, drone: str | None = None) -> None:
        super().__init__()
        self.default_drone = drone or ""

    def compose(self) -> ComposeResult:
        with Vertical(id="submit", classes="dialog"):
            yield Static("Submit a task", classes="dialog-title")
            with Grid(id="submit-form"):
                yield Label("Drone or labels:")
                yield Input(self.default_drone, placeholder="gpu-1  or  labels:gpu,a100",
                            id="target", compact=True)
                yield Label("Command:")
                yield Input(placeholder="python train.py --lr 3e-4", id="command", compact=True)
                yield Label("Name:")
                yield Input(placeholder="optional", id="name", compact=True)
                yield Label("Timeout:")
                yield Input(placeholder="3h (empty: none)", id="timeout", compact=True)
                yield Label("Artifacts:")
                yield Input(placeholder="out/**/*.pt, logs/*.csv", id="artifacts", compact=True)
                yield Label("Env:")
                yield Input(placeholder="K=V OTHER='two words'", id="env", compact=True)
            yield Static("", id="submit-errors")
            with Horizontal(classes="buttons"):
                yield Button("Submit", variant="primary", id="do-submit")
                yield Button("Cancel", id="do-cancel")

    def on_mount(self) -> None:
        self.query_one("#command" if self.default_drone else "#target", Input).focus()

    def _value(self, widget_id: str) -> str:
        return self.query_one(f"#{widget_id}", Input).value

    def action_submit(self) -> None:
        request = build_submit(
            target=self._value("target"), command=self._value("command"),
            timeout=self._value("timeout"), artifacts=self._value("artifacts"),
            env=self._value("env"), name=self._value("name"),
        )
        if request.errors:
            self.query_one("#submit-errors", Static).update("\n".join(request.errors))
            return
        self.dismiss(request)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "do-submit":
            self.action_submit()
        else:
            self.dismiss(None)


class PromptScreen(ModalScreen[str | None]):
    """One line of input: a fetch path, or the TOTP code when the session expired."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, *, placeholder: str = "", password: bool = False,
                 value: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.placeholder = placeholder
        self.password = password
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog prompt"):
            yield Static(self.title_text, classes="dialog-title")
            yield Input(self.value, placeholder=self.placeholder, password=self.password,
                        id="prompt-input")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class JoinTokenScreen(ModalScreen[None]):
    """Shows a freshly minted join token once, with the command that uses it.

    The token is a secret that works once and expires, so it is shown here and
    copied on request (OSC 52), never written to a file or a log.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close"),
        Binding("y", "copy", "Copy the token"),
    ]

    def __init__(self, drone: str, token: str) -> None:
        super().__init__()
        self.drone = drone
        self.token = token

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog prompt"):
            yield Static(f"Join token for {self.drone} (one use, expires)",
                         classes="dialog-title")
            yield Static(self.token, id="join-token", markup=False)
            yield Static("On the drone's box:\n  dragoon drone join TOKEN --data DIR\n"
                         "y copies the token · esc closes", classes="dialog-hint")

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.token)
        self.notify("join token copied to the clipboard")
