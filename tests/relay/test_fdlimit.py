"""relay/fdlimit.py: how many connections fit under a descriptor limit."""

from __future__ import annotations

import resource

import pytest
from dragoon.relay.fdlimit import connection_budget, connection_cap, raise_nofile_limit


@pytest.mark.parametrize(("limit", "budget"), [(1024, 768), (4096, 3584), (65536, 57344)])
def test_the_budget_keeps_a_reserve_of_descriptors_for_the_relays_files(
    limit: int, budget: int,
) -> None:
    assert connection_budget(limit) == budget


def test_zero_means_the_budget_and_more_is_lowered_to_it() -> None:
    assert connection_cap(0, 4096) == 3584
    assert connection_cap(100, 4096) == 100
    assert connection_cap(100_000, 4096) == 3584


def test_a_tiny_limit_still_leaves_a_few_connections() -> None:
    assert connection_cap(0, 100) >= 16


def test_raising_sets_the_soft_limit_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))
        result = raise_nofile_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == result.soft
        if hard != resource.RLIM_INFINITY:
            assert result.soft == hard
        assert result.raised_from == min(soft, 256)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
