"""shared.spec: each parser's named edge cases, and the spec's limits, fields and bytes.

The cross-door checks (the CLI, the dialog, the relay and the drone agreeing
on every input) are in test_spec_properties.py; this file pins the rules.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from dragoon.shared.canonical import canonical_json, spec_sha256
from dragoon.shared.spec import (
    MAX_COMMAND_BYTES,
    MAX_ENV_ENTRIES,
    MAX_TIMEOUT,
    SpecError,
    TaskSpec,
    check_drone_name,
    check_labels,
    check_task_name,
    parse_drone_name,
    parse_duration,
    parse_env_entry,
    parse_globs,
    parse_labels,
    parse_size,
    parse_spec,
)

from tests.shared.conftest import load_vectors


def refusal(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(SpecError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


# -- durations -------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("2d", 172800), ("3h", 10800),
    ("1d2h3m4s", 93784), ("1h 30m", 5400), (" 15m ", 900), ("1H30M", 5400), ("1.5h", 5400),
    ("0.5m", 30),
])
def test_durations_in_every_accepted_form(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "0s", "0h0m"])
def test_a_zero_timeout_is_refused_with_a_clear_reason(text: str) -> None:
    assert refusal(parse_duration, text) == "timeout: must be more than zero"


def test_a_zero_grace_is_allowed_and_means_sigkill_at_once() -> None:
    assert parse_duration("0", field="grace") == 0


@pytest.mark.parametrize("text", ["soon", "3x", "-1s", "1h30", "m", "1m1h", "1e3", "1,5h",
                                  "٣s", "1h1h", "9" * 70])
def test_garbage_is_not_a_duration(text: str) -> None:
    assert refusal(parse_duration, text).startswith("timeout: ")
    assert "is not a duration like 90, 90s, 5m, 1h30m or 2d" in refusal(parse_duration, text)


def test_an_empty_duration_says_what_to_type() -> None:
    assert refusal(parse_duration, "  ") == ("timeout: is empty; give a duration like 90, 90s, "
                                            "5m, 1h30m or 2d")


def test_a_fraction_of_a_second_is_refused() -> None:
    assert refusal(parse_duration, "0.5s") == "timeout: '0.5s' is not a whole number of seconds"


@pytest.mark.parametrize(("field", "text", "reason"), [
    ("timeout", "36601d", "timeout: must be at most 100 years"),
    ("timeout", "99999999999999999999d", "timeout: must be at most 100 years"),
    ("grace", "61m", "grace: must be at most 1h"),
    ("ttl", "31d", "ttl: must be at most 30d"),
])
def test_overflow_names_the_ceiling(field: str, text: str, reason: str) -> None:
    assert refusal(parse_duration, text, field=field) == reason


def test_the_longest_timeout_is_accepted() -> None:
    assert parse_duration(str(MAX_TIMEOUT)) == MAX_TIMEOUT


# -- labels ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "labels"), [
    ("gpu,a100", ["gpu", "a100"]), ("gpu, a100", ["gpu", "a100"]),
    (" gpu ,  a100 ", ["gpu", "a100"]), ("a100,gpu,a100", ["a100", "gpu"]),
    ("zone=eu:1", ["zone=eu:1"]), ("", []), ("   ", []),
])
def test_labels_take_spaces_around_commas_and_drop_duplicates_in_order(
        text: str, labels: list[str]) -> None:
    assert parse_labels(text) == labels


@pytest.mark.parametrize(("text", "reason"), [
    ("a,,b", "labels: 'a,,b' has an empty label between commas"),
    ("gpu,", "labels: 'gpu,' has an empty label between commas"),
    ("gpu a100", "labels: 'gpu a100' is not a label (1-63 of A-Z a-z 0-9 . _ : = -, starting "
                 "with a letter or digit)"),
    ("-gpu", "labels: '-gpu' is not a label (1-63 of A-Z a-z 0-9 . _ : = -, starting with a "
             "letter or digit)"),
    ("x" * 64, f"labels: '{'x' * 35}…' is not a label (1-63 of A-Z a-z 0-9 . _ : = -, "
               "starting with a letter or digit)"),
])
def test_bad_labels_are_refused_naming_the_label(text: str, reason: str) -> None:
    assert refusal(parse_labels, text) == reason


def test_a_target_needs_at_least_one_label() -> None:
    assert refusal(parse_labels, " ", at_least_one=True) == ("labels: give at least one label, "
                                                            "like gpu,a100")


def test_json_labels_are_checked_one_by_one() -> None:
    assert check_labels(["b", "a", "b"]) == ["b", "a"]
    assert refusal(check_labels, "gpu") == "labels: must be a list of labels"
    assert refusal(check_labels, ["gpu", 5]).startswith("labels: 5 is not a label")
    assert refusal(check_labels, [f"l{i}" for i in range(65)]) == ("labels: at most 64 labels, "
                                                                   "not 65")


# -- env entries -----------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "pair"), [
    ("A=1", ("A", "1")), ("_x9=", ("_x9", "")), ("URL=a=b", ("URL", "a=b")),
    ("GREETING=hi there", ("GREETING", "hi there")), ("K=ü", ("K", "ü")),
])
def test_env_entries_split_at_the_first_equals(text: str, pair: tuple[str, str]) -> None:
    assert parse_env_entry(text) == pair


@pytest.mark.parametrize(("text", "reason"), [
    ("NOEQUALS", "env: 'NOEQUALS' is not NAME=VALUE"),
    ("1X=2", "env: '1X' is not a variable name (1-256 of A-Z a-z 0-9 _, not starting with a "
             "digit)"),
    ("=x", "env: '' is not a variable name (1-256 of A-Z a-z 0-9 _, not starting with a digit)"),
    ("A-B=1", "env: 'A-B' is not a variable name (1-256 of A-Z a-z 0-9 _, not starting with a "
              "digit)"),
    ("A=\x00", "env: the value of A must not contain NUL or a lone surrogate"),
    ("A=\udcff", "env: the value of A must not contain NUL or a lone surrogate"),
])
def test_bad_env_entries_are_refused(text: str, reason: str) -> None:
    assert refusal(parse_env_entry, text) == reason


def test_an_env_entry_exec_could_not_pass_on_is_refused() -> None:
    assert refusal(parse_env_entry, "A=" + "x" * MAX_COMMAND_BYTES) == (
        f"env: A=… is {MAX_COMMAND_BYTES + 2} bytes of UTF-8; at most {MAX_COMMAND_BYTES}")


# -- names -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gpu-1", "a", "box.lan_2", "x" * 63, "9"])
def test_drone_names_that_fit_the_rule(name: str) -> None:
    assert check_drone_name(name) == name


@pytest.mark.parametrize("name", ["", "-gpu", "gpu 1", "gpu/1", "x" * 64, "labo-é", "gpu\n"])
def test_drone_names_that_do_not(name: str) -> None:
    assert refusal(check_drone_name, name).startswith("drone: ")
    assert refusal(check_drone_name, name).endswith(
        "is not a name (1-63 of A-Z a-z 0-9 . _ -, starting with a letter or digit)")


def test_a_typed_drone_name_loses_its_surrounding_spaces_only() -> None:
    assert parse_drone_name("  gpu-1 ") == "gpu-1"
    assert refusal(parse_drone_name, "gpu 1").startswith("drone: 'gpu 1' ")


@pytest.mark.parametrize(("name", "reason"), [
    ("", "name: is empty; leave it out or null"),
    ("two\nlines", "name: must be one line without control characters"),
    ("tab\there", "name: must be one line without control characters"),
    ("x" * 201, "name: is longer than 200 characters"),
    (5, "name: must be a string or null"),
])
def test_task_names_are_one_line_of_free_text(name: object, reason: str) -> None:
    assert check_task_name("entraînement ✓ 日本") == "entraînement ✓ 日本"
    assert check_task_name("x" * 200) == "x" * 200
    assert check_task_name(None) is None
    assert refusal(check_task_name, name) == reason


# -- artifact globs --------------------------------------------------------------------------

def test_globs_are_relative_patterns() -> None:
    assert parse_globs("out/**/*.pt, logs/*.csv,, ") == ["out/**/*.pt", "logs/*.csv"]
    assert parse_globs("./out/*, a..b/*") == ["./out/*", "a..b/*"]


@pytest.mark.parametrize(("glob", "reason"), [
    ("/etc/passwd", "artifacts: '/etc/passwd' is absolute; patterns are relative to the work dir"),
    ("~/x", "artifacts: '~/x' is absolute; patterns are relative to the work dir"),
    ("../secret", "artifacts: '../secret' holds '..'; patterns stay inside the work dir"),
    ("out/../../x", "artifacts: 'out/../../x' holds '..'; patterns stay inside the work dir"),
    ("out/..", "artifacts: 'out/..' holds '..'; patterns stay inside the work dir"),
    ("a\x00b", "artifacts: 'a\\x00b' must not contain NUL or a lone surrogate"),
])
def test_globs_that_leave_the_work_dir_are_refused(glob: str, reason: str) -> None:
    assert refusal(parse_globs, glob) == reason
    assert refusal(parse_spec, {"command": "x", "artifacts": [glob]}) == reason


# -- byte sizes ------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "size"), [
    ("512", 512), ("512B", 512), ("10K", 10240), ("10M", 10 << 20), ("4GiB", 4 << 30),
    ("4 GiB", 4 << 30), ("1.5G", 3 << 29), ("10MB", 10_000_000), ("2kB", 2000), ("1T", 1 << 40),
])
def test_sizes_binary_unless_si_is_spelled_out(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "ten", "10X", "-1M", "0.5", "10\u212a"])
def test_bad_sizes_are_refused(text: str) -> None:
    assert refusal(parse_size, text).startswith("size: ")


def test_a_size_over_its_ceiling_is_refused() -> None:
    assert refusal(parse_size, "2G", field="artifact_max", maximum=1 << 30) == (
        "artifact_max: must be at most 1073741824 bytes")


# -- the spec --------------------------------------------------------------------------------

FULL: dict[str, Any] = {"command": "python train.py", "env": {"B": "2", "A": "1"},
                        "cwd": "~/exp", "timeout": 10800, "grace": 0,
                        "artifacts": ["out/*.pt"], "name": "lr sweep"}


def test_a_minimal_spec_takes_the_relays_defaults() -> None:
    spec = parse_spec({"command": "true"})
    assert spec.to_json() == {"command": "true", "env": {}, "cwd": None, "timeout": None,
                              "grace": 10, "artifacts": [], "name": None}


def test_the_wire_form_has_all_seven_keys_in_order_and_hashes_as_canonical_json() -> None:
    spec = parse_spec(FULL)
    assert list(spec.to_json()) == ["command", "env", "cwd", "timeout", "grace", "artifacts",
                                    "name"]
    assert spec.to_json() == FULL
    assert spec.canonical() == canonical_json(FULL)
    assert spec.sha256() == spec_sha256(FULL)
    assert parse_spec(json.loads(spec.canonical())) == spec


def test_a_spec_is_frozen_and_constructing_one_checks_it() -> None:
    spec = parse_spec(FULL)
    with pytest.raises(AttributeError):
        spec.command = "rm -rf /"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.env["C"] = "3"  # type: ignore[index]
    assert hash(spec) == hash(parse_spec(FULL))
    assert refusal(TaskSpec, command="x", timeout=0) == "timeout: must be more than zero"


@pytest.mark.parametrize(("raw", "reason"), [
    ([], "spec: must be a JSON object"),
    ({}, "command: is required"),
    ({"command": "x", "surprise": 1}, "spec: unknown field 'surprise'"),
    ({"command": 5}, "command: must be a string"),
    ({"command": "  "}, "command: is empty"),
    ({"command": "a\x00b"}, "command: must not contain NUL or a lone surrogate"),
    ({"command": "x" * (MAX_COMMAND_BYTES + 1)},
     f"command: is {MAX_COMMAND_BYTES + 1} bytes of UTF-8; at most {MAX_COMMAND_BYTES}"),
    ({"command": "é" * 70000}, f"command: is 140000 bytes of UTF-8; at most {MAX_COMMAND_BYTES}"),
    ({"command": "x", "env": ["K=V"]}, "env: must be an object of NAME: VALUE strings"),
    ({"command": "x", "env": None}, "env: must be an object of NAME: VALUE strings"),
    ({"command": "x", "env": {"A": 1}}, "env: the value of A must be a string"),
    ({"command": "x", "env": {f"V{i}": "" for i in range(MAX_ENV_ENTRIES + 1)}},
     f"env: at most {MAX_ENV_ENTRIES} variables, not {MAX_ENV_ENTRIES + 1}"),
    ({"command": "x", "cwd": ""}, "cwd: is empty; leave it out for a fresh work folder"),
    ({"command": "x", "cwd": 5}, "cwd: must be a path or null"),
    ({"command": "x", "timeout": 0}, "timeout: must be more than zero"),
    ({"command": "x", "timeout": -1}, "timeout: must be more than zero"),
    ({"command": "x", "timeout": 1.5}, "timeout: must be whole seconds (an integer) or null"),
    ({"command": "x", "timeout": True}, "timeout: must be whole seconds (an integer) or null"),
    ({"command": "x", "timeout": "3h"}, "timeout: must be whole seconds (an integer) or null"),
    ({"command": "x", "timeout": 10**30}, "timeout: must be at most 100 years"),
    ({"command": "x", "grace": None}, "grace: must be whole seconds (an integer)"),
    ({"command": "x", "grace": -1}, "grace: must not be negative"),
    ({"command": "x", "grace": 3601}, "grace: must be at most 1h"),
    ({"command": "x", "artifacts": "out/*"}, "artifacts: must be a list of glob patterns"),
    ({"command": "x", "artifacts": ["*"] * 257}, "artifacts: at most 256 patterns, not 257"),
    ({"command": "x", "artifacts": [""]}, "artifacts: a pattern is empty"),
    ({"command": "x", "name": ""}, "name: is empty; leave it out or null"),
])
def test_each_bad_field_is_named_in_one_line(raw: object, reason: str) -> None:
    assert refusal(parse_spec, raw) == reason
    assert "\n" not in reason and len(reason) < 160


def test_the_first_bad_field_in_spec_order_is_the_one_named() -> None:
    assert refusal(parse_spec, {"name": "", "timeout": 0, "command": ""}) == "command: is empty"
    assert refusal(parse_spec, {"command": "x", "name": "", "timeout": 0}) == (
        "timeout: must be more than zero")


def test_spec_error_is_a_value_error_with_field_and_problem() -> None:
    with pytest.raises(ValueError, match="timeout: must be more than zero") as caught:
        parse_spec({"command": "x", "timeout": 0})
    assert isinstance(caught.value, SpecError)
    assert (caught.value.field, caught.value.problem) == ("timeout", "must be more than zero")
    assert caught.value.code == "invalid"


def test_canonical_bytes_of_the_fixture_specs_are_unchanged() -> None:
    """The spec's bytes still come from shared/canonical.py alone: fixtures pin them."""
    for vector in load_vectors("canonical_tasks.json"):
        assert canonical_json(vector["spec"]) == vector["spec_canonical_json"].encode("utf-8")
    first = load_vectors("canonical_tasks.json")[0]["spec"]
    filled = parse_spec(first)  # the first fixture is a spec a pilot could send
    assert filled.canonical() == canonical_json({**first, "grace": 10})


