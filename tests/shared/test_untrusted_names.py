"""Text every pilot's terminal shows is refused at every door when it could steer it.

A task's name is one line without control characters (C0, DEL, C1, U+2028/9)
and without bidi overrides or isolates; the relay's model, the drone's spec
parser, ``dragoon submit`` and the cockpit's dialog refuse the same names with
the same reason (shared/spec.py ``check_task_name``). What a drone says about
itself at the relay's door (hostname, version) follows the same one-line rule,
its labels the label rule.
"""

from __future__ import annotations

from typing import Any

import pytest
from dragoon.relay.models import InitBody, PollBody
from dragoon.shared import spec as rules

from tests.shared.test_spec_properties import (
    cli_submit,
    dialog,
    drone_parse_spec,
    relay_model,
    relay_submit,
    wire,
)


def shared(check: Any, value: Any) -> tuple[str, Any]:
    """The rule itself, as ``("ok", value)`` or ``("err", reason)``."""
    try:
        return "ok", check(value)
    except rules.SpecError as exc:
        return "err", str(exc)


CONTROL = "name: must be one line without control characters"
BIDI = ("name: must not hold bidi override or isolate characters "
        "(U+202A..U+202E, U+2066..U+2069)")


@pytest.mark.parametrize(("name", "reason"), [
    ("sweep \x1b]0;pwned\x07", CONTROL),
    ("sweep \x9b2J", CONTROL),
    ("sweep \x85", CONTROL),
    ("one\u2028two", CONTROL),
    ("one\u2029two", CONTROL),
    ("sweep \u202egnp.exe", BIDI),
    *((f"a{char}b", BIDI) for char in "\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069"),
])
def test_every_door_refuses_a_task_name_that_would_steer_a_terminal(name: str,
                                                                     reason: str) -> None:
    assert shared(rules.check_task_name, name) == ("err", reason)
    assert relay_submit(wire({"command": "true", "name": name})) == ("err", reason)
    assert drone_parse_spec(wire({"command": "true", "name": name})) == reason
    assert cli_submit(name=name) == ("err", reason)
    # the dialog trims what was typed first (U+0085 is white space to str.strip)
    assert dialog(name=name).field_errors == ({"name": reason} if name == name.strip() else {})


@pytest.mark.parametrize("name", ["x[/] [bold red]boom", "שלום sweep", "entraînement ✓ 日本",
                                  "👩‍💻 run", "a\u200db"])
def test_markup_and_every_script_are_fine_in_a_task_name(name: str) -> None:
    assert shared(rules.check_task_name, name) == ("ok", name)
    assert relay_submit(wire({"command": "true", "name": name}))[0] == "ok"
    assert cli_submit(name=name)[0] == "ok"
    assert dialog(name=name).field_errors == {}


@pytest.mark.parametrize("model", [InitBody, PollBody])
@pytest.mark.parametrize(("field", "value", "reason"), [
    ("hostname", "box\x1b[2J", "hostname: must be one line without control characters"),
    ("hostname", "box\u202e", "hostname: must not hold bidi override or isolate characters"),
    ("hostname", "b" * 256, "hostname: is longer than 255 characters"),
    ("version", "1.0\x07", "version: must be one line without control characters"),
    ("version", "1" * 101, "version: is longer than 100 characters"),
])
def test_a_drones_self_description_is_held_to_the_one_line_rule(
        model: Any, field: str, value: str, reason: str) -> None:
    body = {"name": "gpu-1", "secret": "s", "public_key": "k"} if model is InitBody else {}
    outcome = relay_model(model, {**body, field: value}, field)
    assert outcome[0] == "err" and outcome[1].startswith(reason), outcome
    assert relay_model(model, {**body, field: "box[/].example"}, field) == (
        "ok", "box[/].example")
    assert relay_model(model, {**body, field: ""}, field) == ("ok", "")
    assert relay_model(model, {**body, field: None}, field) == ("ok", None)


def test_polled_labels_are_held_to_the_label_rule() -> None:
    assert relay_model(PollBody, {"labels": ["gpu", "gpu", "a100"]}, "labels") == (
        "ok", ["gpu", "a100"])
    refused = relay_model(PollBody, {"labels": ["gpu", "[/]"]}, "labels")
    assert refused == ("err", "labels: '[/]' is not a label (1-63 of A-Z a-z 0-9 . _ : = -, "
                              "starting with a letter or digit)")
