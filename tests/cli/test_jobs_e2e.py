"""Jobs end to end: a real relay, real drone processes, ``dragoon`` as a subprocess.

Fan-out over three drones (one trial failing, a fourth drone offline), ``--group``;
a 2x2 sweep whose trials echo their params and report a metric, read back by
``dragoon job --json/--csv``; ``job cancel``; ``job retry --failed``.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cli.conftest import Pilot
from tests.support.relay import REPO, RelayProcess, wait_until

FLEET = ("fan-a", "fan-b", "fan-c")


@pytest.fixture(scope="module")
def fleet(pilot: Pilot, relay: RelayProcess,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ...]]:
    """Three real drones with the label ``fan``, and ``fan-d`` joined but never polling
    (offline): a fan-out must name it, not skip it silently."""
    root = tmp_path_factory.mktemp("fleet")
    processes: list[subprocess.Popen[bytes]] = []
    logs = []
    try:  # whatever was started is stopped, also when a later step fails
        for name in FLEET:
            data = root / name
            token = pilot.ok("enroll", name, "--labels", "fan").strip()
            subprocess.run([sys.executable, "-m", "dragoon", "drone", "join", token, "--data",
                            str(data), "--slots", "2", "--labels", "fan"], check=True,
                           capture_output=True, cwd=REPO, timeout=30)
            pilot.trust(data)
            log = open(root / f"{name}.log", "wb")  # noqa: SIM115 - closed below
            logs.append(log)
            processes.append(subprocess.Popen([sys.executable, "-m", "dragoon", "drone", "run",
                                               "--data", str(data)], stdout=log,
                                              stderr=subprocess.STDOUT, cwd=REPO))
        # fan-d: joined as the others are, never run, so never online
        token = pilot.ok("enroll", "fan-d", "--labels", "fan").strip()
        subprocess.run([sys.executable, "-m", "dragoon", "drone", "join", token, "--data",
                        str(root / "fan-d"), "--labels", "fan"], check=True, capture_output=True,
                       cwd=REPO, timeout=30)
        pilot.trust(root / "fan-d")

        def ready() -> bool:
            states = {d["name"]: d["state"] for d in pilot.json("drones")}
            return (all(states.get(name) == "online" for name in FLEET)
                    and states.get("fan-d") != "online")
        wait_until(ready, timeout=60, interval=0.3, message="fleet online, fan-d not")
        yield FLEET
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()


FAIL_ON_TRIAL_1 = ('echo same; if [ "$DRAGOON_TRIAL" = 1 ]; then echo bad >&2; exit 3; fi')


def test_fanout_prefixes_lines_and_sums_up_the_failure(pilot: Pilot,
                                                       fleet: tuple[str, ...]) -> None:
    done = pilot.cli("run", "--each", "fan", "--", FAIL_ON_TRIAL_1, timeout=120)
    assert done.returncode == 1, done
    out = done.stdout.splitlines()
    assert {line.split(":")[0] for line in out} == set(fleet)
    assert all(line.split(":", 1)[1].strip() == "same" for line in out)
    assert "fan-b: bad" in done.stderr.replace("  ", " ")
    assert "skipped fan-d (pending)" in done.stderr  # joined, never polled
    table = [line.split() for line in done.stderr.splitlines()]
    assert ["fan-b", "failed", "3", "-"] in table, done.stderr
    assert not any(row[:1] in (["fan-a"], ["fan-c"]) and "failed" in row for row in table)


def test_fanout_group_collates_identical_output(pilot: Pilot, fleet: tuple[str, ...]) -> None:
    done = pilot.cli("run", "fan-a,fan-b,fan-c", "--group", "--", "echo same", timeout=120)
    assert done.returncode == 0, done
    lines = done.stdout.splitlines()
    assert lines[1] == "fan-a,fan-b,fan-c" and lines[3] == "same", done.stdout
    assert lines[0] == lines[2] and set(lines[0]) == {"-"}


def test_fanout_json_is_one_object_per_task(pilot: Pilot, fleet: tuple[str, ...]) -> None:
    done = pilot.cli("run", "--each", "fan", "--json", "--", FAIL_ON_TRIAL_1, timeout=120)
    assert done.returncode == 1, done
    tasks = sorted((json.loads(line) for line in done.stdout.splitlines()),
                   key=lambda t: t["trial"])
    assert [(t["drone"], t["exit_code"], t["stdout"]) for t in tasks] == [
        ("fan-a", 0, "same\n"), ("fan-b", 3, "same\n"), ("fan-c", 0, "same\n")]
    assert len({t["job"] for t in tasks}) == 1


def test_submit_each_prints_the_job_then_its_tasks(pilot: Pilot, fleet: tuple[str, ...]) -> None:
    lines = pilot.ok("submit", "--each", "fan", "--", "true").split()
    assert lines[0].startswith("j-") and len(lines) == 4
    assert all(line.startswith("t-") for line in lines[1:])


FINAL = ("succeeded", "partly_failed", "failed", "cancelled")


def _wait_job(pilot: Pilot, job: str, until: tuple[str, ...] = FINAL,
              timeout: float = 120) -> dict[str, Any]:
    """``dragoon job JOB --json`` once the job's state is one of ``until``."""
    found: dict[str, Any] = {}

    def there() -> bool:
        found.update(json.loads(pilot.ok("job", job, "--json")))
        return found["job"]["state"] in until
    wait_until(there, timeout=timeout, interval=0.5, message=f"job {job} in {until}")
    return found


