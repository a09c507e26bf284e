"""shared/spec.py's task-id prefix and inbox-message rules, which every door calls."""

from __future__ import annotations

import pytest
from dragoon.shared.spec import (
    MESSAGE_CAP,
    SpecError,
    TaskRef,
    check_message,
    check_task_prefix,
    parse_task_ref,
)


@pytest.mark.parametrize("typed,expected", [
    ("t-4jgab2kq7z", TaskRef("t-4jgab2kq7z", exact=True)),
    ("4jgab2kq7z", TaskRef("t-4jgab2kq7z", exact=True)),
    ("t-4jg", TaskRef("t-4jg", exact=False)),
    ("4jg", TaskRef("t-4jg", exact=False)),
    (" T-4JG ", TaskRef("t-4jg", exact=False)),
])
def test_a_task_ref_is_an_id_or_a_prefix_in_the_ids_own_form(typed: str,
                                                              expected: TaskRef) -> None:
    assert parse_task_ref(typed) == expected


@pytest.mark.parametrize("typed", ["", "t-", "t-ab", "ab", "t-0ab", "t-ab1", "t-abcdefghijk",
                                   "t-a%b", "t-ab_c", "x-abc", "t-abc\x1b", "t-\uff41\uff42\uff43"])
def test_text_that_starts_no_id_is_refused(typed: str) -> None:
    with pytest.raises(SpecError, match="is not a task id or a prefix of one"):
        parse_task_ref(typed)
    with pytest.raises(SpecError):
        check_task_prefix(typed)


def test_the_relays_prefix_check_refuses_non_strings() -> None:
    with pytest.raises(SpecError, match="id_prefix: must be a string"):
        check_task_prefix(3)
    assert check_task_prefix("ABC") == "t-abc"


@pytest.mark.parametrize("text", ["", " ", "\t\n", "\u3000"])
def test_a_blank_message_is_refused(text: str) -> None:
    with pytest.raises(SpecError, match="text: is empty or only blanks"):
        check_message(text)


def test_a_message_is_capped_in_bytes_of_utf8_unless_the_door_caps_it_itself() -> None:
    assert check_message("x" * MESSAGE_CAP) == "x" * MESSAGE_CAP
    over = "é" * (MESSAGE_CAP // 2 + 1)
    with pytest.raises(SpecError, match=f"over the cap of {MESSAGE_CAP}"):
        check_message(over)
    assert check_message(over, cap=None) == over
    with pytest.raises(SpecError, match="NUL"):
        check_message("a\x00b")
