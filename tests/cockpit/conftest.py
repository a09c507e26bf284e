"""Cockpit tests run their async tests on asyncio (Textual's loop) via anyio's plugin."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
