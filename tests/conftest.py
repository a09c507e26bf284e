"""A home of its own for every test process.

In-process clients, key files and state files default to the user's own dirs
(``~/.config/dragoon``: the pilot's X25519 key, known_drones; ``~/.local/state``: the
session, pending enrollments). Tests give their pilots homes of their own, but one that
forgot would write into the real home of whoever runs the suite, or read a key left there
by an earlier run. So the test process itself gets an empty home, removed at its end:
nothing reaches, or comes from, the runner's own files.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _drop_released_databases() -> Iterator[None]:
    """PostgreSQL relays (DRAGOON_TEST_BACKEND=postgresql): the databases of relays whose
    context ended in this test, dropped once it is over (tests/support/relay.py)."""
    yield
    _drop_released()


def _drop_released(every: bool = False) -> None:
    relay_support = sys.modules.get("tests.support.relay")  # only where relays were started
    if relay_support is not None:
        relay_support.drop_released_databases(every=every)


def pytest_configure(config: pytest.Config) -> None:
    home = tempfile.mkdtemp(prefix="dragoon-test-home-")
    config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))
    config.add_cleanup(lambda: _drop_released(every=True))  # after the last module's relay
    os.environ.update({"HOME": home, "XDG_CONFIG_HOME": os.path.join(home, "config"),
                       "XDG_STATE_HOME": os.path.join(home, "state")})
    os.environ.pop("DRAGOON_CONFIG", None)
