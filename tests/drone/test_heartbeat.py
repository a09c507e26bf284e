"""The heartbeat: metrics reach the relay, GPUs when present (faked here: the only fake),
and the reconnect backoff keeps its promise (1 s doubling to 60 s, jittered)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dragoon.drone.client import JitteredBackoff
from dragoon.drone.metrics import parse_smi

from tests.drone.conftest import Fleet
from tests.support.relay import wait_until

FAKE_SMI = """#!/bin/sh
echo "0, NVIDIA A100-SXM4-80GB, 97, 40000, 81920, 64"
echo "1, NVIDIA A100-SXM4-80GB, 3, 1000, 81920, 41"
"""


@pytest.fixture
def fleet(shared_fleet: Fleet) -> Fleet:
    """These tests never crash the relay: they share one per module (see conftest)."""
    return shared_fleet


def drone_view(fleet: Fleet, name: str) -> dict:
    drones = fleet.pilot.get("/v1/workers").json()["drones"]
    return next(d for d in drones if d["name"] == fleet.name(name))


def test_heartbeat_carries_host_metrics_and_no_gpus_when_there_are_none(fleet: Fleet):
    fleet.drone("d1", start=False).start(env={"PATH": "/usr/bin:/bin"})
    metrics = wait_until(lambda: drone_view(fleet, "d1").get("metrics"), message="metrics")
    for key in ("cpu_percent", "cpu_count", "load", "mem_total", "mem_used", "disk_total",
                "disk_free", "uptime"):
        assert key in metrics, key
    assert metrics["mem_total"] > metrics["mem_used"] > 0
    assert "gpus" not in metrics
    assert drone_view(fleet, "d1")["state"] == "online"


def test_heartbeat_reports_gpus_from_nvidia_smi(fleet: Fleet, tmp_path: Path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    fleet.drone("g1", start=False).start(env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    metrics = wait_until(lambda: drone_view(fleet, "g1").get("metrics"), message="metrics")
    assert [g["util"] for g in metrics["gpus"]] == [97, 3]
    assert metrics["gpus"][0]["mem_total"] == 81920 * 1024 * 1024
    assert metrics["gpus"][0]["name"] == "NVIDIA A100-SXM4-80GB"


def test_nvidia_smi_lines_that_do_not_parse_are_skipped():
    assert parse_smi("garbage\n0, X, [N/A], 1, 2, 30\n") == [
        {"index": 0, "name": "X", "util": None, "mem_used": 1 << 20, "mem_total": 2 << 20,
         "temperature": 30}]


def test_backoff_doubles_from_one_second_to_a_sixty_second_cap_with_jitter():
    backoff = JitteredBackoff()
    delays = [backoff.next_delay() for _ in range(10)]
    bases = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    for delay, base in zip(delays, bases, strict=True):
        assert 0.75 * base <= delay <= 1.25 * base
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered, not lockstep
    backoff.reset()
    assert backoff.next_delay() <= 1.25
