"""The pilot verbs start fast: heavy packages are imported only by the verbs that use them."""

from __future__ import annotations

import subprocess
import sys

from tests.cli.conftest import Pilot


def imported_modules(pilot: Pilot, *args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "dragoon", *args],
                          env=pilot.env, capture_output=True, text=True, timeout=30,
                          check=False)
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_help_of_every_pilot_verb_imports_no_client_rich_or_crypto(fresh_pilot: Pilot) -> None:
    for verb in ("run", "tasks", "login", "artifact", "inbox", "demo"):
        loaded = imported_modules(fresh_pilot, verb, "--help")
        assert "click" in loaded
        assert not loaded & {"httpx", "rich", "cryptography", "textual", "fastapi", "uvicorn",
                             "relay", "drone"}, verb


def test_run_never_imports_the_tui_the_relay_or_the_drone(fresh_pilot: Pilot) -> None:
    loaded = imported_modules(fresh_pilot, "run", "somewhere", "--", "true")  # not logged in
    assert "httpx" in loaded
    assert not loaded & {"textual", "fastapi", "uvicorn", "relay", "drone", "rich"}
