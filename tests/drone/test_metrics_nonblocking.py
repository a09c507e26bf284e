"""A slow ``nvidia-smi`` never holds up the drone: its other work goes on while the GPUs are read.

``nvidia-smi`` is the one thing faked here (a shell script on PATH): its first
call answers at once, so the first heartbeat carries the GPUs as before; every
later call hangs until the test opens a gate. While such a call hangs (its
process alive), a running task's output must keep reaching the relay: with the
old blocking ``subprocess.run`` on the event loop, nothing could be shipped
until the fake returned or was killed.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from dragoon.drone import metrics as drone_metrics

from tests.drone.conftest import Fleet
from tests.support.relay import wait_until

FAKE_SMI = """#!/bin/sh
calls=$(cat "{dir}/calls" 2>/dev/null || echo 0)
calls=$((calls + 1))
echo "$calls" > "{dir}/calls"
if [ "$calls" -gt 1 ]; then
    echo $$ > "{dir}/slow.pid"
    i=0
    while [ ! -e "{dir}/release" ] && [ "$i" -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
fi
echo "0, NVIDIA A100-SXM4-80GB, 97, 40000, 81920, 64"
"""


@pytest.fixture
def fleet(shared_fleet: Fleet) -> Fleet:
    return shared_fleet


def fake_smi(root: Path, script: str = FAKE_SMI) -> Path:
    bin_dir = root / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(script.format(dir=root))
    smi.chmod(0o755)
    return bin_dir


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def drone_view(fleet: Fleet, name: str) -> dict:
    drones = fleet.pilot.get("/v1/workers").json()["drones"]
    return next(d for d in drones if d["name"] == fleet.name(name))


def test_output_is_shipped_while_nvidia_smi_hangs(fleet: Fleet, tmp_path: Path) -> None:
    bin_dir = fake_smi(tmp_path)
    fleet.drone("g1", start=False).start(env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    metrics = wait_until(lambda: drone_view(fleet, "g1").get("metrics"), timeout=20,
                         message="the first heartbeat")
    assert [g["util"] for g in metrics["gpus"]] == [97]  # the first reading is in it
    task = fleet.submit("i=0; while [ $i -lt 1200 ]; do echo line $i; i=$((i+1)); sleep 0.1; "
                        "done", drone="g1")
    # the next reading is due GPU_REFRESH (10 s) after the first; it hangs at the gate
    pid_file = tmp_path / "slow.pid"
    wait_until(pid_file.exists, timeout=60, interval=0.1, message="the hanging nvidia-smi")
    pid = int(wait_until(lambda: pid_file.read_text().strip(), message="its pid"))
    try:
        assert alive(pid)
        before = len(fleet.output(task))
        grown = wait_until(lambda: len(fleet.output(task)) > before + 20, timeout=30,
                           interval=0.1, message="output shipped while nvidia-smi hangs")
        assert grown and alive(pid), "the output only moved once nvidia-smi was gone"
    finally:
        (tmp_path / "release").touch()
    fleet.pilot.post(f"/v1/tasks/{task}/cancel", json={})
    fleet.wait_state(task, timeout=30)


def test_a_hung_nvidia_smi_is_killed_and_read_as_no_gpus(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = '#!/bin/sh\necho $$ > "{dir}/hung.pid"\nexec sleep 600\n'
    bin_dir = fake_smi(tmp_path, script)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(drone_metrics, "SMI_TIMEOUT", 0.5)
    monkeypatch.setattr(drone_metrics, "_gpu_source", lambda: "smi")

    async def heartbeat_twice() -> tuple[dict, int]:
        collector = drone_metrics.Metrics(tmp_path)
        ticks = 0

        async def tick() -> None:  # the loop's other work, going on meanwhile
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.ensure_future(tick())
        first = await collector.collect()
        ticker.cancel()
        return first, ticks

    first, ticks = asyncio.run(heartbeat_twice())
    assert "gpus" not in first and first["mem_total"] > 0
    assert ticks > 1  # the loop ran while nvidia-smi hung
    pid = int((tmp_path / "hung.pid").read_text())
    wait_until(lambda: not alive(pid), timeout=10, message="the hung nvidia-smi killed")
