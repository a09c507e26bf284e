"""Drones run on small boxes: `dragoon drone …` must not load the relay's or cockpit's stacks."""

from __future__ import annotations

import subprocess
import sys

from tests.support.relay import REPO

# cryptography and bcrypt: a drone's keys are ed25519, signed and checked on libsodium
# (shared/ed25519.py); a real drone's maps are checked too (test_idle_memory.py).
HEAVY = ("fastapi", "starlette", "uvicorn", "pydantic", "textual", "rich", "pygments",
         "cryptography", "bcrypt", "dragoon.relay", "dragoon.cockpit")


def test_the_drone_imports_neither_fastapi_nor_textual_nor_httpx_cli_extras():
    probe = ("import sys, dragoon.cli, dragoon.drone.cli, dragoon.drone.daemon, "
             "dragoon.drone.join, dragoon.drone.notify;"
             "print(','.join(sorted({m.split('.')[0] for m in sys.modules}"
             " | {'.'.join(m.split('.')[:2]) for m in sys.modules if m.startswith('dragoon.')})))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, cwd=REPO).stdout.strip().split(",")
    assert not [name for name in HEAVY if name in loaded]
    assert "httpx" in loaded and "dragoon.drone" in loaded  # the probe did load the drone


# Loaded by the first task (or a re-adoption), never by an idle drone (drone/lazy.py).
TASK_PATH = ("dragoon.drone.runner", "dragoon.drone.verify", "dragoon.drone.artifacts",
             "dragoon.drone.inbox", "dragoon.drone.shipper", "dragoon.drone.stdin",
             "dragoon.drone.release", "dragoon.shared.spec", "dragoon.shared.task_auth",
             "psutil", "ctypes", "fractions", "decimal")


def test_the_daemon_imports_no_module_of_the_task_path_until_a_task_arrives():
    probe = ("import sys, importlib.util, dragoon.drone.cli, dragoon.drone.daemon as d;"
             "spawn = sys.modules.get('dragoon.drone.spawn');"
             "print(type(spawn).__name__ if spawn is not None else 'absent');"
             "print(','.join(sorted(sys.modules)));"
             "d.spawn.WRAPPER;"  # its first use loads spawn, and psutil with it
             "print(','.join(sorted(sys.modules)))")
    lines = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           check=True, cwd=REPO).stdout.strip().splitlines()
    spawn, idle, used = lines[0], set(lines[1].split(",")), set(lines[2].split(","))
    assert spawn in ("absent", "_LazyModule")  # named, not executed
    assert sorted(name for name in TASK_PATH if name in idle) == []
    assert "psutil" in used and "dragoon.drone.spawn" in used
