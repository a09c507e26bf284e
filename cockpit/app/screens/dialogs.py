"""Modal dialogs: submit, confirm, overwrite, fetch and the in-app TOTP login.

Each returns its answer through `dismiss`, so the app's actions read as
`answer = await self.push_screen_wait(Dialog(...))` and hold no widget state.
A question or title that names a drone, a task or what the relay said is shown
as safe text (cockpit/safe_text.py), never as markup.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

from dragoon.cockpit.safe_text import clean, plain
from dragoon.shared import spec as rules
from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

DETAIL_CHARS: Final = 300  # a confirmation quotes a command this long at most


def details_table(details: Sequence[tuple[str, object]]) -> Table:
    """`label  value` lines under a question; each value is a drone's or a pilot's words,
    so it is safe text (cockpit/safe_text.py), cut to `DETAIL_CHARS`, never markup."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in details:
        text = clean(value)
        if len(text) > DETAIL_CHARS:
            text = text[: DETAIL_CHARS - 1] + "…"
        table.add_row(label, plain(text))
    return table


def cancel_details(task: Mapping[str, Any]) -> list[tuple[str, object]]:
    """What the cancel confirmation shows, so the pilot sees which run they stop."""
    spec = task.get("spec") or {}
    target = task.get("target") or {}
    drone = task.get("drone") or ("labels " + ",".join(map(str, target.get("labels") or []))
                                  if target.get("labels") else "-")
    return [("Name", task.get("name") or spec.get("name") or "-"),
            ("Drone", drone),
            ("State", task.get("state") or "-"),
            ("Command", spec.get("command") or "-")]


class ConfirmScreen(ModalScreen[bool]):
    """Destructive actions ask first (k9s); y confirms, n or Escape declines. The focus
    starts on the No button, so an Enter typed out of habit declines."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, *, yes: str = "Yes",
                 details: Sequence[tuple[str, object]] = ()) -> None:
        super().__init__()
        self.question = question
        self.yes = yes
        self.details = list(details)

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm", classes="dialog"):
            yield Static(plain(self.question), id="question")  # names a drone or a task
            if self.details:
                yield Static(details_table(self.details), id="confirm-details")
            yield Static("y confirms · n or esc declines", classes="dialog-hint")
            with Horizontal(classes="buttons"):
                yield Button(self.yes, variant="error", id="yes")
                yield Button("No", id="no")

    AUTO_FOCUS = "#no"  # Textual focuses it when the screen is shown (safe if it never was)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


OverwriteChoice = Literal["overwrite", "rename", "cancel"]


def save_name_problem(text: str) -> str | None:
    """A file name to save under, in the download directory: one name, no path."""
    name = text.strip()
    if name in ("", ".", ".."):
        return "give a file name"
    if "/" in name or "\\" in name:
        return "a file name only, without a directory"
    if clean(name) != name:
        return "a file name without control characters"
    if len(name.encode()) > 255:
        return "a file name of 255 bytes at most"
    return None


class OverwriteScreen(ModalScreen[OverwriteChoice]):
    """A download would replace a file that exists: overwrite it, save under another
    name, or cancel (the cockpit's answer to the CLI's `--force`)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("o", "answer('overwrite')", "Overwrite"),
        Binding("a", "answer('rename')", "Another name"),
        Binding("escape,n", "answer('cancel')", "Cancel"),
    ]

    def __init__(self, dest: Path) -> None:
        super().__init__()
        self.dest = dest

    def compose(self) -> ComposeResult:
        with Vertical(id="overwrite", classes="dialog"):
            # the name came from a drone (an artifact's path): safe text
            yield Static(plain(f"{self.dest.name} already exists in {self.dest.parent}."),
                         id="question")
            yield Static("Replace it, or save the download under another name?\n"
                         "o overwrites · a asks for another name · esc cancels",
                         classes="dialog-hint")
            with Horizontal(classes="buttons"):
                yield Button("Overwrite", variant="error", id="overwrite-yes")
                yield Button("Another name", variant="primary", id="overwrite-rename")
                yield Button("Cancel", id="overwrite-cancel")

    AUTO_FOCUS = "#overwrite-rename"

    def on_button_pressed(self, event: Button.Pressed) -> None:
        choice: dict[str | None, OverwriteChoice] = {"overwrite-yes": "overwrite",
                                                     "overwrite-rename": "rename"}
        self.dismiss(choice.get(event.button.id, "cancel"))

    def action_answer(self, answer: OverwriteChoice) -> None:
        self.dismiss(answer)