# -- stdin ----------------------------------------------------------------------------------


def test_stdin_is_on_the_wire_only_when_true() -> None:
    plain = TaskSpec(command="cat")
    assert "stdin" not in plain.to_json() and len(plain.to_json()) == 7
    assert parse_spec({"command": "cat", "stdin": False}) == plain
    assert parse_spec({"command": "cat", "stdin": False}).canonical() == plain.canonical()
    reading = parse_spec({"command": "cat", "stdin": True})
    assert reading.stdin is True and reading.to_json()["stdin"] is True
    assert reading.sha256() != plain.sha256()  # the signature covers whether it reads stdin


@pytest.mark.parametrize("value", [1, 0, "true", None, [], {}])
def test_stdin_must_be_a_json_boolean(value: object) -> None:
    with pytest.raises(SpecError, match=r"^stdin: must be true or false$"):
        parse_spec({"command": "cat", "stdin": value})


def test_stdin_fixture_specs_are_what_task_spec_emits_and_signs() -> None:
    """fixtures/stdin_tasks.json: the wire form with and without stdin, byte for byte."""
    from dragoon.shared.canonical import canonical_task
    from dragoon.shared.constants import NS_TASK
    from dragoon.shared.keys import PublicKey
    from dragoon.shared.sshsig import decode_b64, verify

    vectors = load_vectors("stdin_tasks.json")
    assert [("stdin" in v["spec"]) for v in vectors] == [True, False]
    for vector in vectors:
        spec = parse_spec(vector["spec"])
        assert spec.to_json() == vector["spec"]
        assert spec.canonical() == vector["spec_canonical_json"].encode("utf-8")
        message = canonical_task(task_id=vector["task_id"], drone=vector["drone"],
                                 seq=vector["seq"], spec=spec.to_json())
        assert message == base64.b64decode(vector["canonical_b64"])
        verify(decode_b64(vector["signature"]), NS_TASK, message,
               PublicKey.from_openssh(vector["relay_public_key"]))
