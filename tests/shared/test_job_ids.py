"""Job ids: made in the id's own shape, checked the same way at every door."""

from __future__ import annotations

import pytest
from dragoon.shared.jobs import check_job_id, new_job_id, parse_job_ref
from dragoon.shared.spec import SpecError


def test_a_new_job_id_passes_its_own_check_and_is_fresh() -> None:
    ids = {new_job_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(check_job_id(job_id) == job_id for job_id in ids)


@pytest.mark.parametrize("bad", ["", "j-", "t-abcdefghij", "j-abcdefghi1", "j-ABCDEFGHIJ",
                                 "j-abcdefghijk", None, 7, "j-abcdefghij\n"])
def test_anything_else_is_refused_in_one_line(bad: object) -> None:
    with pytest.raises(SpecError) as caught:
        check_job_id(bad)
    assert str(caught.value).startswith("job") and "\n" not in str(caught.value)


def test_a_reference_may_be_a_prefix_with_or_without_its_j() -> None:
    assert parse_job_ref("j-abcdefghij") == ("j-abcdefghij", True)
    assert parse_job_ref(" ABC ") == ("j-abc", False)
    with pytest.raises(SpecError):
        parse_job_ref("j-ab")
