"""A sweep on a real drone that is killed with SIGKILL in the middle: every trial runs once.

The drone keeps its accepted tasks across its own restarts (the durable accept, the
re-adopted process group); a trial that was running when it died finishes under the new
drone process, a queued one is handed out afterwards, and none is handed out, run or
counted twice. The relay's side of the same promise (a relay killed mid-sweep) is
tests/relay/test_jobs.py's.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from dragoon.cockpit.client import RelayClient, TrialSubmit
from dragoon.shared.jobs import new_job_id
from dragoon.shared.sweep import parse_sweep

from tests.drone.conftest import Fleet
from tests.support.relay import wait_until
from tests.support.sealing import trust_drone

TRIALS = 10


def submit_sweep(fleet: Fleet, command: str) -> str:
    sweep = parse_sweep({"command": command, "grid": {"n": [str(i) for i in range(TRIALS)]},
                         "labels": ["sw"]})
    job_id = new_job_id()
    trials = [TrialSubmit(trial=i, spec={**sweep.spec_for(point, job_id, i), "grace": 1},
                          labels=["sw"])
              for i, point in enumerate(sweep.points())]
    pilot = fleet.pilot

    async def go() -> None:
        async with RelayClient(fleet.relay.url, signer=pilot.signer, token=pilot.token,
                               env=pilot.env) as client:
            await client.submit_job(job_id, name="crash", kind="sweep", trials=trials)
    asyncio.run(go())
    return job_id


def job_of(fleet: Fleet, job_id: str) -> dict[str, Any]:
    answer = fleet.pilot.get(f"/v1/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_a_drone_killed_mid_sweep_runs_every_trial_exactly_once(fleet: Fleet,
                                                               tmp_path: Path) -> None:
    runs, go = tmp_path / "runs", tmp_path / "go"
    drone = fleet.drone("d1", labels=("sw",), slots=2, poll_wait=2.0)
    trust_drone(fleet.pilot.env, drone.data_dir)
    # The first two trials hold their slots until `go` exists; the later ones run straight on.
    job_id = submit_sweep(fleet, f'echo "$DRAGOON_TRIAL" >> {runs}; '
                                 f'while [ ! -e {go} ]; do sleep 0.05; done')
    wait_until(lambda: runs.exists() and len(runs.read_text().split()) == 2, timeout=30,
               message="two trials started")
    drone.kill9()  # two trials running, the rest queued
    before = job_of(fleet, job_id)["counts"]
    assert (before["running"], before["queued"]) == (2, TRIALS - 2), before
    drone.start()
    wait_until(lambda: drone.log_text().count("re-adopted") == 2, timeout=30,
               message="the two running trials re-adopted")
    go.touch()
    job = wait_until(lambda: (j := job_of(fleet, job_id))["state"] != "running" and j,
                     timeout=60, message="the sweep to end")
    assert job["state"] == "succeeded", job
    assert job["counts"]["succeeded"] == TRIALS
    started = Counter(int(n) for n in runs.read_text().split())
    assert started == Counter(range(TRIALS)), f"trials started other than once: {started}"
    tasks = fleet.pilot.get("/v1/tasks", params={"job": job_id}).json()
    tasks = tasks.get("tasks", tasks) if isinstance(tasks, dict) else tasks
    assert sorted((t["trial"], t["attempt"]) for t in tasks) == [(i, 0) for i in range(TRIALS)]
