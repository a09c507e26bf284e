"""Every door accepts exactly what shared/spec.py accepts, and refuses the rest with its reason.

For random and adversarial durations, labels, env entries, names, globs and
whole specs, each door is driven through its own entry point, no relay
needed: the pilot CLI's click types and its submit path, the cockpit's pure
form functions, the relay's pydantic models (with the relay's own 422 text),
the relay's and the drone's command lines (click's runner), and the drone's
``parse_spec``. Each door's answer is reduced to ``("ok", value)`` or
``("err", reason)`` and all must be equal. Small runs: seconds, not minutes.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
from click.testing import CliRunner
from dragoon.cockpit.app.screens.dialogs import build_submit, drone_name_problem, labels_problem
from dragoon.cockpit.cli._common import Duration, EnvPair, Labels, OneLineUsageError
from dragoon.cockpit.cli.tasks import _target_and_spec
from dragoon.drone.cli import drone as drone_cli
from dragoon.drone.verify import parse_spec as drone_parse_spec
from dragoon.relay.cli import relay as relay_cli
from dragoon.relay.enroll import check_labels as relay_check_labels
from dragoon.relay.enroll import check_name as relay_check_name
from dragoon.relay.errors import ApiError, _describe
from dragoon.relay.models import MintBody, SubmitBody
from dragoon.shared import spec as rules
from dragoon.shared.canonical import canonical_json
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

SMALL = settings(max_examples=200, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])
Outcome = tuple[str, Any]

# -- inputs ----------------------------------------------------------------------------------

TRICKY = ["", " ", "  ", ",", ", ", "=", ".", "-", "_", ":", "/", "~", "..", "../", "*", "**",
          "\x00", "\ud800", "\udcff", "\ud800\udc00", "\n", "\t", "\x7f", "é", "日", "٣", "0",
          "1", "9", "42", "a", "Z", "d", "h", "m", "s", "H", "1h30m", "5m", "2d", "0.5", "labels:",
          "x" * 70]
pieces = st.one_of(st.sampled_from(TRICKY), st.text(max_size=4), st.characters())
junk = st.lists(pieces, max_size=8).map("".join)

LABEL = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:=-]{0,62}", fullmatch=True)
NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", fullmatch=True)
ENV_NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
GLOB = st.from_regex(r"(\.\./|/|~|\./)?[a-z*?]{0,4}(/(\.\.|\*\*|[a-z*.]{1,4})){0,3}",
                     fullmatch=True)

units = st.sampled_from(["d", "h", "m", "s", "D", "H", "M", "S"])
ordered_units = st.lists(st.sampled_from("dhms"), min_size=1, max_size=4, unique=True).map(
    lambda picked: [unit for unit in "dhms" if unit in picked])
durations = st.one_of(
    st.integers(-3, 4 * rules.MAX_TIMEOUT).map(str),
    ordered_units.flatmap(lambda chosen: st.tuples(*(
        st.tuples(st.integers(0, 400).map(str), st.sampled_from(["", " "]), st.just(unit))
        for unit in chosen))).map(lambda parts: "".join(n + gap + u for n, gap, u in parts)),
    st.lists(st.tuples(st.integers(0, 10**7).map(str) | st.sampled_from(["1.5", "0.25", "2."]),
                       st.sampled_from(["", " "]), units), min_size=1, max_size=5)
    .map(lambda parts: "".join(n + gap + u for n, gap, u in parts)),
    junk,
)
label_lists = st.lists(st.one_of(LABEL, junk), max_size=5).flatmap(
    lambda labels: st.sampled_from([",", ", ", " , ", ",,"]).map(lambda sep: sep.join(labels)))
label_texts = st.one_of(label_lists, junk)
env_entries = st.one_of(st.tuples(st.one_of(ENV_NAME, junk), junk).map("=".join), junk)
names = st.one_of(NAME, junk)
task_names = st.one_of(st.text(max_size=12), junk, st.just("x" * 200), st.just("x" * 201))
globs = st.one_of(GLOB, junk)

json_text = st.one_of(st.text(max_size=12), junk)
spec_fields: dict[str, st.SearchStrategy[Any]] = {
    "env": st.one_of(st.dictionaries(st.one_of(ENV_NAME, junk), st.one_of(json_text,
                                                                          st.integers()),
                                     max_size=3),
                     st.lists(json_text, max_size=2), st.none()),
    "cwd": st.one_of(st.none(), json_text, st.integers()),
    "timeout": st.one_of(st.none(), st.integers(-3, 2 * rules.MAX_TIMEOUT), st.just(10**30),
                         st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                         json_text),
    "grace": st.one_of(st.integers(-3, 4000), st.none(), st.booleans(),
                       st.floats(allow_nan=False, allow_infinity=False)),
    "artifacts": st.one_of(st.lists(globs, max_size=3), json_text, st.none(),
                           st.lists(st.integers(), max_size=2)),
    "name": st.one_of(st.none(), task_names, st.integers()),
    "stdin": st.one_of(st.booleans(), st.integers(0, 1), st.none(), json_text),
    "surprise": st.integers(),
}
commands = st.one_of(st.text(min_size=1, max_size=20), junk, st.integers(), st.none(),
                     st.just("x" * (rules.MAX_COMMAND_BYTES + 1)))
valid_fields: dict[str, st.SearchStrategy[Any]] = {
    "env": st.dictionaries(ENV_NAME, st.text(max_size=8), max_size=3),
    "cwd": st.none() | st.text(min_size=1, max_size=8),
    "timeout": st.none() | st.integers(1, rules.MAX_TIMEOUT),
    "grace": st.integers(0, rules.MAX_GRACE),
    "artifacts": st.lists(st.from_regex(r"[a-z*]{1,4}(/[a-z*]{1,4}){0,2}", fullmatch=True),
                          max_size=3),
    "name": st.none() | st.text(min_size=1, max_size=12).filter(str.isprintable),
    "stdin": st.booleans(),
}
spec_values = st.one_of(
    st.fixed_dictionaries({"command": st.text(min_size=1, max_size=20).filter(str.strip)},
                          optional=valid_fields),
    st.fixed_dictionaries({"command": st.text(min_size=1, max_size=20).filter(str.strip)},
                          optional={k: v for k, v in spec_fields.items() if k != "surprise"}),
    st.fixed_dictionaries({}, optional={"command": commands, **spec_fields}),
    st.one_of(st.lists(st.integers(), max_size=2), json_text, st.integers(), st.none()),
)

# -- each door, reduced to an outcome --------------------------------------------------------


def shared(call: Any, *args: Any, **kwargs: Any) -> Outcome:
    """The rule itself; ``--hypothesis-show-statistics`` shows both answers are reached."""
    try:
        outcome: Outcome = "ok", call(*args, **kwargs)
    except rules.SpecError as exc:
        outcome = "err", str(exc)
    event(f"{getattr(call, '__name__', 'rule')}: {'accepted' if outcome[0] == 'ok' else 'refused'}")
    return outcome


def cli_type(kind: click.ParamType, flag: str, text: str) -> Outcome:
    """A pilot flag as click converts it; click names the flag, shared/spec.py the problem."""
    param = click.Option([flag])
    try:
        return "ok", kind.convert(text, param, None)
    except click.BadParameter as exc:
        return "err", f"{param.name}: {exc.message}"


def cli_submit(*, drone: str = "gpu-1", artifacts: tuple[str, ...] = (),
               name: str | None = None, env: tuple[tuple[str, str], ...] = ()) -> Outcome:
    """`dragoon submit` past its flags: the drone and the whole spec, before any request."""
    try:
        got = _target_and_spec((drone, "true"), None, None, None, None, env, artifacts, name)
    except OneLineUsageError as exc:
        return "err", exc.format_message()
    return "ok", got


def dialog(**fields: str) -> Any:
    form = {"target": "gpu-1", "command": "true", "timeout": "", "artifacts": "", "env": "",
            "name": ""}
    return build_submit(**{**form, **fields})


class _Sealed:
    """What reached the drone through the relay: the whole spec the pilot's door sealed
    (``wire()``, and its fields as attributes), whose clear part the relay's model took."""

    def __init__(self, wire: dict[str, Any]) -> None:
        self._wire = wire

    def wire(self) -> dict[str, Any]:
        return self._wire

    def __getattr__(self, name: str) -> Any:
        return self._wire.get(name)


