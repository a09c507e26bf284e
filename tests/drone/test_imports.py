"""Drones run on small boxes: `dragoon drone …` must not load the relay's or cockpit's stacks."""

from __future__ import annotations

import subprocess
import sys

from tests.support.relay import REPO

HEAVY = ("fastapi", "starlette", "uvicorn", "pydantic", "textual", "rich", "pygments",
         "dragoon.relay", "dragoon.cockpit")


def test_the_drone_imports_neither_fastapi_nor_textual_nor_httpx_cli_extras():
    probe = ("import sys, dragoon.cli, dragoon.drone.cli, dragoon.drone.daemon, "
             "dragoon.drone.join, dragoon.drone.notify;"
             "print(','.join(sorted({m.split('.')[0] for m in sys.modules}"
             " | {'.'.join(m.split('.')[:2]) for m in sys.modules if m.startswith('dragoon.')})))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, cwd=REPO).stdout.strip().split(",")
    assert not [name for name in HEAVY if name in loaded]
    assert "httpx" in loaded and "psutil" in loaded
