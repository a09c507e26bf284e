"""Pytest fixtures over tests/support/relay.py; import them in a conftest.py:

    from tests.support.relay_fixtures import relay, pilot  # noqa: F401

``relay`` is a running ``RelayProcess`` in ``tmp_path``; ``pilot`` a logged-in
``PilotSession`` named ``alice``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.relay import PilotSession, RelayProcess


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    with RelayProcess(tmp_path / "relay", config={"sweep_interval": 0.2}) as process:
        yield process


@pytest.fixture
def pilot(relay: RelayProcess) -> PilotSession:
    return relay.pilot("alice")