def relay_submit(spec: Any, **body: Any) -> Outcome:
    """A spec's way to the relay since specs are sealed (issue 13): the pilot's door holds
    the whole spec to the rule and seals it (its reason, for a sealed field, is the door's:
    the relay never sees one), and the relay's body model judges the clear part it is sent,
    with the detail its 422 would carry (relay/errors.py)."""
    full: dict[str, Any] | None = None
    clear = spec
    if isinstance(spec, dict):
        sealed_fields = set(rules.SPEC_FIELDS) - set(rules.CLEAR_FIELDS)
        try:
            parsed = rules.parse_spec(spec)
        except rules.SpecError as exc:
            if exc.field in sealed_fields or (exc.field == "spec" and any(
                    key in sealed_fields for key in str(exc.problem).split("'"))):
                return "err", str(exc)
            clear = {k: v for k, v in spec.items() if k not in sealed_fields}
        else:
            full, clear = dict(parsed.to_json()), parsed.clear()
    try:
        model = SubmitBody.model_validate({"spec": clear, "drone": "gpu-1", **body})
    except ValidationError as exc:
        return "err", _describe(exc.errors())
    return "ok", SimpleNamespace(spec=_Sealed(full or model.spec.wire()), drone=model.drone,
                                 labels=model.labels)