# The form's fields, in order, and which of them each rule of shared/spec.py reports on.
SUBMIT_FIELDS = ("target", "command", "name", "timeout", "artifacts", "env")
_FIELD_OF = {"drone": "target", "labels": "target", "command": "command", "name": "name",
             "timeout": "timeout", "grace": "timeout", "artifacts": "artifacts", "env": "env",
             "cwd": "command", "spec": "command"}


@dataclass
class SubmitRequest:
    """What the submit dialog produces: the body of `POST /v1/tasks`, split for the client.

    ``field_errors`` maps a form field to the one-line reason shared/spec.py
    gave, which the dialog shows under that field; empty means it may be sent.
    """

    spec: dict[str, Any]
    drone: str | None = None
    labels: list[str] | None = None
    field_errors: dict[str, str] = field(default_factory=dict)

    @property
    def errors(self) -> list[str]:
        return list(self.field_errors.values())


def parse_duration(text: str) -> int | None:
    """The timeout field: empty is no timeout; else the CLI's `--timeout` rule (shared/spec.py)."""
    return rules.parse_duration(text, field="timeout") if text.strip() else None


def build_submit(*, target: str, command: str, timeout: str, artifacts: str, env: str,
                 name: str) -> SubmitRequest:
    """Turn the dialog's fields into a request; pure, so its rules are unit-tested.

    Each field goes through the parser `dragoon submit` uses for the same flag,
    and the whole spec through the relay's own check, so the dialog refuses
    exactly what the CLI and the relay refuse, with the same reason.
    """
    request = SubmitRequest(spec={})
    errors = request.field_errors

    def check(form_field: str, parse: Callable[[], Any]) -> Any:
        try:
            return parse()
        except rules.SpecError as exc:
            errors.setdefault(form_field, str(exc))
            return None

    target = target.strip()
    if target.startswith(("labels:", "label:")):
        request.labels = check("target", lambda: rules.parse_labels(
            target.split(":", 1)[1], at_least_one=True)) or []
    elif target:
        request.drone = check("target", lambda: rules.parse_drone_name(target))
    else:
        errors["target"] = "give a drone name or labels:a,b"
    spec: dict[str, Any] = {"command": command.strip()}
    check("command", lambda: rules.check_command(spec["command"]))
    spec["timeout"] = check("timeout", lambda: parse_duration(timeout))
    globs = check("artifacts", lambda: rules.parse_globs(artifacts)) or []
    if globs:
        spec["artifacts"] = globs
    pairs = check("env", lambda: _env_pairs(env)) or {}
    if pairs:
        spec["env"] = pairs
    if name.strip():
        spec["name"] = check("name", lambda: rules.check_task_name(name.strip()))
    if not errors:
        try:  # the spec as a whole (counts, sizes): what the relay would refuse, refused here
            rules.parse_spec(spec)
        except rules.SpecError as exc:
            errors[_FIELD_OF.get(exc.field, "command")] = str(exc)
    request.spec = spec
    return request


