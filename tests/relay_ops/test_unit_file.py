"""deploy/dragoon-relay.service: the hardening it promises, and systemd's own opinion of it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "dragoon-relay.service"
REQUIRED = {
    "Type": "notify",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "RestrictNamespaces": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "StateDirectory": "dragoon-relay",
    "UMask": "0077",
}


def _directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z]+)=(.*)", line.strip())
        if match:
            found.setdefault(match.group(1), []).append(match.group(2))
    return found


def _installed_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's dragoon, which verify needs to exist."""
    dragoon = Path(sys.executable).with_name("dragoon")
    if not dragoon.exists():
        pytest.skip(f"no dragoon entry point next to {sys.executable}")
    text = UNIT.read_text().replace("/opt/dragoon/venv/bin/dragoon", str(dragoon))
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    return copy


def test_unit_declares_notify_watchdog_and_hardening() -> None:
    found = _directives()
    for name, value in REQUIRED.items():
        assert value in found.get(name, []), f"{name}={value} missing from {UNIT.name}"
    assert "@system-service" in found["SystemCallFilter"]
    watchdog = found["WatchdogSec"][0]
    assert re.fullmatch(r"[0-9]+s", watchdog) and int(watchdog[:-1]) >= 10
    exec_start = found["ExecStart"][0].split()
    assert exec_start[1:3] == ["relay", "serve"]
    assert "--data" in exec_start and "/var/lib/dragoon-relay" in exec_start


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    copy = _installed_copy(tmp_path)
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert UNIT.name not in done.stderr, done.stderr  # no warning about our unit at all


def test_systemd_analyze_security_rates_the_unit_ok(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    copy = _installed_copy(tmp_path)
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                           str(copy)], capture_output=True, text=True, timeout=30, check=False)
    if "--offline" in done.stderr and done.returncode != 0:
        pytest.skip("this systemd-analyze has no --offline security mode (systemd < 250)")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 2.0, done.stdout