def relay_model(model: Any, body: dict[str, Any], attribute: str) -> Outcome:
    try:
        return "ok", getattr(model.model_validate(body), attribute)
    except ValidationError as exc:
        return "err", _describe(exc.errors())


def relay_api(check: Any, value: Any) -> Outcome:
    try:
        return "ok", check(value)
    except ApiError as exc:
        return "err", exc.detail


def click_run(group: click.Group, args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(group, args)
    return result.exit_code, result.output


def wire(value: Any) -> Any:
    """As the value would arrive over HTTP."""
    return json.loads(json.dumps(value))


def arrived(rule: Any, typed: str, received: str, judged: Outcome) -> Outcome:
    """What the relay's and the drone's doors must answer for ``typed`` once it arrives.

    Mostly a pilot's text arrives as it was typed (``received == typed``), so it must be
    judged as the pilot's doors judged it. But two lone surrogates in a row
    ("\\ud800\\udc00", which no pilot door lets out: the rule refuses lone surrogates)
    travel as two escapes that JSON joins into one valid character on the way in: the
    relay and the drone receive another text, and must judge that one by the rule."""
    return judged if received == typed else shared(rule, received)


# -- durations -------------------------------------------------------------------------------

@SMALL
@given(text=durations)
def test_timeout_parses_the_same_in_the_cli_and_the_dialog(text: str) -> None:
    expected = shared(rules.parse_duration, text, field="timeout")
    assert cli_type(Duration("timeout"), "--timeout", text) == expected
    form = dialog(timeout=text)
    got = ("err", form.field_errors["timeout"]) if "timeout" in form.field_errors else (
        "ok", form.spec["timeout"])
    assert got == (expected if text.strip() else ("ok", None))  # empty field: no timeout


@SMALL
@given(number=st.integers(0, 2 * rules.MAX_TIMEOUT) | st.integers(0, 5000),
       field=st.sampled_from(["timeout", "grace"]))
def test_a_typed_whole_number_and_the_json_integer_meet_the_same_rule(number: int,
                                                                       field: str) -> None:
    """`--timeout 0` at the CLI and `"timeout": 0` at the relay or the drone: one reason."""
    typed = shared(rules.parse_duration, str(number), field=field)
    assert cli_type(Duration(field), f"--{field}", str(number)) == typed
    assert shared(rules.check_seconds, field, number) == typed
    spec = {"command": "true", field: number}
    relay = relay_submit(spec)
    drone = drone_parse_spec(spec)
    if typed[0] == "ok":
        assert relay[0] == "ok" and getattr(relay[1].spec, field) == number
        assert not isinstance(drone, str) and getattr(drone, field) == number
    else:
        assert relay == typed and drone == typed[1]


@SMALL
@given(text=durations)
def test_ttl_parses_the_same_in_both_enroll_commands(text: str, tmp_path: Path) -> None:
    expected = shared(rules.parse_duration, text, field="ttl")
    assert cli_type(Duration("ttl"), "--ttl", text) == expected
    code, out = click_run(relay_cli, ["enroll", "--data", str(tmp_path / "none"), "--drone",
                                      "gpu-1", "--ttl", text])
    if expected[0] == "ok":
        assert code == 1 and "is not a relay data directory" in out
    else:
        assert code == 2 and expected[1].split(": ", 1)[1] in out


# -- labels ----------------------------------------------------------------------------------

@SMALL
@given(text=label_texts)
def test_target_labels_parse_the_same_in_the_cli_and_the_dialog(text: str) -> None:
    expected = shared(rules.parse_labels, text, at_least_one=True)
    assert cli_type(Labels(at_least_one=True), "--labels", text) == expected
    form = dialog(target=f"labels:{text}")
    got = ("err", form.field_errors["target"]) if "target" in form.field_errors else (
        "ok", form.labels)
    # The dialog strips the whole field first, which only ever removes spaces the rule drops.
    assert got == shared(rules.parse_labels, text.rstrip(), at_least_one=True)
    if expected[0] == "ok":
        assert relay_submit({"command": "true"}, drone=None, labels=expected[1])[0] == "ok"
        assert relay_api(relay_check_labels, expected[1]) == ("ok", sorted(expected[1]))


@SMALL
@given(text=label_texts)
def test_drone_labels_parse_the_same_at_every_enroll_and_join(text: str,
                                                              tmp_path: Path) -> None:
    expected = shared(rules.parse_labels, text)
    assert cli_type(Labels(), "--labels", text) == expected
    stripped = text.strip()  # the enroll dialog's prompt strips, then checks what is left
    prompt = shared(rules.parse_labels, stripped)
    assert (labels_problem(stripped) if stripped else None) == (
        prompt[1] if prompt[0] == "err" else None)
    assert (prompt[0] == "ok") == (expected[0] == "ok")
    code, out = click_run(relay_cli, ["enroll", "--data", str(tmp_path / "none"), "--drone",
                                      "gpu-1", "--labels", text])
    joined, joined_out = click_run(drone_cli, ["join", "not-a-token", "--data",
                                               str(tmp_path / "drone"), "--labels", text])
    if expected[0] == "ok":
        assert code == 1 and "is not a relay data directory" in out
        assert joined == 1 and "dragoon drone join: " in joined_out
        assert relay_api(relay_check_labels, expected[1]) == ("ok", sorted(expected[1]))
        assert relay_model(MintBody, {"name": "gpu-1", "labels": expected[1]}, "labels") == \
            expected
    else:
        problem = expected[1].split(": ", 1)[1]
        assert code == 2 and problem in out
        assert joined == 2 and problem in joined_out


@SMALL
@given(labels=st.lists(st.one_of(LABEL, junk, st.integers()), max_size=4))
def test_json_labels_are_judged_the_same_by_every_relay_route(labels: list[Any]) -> None:
    expected = shared(rules.check_labels, labels)
    submitted = relay_submit({"command": "true"}, drone=None, labels=labels)
    assert relay_model(MintBody, {"name": "gpu-1", "labels": labels}, "labels") == expected
    if expected[0] == "ok":
        assert submitted[0] == "ok" and submitted[1].labels == expected[1]
        assert relay_api(relay_check_labels, labels) == ("ok", sorted(expected[1]))
    else:
        assert submitted == expected
        assert relay_api(relay_check_labels, labels) == expected


# -- env entries -----------------------------------------------------------------------------

@SMALL
@given(text=env_entries)
@example(text="A=\ud800\udc00")  # refused as typed, a valid character once it arrives
def test_env_entries_parse_the_same_in_the_cli_the_dialog_and_the_spec(text: str) -> None:
    expected = shared(rules.parse_env_entry, text)
    assert cli_type(EnvPair(), "--env", text) == expected
    form = dialog(env=shlex.quote(text))
    got = ("err", form.field_errors["env"]) if "env" in form.field_errors else (
        "ok", next(iter(form.spec["env"].items())))
    assert got == expected
    if "=" in text:
        name, value = text.split("=", 1)
        if expected[0] == "err":
            assert cli_submit(env=((name, value),)) == expected
        spec = wire({"command": "true", "env": {name: value}})
        [(name, value)] = spec["env"].items()
        received = arrived(rules.parse_env_entry, text, f"{name}={value}", expected)
        relay = relay_submit(spec)
        drone = drone_parse_spec(spec)
        if received[0] == "ok":
            assert relay[0] == "ok" and dict(relay[1].spec.env) == {name: value}
            assert not isinstance(drone, str) and dict(drone.env) == {name: value}
        else:
            assert relay == received and drone == received[1]


# -- names -----------------------------------------------------------------------------------

@SMALL
@given(text=names)
def test_drone_names_are_judged_the_same_by_every_door(text: str) -> None:
    typed = shared(rules.parse_drone_name, text)
    exact = shared(rules.check_drone_name, text)
    submitted = cli_submit(drone=text)
    assert (submitted[0], submitted[1][0] if submitted[0] == "ok" else submitted[1]) == typed
    if not text.strip().startswith(("labels:", "label:")) and text.strip():
        form = dialog(target=text)
        assert form.field_errors.get("target") == (typed[1] if typed[0] == "err" else None)
        assert drone_name_problem(text.strip()) == form.field_errors.get("target")
    relay = relay_submit({"command": "true"}, drone=text)
    assert (relay[0], relay[1].drone if relay[0] == "ok" else relay[1]) == exact
    assert relay_api(relay_check_name, text) == exact
    assert relay_model(MintBody, {"name": text}, "name") == exact


@SMALL
@given(text=task_names)
@example(text="x\ud800\udc00")
def test_task_names_are_judged_the_same_by_every_door(text: str) -> None:
    expected = shared(rules.check_task_name, text)
    assert (cli_submit(name=text)[0] == "ok") if expected[0] == "ok" else (
        cli_submit(name=text) == expected)
    spec = wire({"command": "true", "name": text})
    received = arrived(rules.check_task_name, text, spec["name"], expected)
    relay = relay_submit(spec)
    drone = drone_parse_spec(spec)
    if received[0] == "ok":
        assert relay[0] == "ok" and relay[1].spec.name == spec["name"]
        assert not isinstance(drone, str) and drone.name == spec["name"]
    else:
        assert relay == received and drone == received[1]
    if text and text == text.strip():
        assert dialog(name=text).field_errors.get("name") == (
            expected[1] if expected[0] == "err" else None)


# -- artifact globs --------------------------------------------------------------------------

@SMALL
@given(text=globs)
@example(text="a\ud800\udc00")
def test_artifact_globs_are_judged_the_same_by_every_door(text: str) -> None:
    expected = shared(rules.check_glob, text)
    cli = cli_submit(artifacts=(text,))
    assert cli[0] == "ok" if expected[0] == "ok" else cli == expected
    spec = wire({"command": "true", "artifacts": [text]})
    [sent] = spec["artifacts"]
    received = arrived(rules.check_glob, text, sent, expected)
    relay = relay_submit(spec)
    drone = drone_parse_spec(spec)
    if received[0] == "ok":
        assert relay[0] == "ok" and relay[1].spec.artifacts == [sent]
        assert not isinstance(drone, str) and drone.artifacts == (sent,)
    else:
        assert relay == received and drone == received[1]
    if text and text == text.strip() and "," not in text:
        assert dialog(artifacts=text).field_errors.get("artifacts") == (
            expected[1] if expected[0] == "err" else None)


# -- whole specs -----------------------------------------------------------------------------

@SMALL
@given(raw=spec_values)
def test_the_relay_and_the_drone_accept_the_same_specs_with_the_same_reasons(raw: Any) -> None:
    raw = wire(raw)
    expected = shared(rules.parse_spec, raw)
    relay = relay_submit(raw)
    drone = drone_parse_spec(raw)
    if expected[0] == "ok":
        spec = expected[1]
        assert relay[0] == "ok" and relay[1].spec.wire() == spec.to_json()
        assert drone == spec
    else:
        assert relay == expected
        assert drone == expected[1]


@SMALL
@given(raw=spec_values)
def test_the_canonical_form_round_trips_and_its_bytes_are_stable(raw: Any) -> None:
    raw = wire(raw)
    try:
        spec = rules.parse_spec(raw)
    except rules.SpecError:
        return
    again = rules.parse_spec(json.loads(spec.canonical()))
    assert again == spec
    assert again.canonical() == spec.canonical()
    # What the relay stores and signs (the clear part) hashes to the same bytes.
    stored = json.loads(json.dumps(SubmitBody.model_validate(
        {"spec": spec.clear(), "drone": "gpu-1"}).spec.wire()))
    assert canonical_json(stored) == canonical_json(spec.clear())
    assert rules.parse_clear_spec(stored) == spec.clear()