def _env_pairs(text: str) -> dict[str, str]:
    """The env field: shell words (quotes allowed), each `K=V` by the CLI's `--env` rule."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise rules.SpecError("env", str(exc)) from None
    return rules.check_env(dict(rules.parse_env_entry(word) for word in words))


def field_problem(parse: Callable[[str], Any]) -> Callable[[str], str | None]:
    """A validator for `PromptScreen`: None when ``parse`` takes the text, else its reason."""

    def problem(text: str) -> str | None:
        try:
            parse(text)
        except rules.SpecError as exc:
            return str(exc)
        return None

    return problem


# The enroll prompts: a drone's name and its labels, by the rules `dragoon enroll` uses.
drone_name_problem = field_problem(rules.parse_drone_name)
labels_problem = field_problem(rules.parse_labels)


class SubmitScreen(ModalScreen[SubmitRequest | None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Submit"),
    ]

    def __init__(self, *, drone: str | None = None) -> None:
        super().__init__()
        self.default_drone = drone or ""
        self.AUTO_FOCUS = "#command" if self.default_drone else "#target"

    def compose(self) -> ComposeResult:
        with Vertical(id="submit", classes="dialog"):
            yield Static("Submit a task", classes="dialog-title")
            with Grid(id="submit-form"):
                for field_id, label, placeholder in (
                    ("target", "Drone or labels:", "gpu-1  or  labels:gpu,a100"),
                    ("command", "Command:", "python train.py --lr 3e-4"),
                    ("name", "Name:", "optional"),
                    ("timeout", "Timeout:", "3h (empty: none)"),
                    ("artifacts", "Artifacts:", "out/**/*.pt, logs/*.csv"),
                    ("env", "Env:", "K=V OTHER='two words'"),
                ):
                    yield Label(label)
                    yield Input(self.default_drone if field_id == "target" else "",
                                placeholder=placeholder, id=field_id, compact=True)
                    # The field's reason, shown under it only while there is one.
                    yield Static("", id=f"{field_id}-error-pad", classes="error-pad")
                    yield Static("", id=f"{field_id}-error", classes="error", markup=False)
            yield Static("", id="submit-errors", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Submit", variant="primary", id="do-submit")
                yield Button("Cancel", id="do-cancel")


    def _value(self, widget_id: str) -> str:
        return self.query_one(f"#{widget_id}", Input).value

    def action_submit(self) -> None:
        request = build_submit(
            target=self._value("target"), command=self._value("command"),
            timeout=self._value("timeout"), artifacts=self._value("artifacts"),
            env=self._value("env"), name=self._value("name"),
        )
        self.show_errors(request.field_errors)
        if request.field_errors:
            return
        self.dismiss(request)

    def show_errors(self, errors: dict[str, str]) -> None:
        """Each reason under its field, the dialog kept open; fixed fields lose theirs."""
        for field_id in SUBMIT_FIELDS:
            reason = errors.get(field_id, "")
            line = self.query_one(f"#{field_id}-error", Static)
            line.update(reason)
            line.display = bool(reason)
            self.query_one(f"#{field_id}-error-pad", Static).display = bool(reason)
        unplaced = [text for key, text in errors.items() if key not in SUBMIT_FIELDS]
        self.query_one("#submit-errors", Static).update("\n".join(unplaced))

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
                 value: str = "", validate: Callable[[str], str | None] | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.placeholder = placeholder
        self.password = password
        self.value = value
        self.validate = validate  # text -> None, or the reason shown under the input

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog prompt"):
            yield Static(plain(self.title_text), classes="dialog-title")
            yield Input(self.value, placeholder=self.placeholder, password=self.password,
                        id="prompt-input")
            yield Static("", id="prompt-error", classes="error", markup=False)
            yield Static("enter confirms · esc cancels", classes="dialog-hint")

    AUTO_FOCUS = "#prompt-input"

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        reason = self.validate(text) if text and self.validate is not None else None
        line = self.query_one("#prompt-error", Static)
        line.update(reason or "")
        line.display = reason is not None
        if reason is None:
            self.dismiss(text or None)

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
            yield Static(plain(f"Join token for {self.drone} (one use, expires)"),
                         classes="dialog-title")
            yield Static(plain(self.token), id="join-token")
            yield Static("On the drone's box:\n  dragoon drone join TOKEN --data DIR\n"
                         "y copies the token · esc closes", classes="dialog-hint")

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.token)
        self.notify("join token copied to the clipboard")
