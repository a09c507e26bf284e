"""Relay tests run against real ``dragoon relay serve`` subprocesses (tests/support/relay.py).

Most modules share one relay per module (``shared_relay``/``shared_pilot``) and
keep tests apart by giving each its own drone names; tests that need special
settings or kill the relay start their own.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

from tests.support.relay import DroneClient, PilotSession, RelayProcess
from tests.support.relay_fixtures import pilot, relay

__all__ = ["pilot", "relay"]

_names = itertools.count(1)


@pytest.fixture(scope="module")
def shared_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    root = tmp_path_factory.mktemp("relay")
    with RelayProcess(root / "data", config={"sweep_interval": 0.2}) as process:
        yield process


@pytest.fixture(scope="module")
def shared_pilot(shared_relay: RelayProcess) -> PilotSession:
    return shared_relay.pilot("alice")


@pytest.fixture
def new_drone(
    shared_relay: RelayProcess, shared_pilot: PilotSession
) -> Callable[..., DroneClient]:
    """Enroll a drone with a fresh name on the shared relay (token minted through the API)."""

    def make(labels: tuple[str, ...] = (), slots: int = 1) -> DroneClient:
        return shared_relay.drone(f"drone-{next(_names)}", labels, slots=slots,
                                  pilot=shared_pilot)

    return make