def test_a_sweep_reports_params_and_metrics_per_trial(pilot: Pilot,
                                                      fleet: tuple[str, ...]) -> None:
    job = pilot.ok("sweep", "--grid", "a=1,2", "--grid", "b=x,y z", "--labels", "fan",
                   "--name", "toy", "--", 'echo {a}/{b}/"$DRAGOON_PARAM_B"; '
                   "dragoon notify --metric loss=0.{a} trial $DRAGOON_TRIAL").strip()
    assert job.startswith("j-")
    shown = _wait_job(pilot, job)
    assert shown["job"]["state"] == "succeeded", shown
    trials = shown["trials"]
    assert [(t["trial"], t["params"]) for t in trials] == [
        (0, {"a": "1", "b": "x"}), (1, {"a": "1", "b": "y z"}),
        (2, {"a": "2", "b": "x"}), (3, {"a": "2", "b": "y z"})]
    assert [t["metrics"] for t in trials] == [{"loss": 0.1}, {"loss": 0.1}, {"loss": 0.2},
                                              {"loss": 0.2}]
    assert trials[1]["message"] == "loss=0.1 trial 1"
    log = pilot.ok("logs", trials[1]["task"])
    assert log == "1/y z/y z\n"
    rows = list(csv.DictReader(io.StringIO(pilot.ok("job", job, "--csv"))))
    assert [(r["a"], r["b"], r["loss"]) for r in rows] == [
        ("1", "x", "0.1"), ("1", "y z", "0.1"), ("2", "x", "0.2"), ("2", "y z", "0.2")]
    by_loss = pilot.ok("job", job, "--sort", "-loss").splitlines()
    assert by_loss[1].split()[0] in ("2", "3")
    assert job in pilot.ok("jobs")


def test_job_cancel_stops_its_trials(pilot: Pilot, fleet: tuple[str, ...]) -> None:
    job = pilot.ok("sweep", "--grid", "n=1,2,3,4,5,6,7,8", "--labels", "fan",
                   "--max-parallel", "2", "--", "sleep 300").strip()
    wait_until(lambda: json.loads(pilot.ok("job", job, "--json"))["job"]["counts"]["running"]
               == 2, timeout=60, interval=0.5, message="two trials running")
    said = pilot.ok("job", "cancel", job, "--grace", "1s")
    assert said.startswith(f"{job} cancel requested")
    shown = _wait_job(pilot, job)
    assert shown["job"]["state"] == "cancelled"
    assert {t["state"] for t in shown["trials"]} == {"cancelled"}


def test_job_retry_failed_runs_the_failed_trials_again(pilot: Pilot,
                                                       fleet: tuple[str, ...]) -> None:
    job = pilot.ok("sweep", "--grid", "n=1,2,3", "--labels", "fan",
                   "--", '[ "$DRAGOON_PARAM_N" != 2 ] || [ -e /tmp/dragoon-retry-ok-$DRAGOON_JOB ]'
                   ' || {{ touch /tmp/dragoon-retry-ok-$DRAGOON_JOB; exit 5; }}').strip()
    first = _wait_job(pilot, job)
    assert first["job"]["state"] == "partly_failed", first
    assert [(t["trial"], t["exit_code"]) for t in first["trials"]] == [(0, 0), (1, 5), (2, 0)]
    said = pilot.ok("job", "retry", job, "--failed")
    assert said.strip() == f"{job}: retrying 1 trials (1)"
    again = _wait_job(pilot, job, until=("succeeded",))
    assert again["job"]["state"] == "succeeded", again
    assert [(t["trial"], t["attempt"], t["exit_code"]) for t in again["trials"]] == [
        (0, 0, 0), (1, 1, 0), (2, 0, 0)]
