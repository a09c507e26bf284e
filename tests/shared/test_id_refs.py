"""shared/spec.py's one rule for id references, which task and job references both follow."""

from __future__ import annotations

import pytest
from dragoon.shared.jobs import parse_job_ref
from dragoon.shared.spec import SpecError, parse_id_ref, parse_task_ref


@pytest.mark.parametrize("mark", ["t", "j"])
@pytest.mark.parametrize("typed,body,whole", [
    ("{m}-4jgab2kq7z", "4jgab2kq7z", True),
    ("4jgab2kq7z", "4jgab2kq7z", True),
    ("{m}-4jg", "4jg", False),
    (" 4JG ", "4jg", False),
])
def test_a_reference_is_an_id_or_a_prefix_with_or_without_its_mark(
        mark: str, typed: str, body: str, whole: bool) -> None:
    text = typed.format(m=mark.upper() if typed.startswith(" ") else mark)
    assert parse_id_ref(text, mark=mark, noun="an", field="f") == (f"{mark}-{body}", whole)


@pytest.mark.parametrize("typed", ["", "j-", "j-ab", "ab", "j-abcdefghijk", "t-abc", "j-ab1",
                                   "j-abc\x1b", "x" * 500])
def test_anything_else_names_the_noun_and_the_rule_in_one_short_line(typed: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_id_ref(typed, mark="j", noun="a job", field="job")
    said = str(caught.value)
    assert said.startswith("job: ") and "is not a job id or a prefix of one" in said
    assert "j- may be left out" in said and "\n" not in said and len(said) < 160


def test_task_and_job_references_are_the_one_rule_under_their_own_marks() -> None:
    for typed in ("abc", "ABCDEFGHIJ", "abcdefghij", "zz7"):
        task, job = parse_task_ref(typed), parse_job_ref(typed)
        assert (task.text[2:], task.exact) == (job[0][2:], job[1])
    with pytest.raises(SpecError, match="not a task id"):
        parse_task_ref("j-abc")
    with pytest.raises(SpecError, match="not a job id"):
        parse_job_ref("t-abc")
