"""Jobs at the relay: fair placement across jobs, max_parallel, retries from pre-signed
spares, stop-on-failure, exactly-once trials across a relay kill -9, and the doors.

The relay is a real ``dragoon relay serve``; jobs go in through the pilot's own
``RelayClient`` (sealed and signed as the CLI sends them); the drone is the tests' own
signed client (tests/support/relay.py ``DroneClient``), which opens each task as a real
drone does and reports what the test says, so every outcome is chosen, not waited for.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dragoon.cockpit.client import RelayClient, RelayError
from dragoon.cockpit.client._types import JobSubmitted, TrialSubmit
from dragoon.shared.jobs import new_job_id

from tests.support.relay import DroneClient, PilotSession, RelayProcess
from tests.support.sealing import trust_test_drone

_labels = itertools.count()


def client(relay: RelayProcess, pilot: PilotSession) -> RelayClient:
    return RelayClient(relay.url, signer=pilot.signer, token=pilot.token, env=pilot.env)


def submit(relay: RelayProcess, pilot: PilotSession, trials: int, labels: list[str],
           **options: Any) -> JobSubmitted:
    specs = [TrialSubmit(trial=i, spec={"command": f"echo {i}", "grace": 1}, labels=labels)
             for i in range(trials)]

    async def go() -> JobSubmitted:
        async with client(relay, pilot) as c:
            return await c.submit_job(new_job_id(), name=options.pop("name", "t"),
                                      kind="sweep", trials=specs, **options)
    return asyncio.run(go())


def job_of(pilot: PilotSession, job_id: str) -> dict[str, Any]:
    answer = pilot.get(f"/v1/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def handed(pilot: PilotSession, answer: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(job, trial, attempt) of each task a poll answer handed out, in its order."""
    out = []
    for task in answer["tasks"]:
        view = pilot.get(f"/v1/tasks/{task['id']}").json()
        out.append((view["job"], view["trial"], view["attempt"]))
    return out


@pytest.fixture
def labels() -> list[str]:
    return [f"jobs{next(_labels)}"]  # each test's tasks match only its own drone


@pytest.fixture
def make_drone(shared_relay: RelayProcess, shared_pilot: PilotSession,
               labels: list[str]) -> Iterator[Any]:
    def make(slots: int) -> DroneClient:
        drone = shared_relay.drone(f"{labels[0]}-d", labels, slots=slots, pilot=shared_pilot)
        trust_test_drone(shared_pilot.env, drone)
        return drone
    yield make


def test_free_slots_alternate_between_jobs_oldest_first(
    shared_relay: RelayProcess, shared_pilot: PilotSession, make_drone: Any,
    labels: list[str],
) -> None:
    drone = make_drone(4)
    first = submit(shared_relay, shared_pilot, 4, labels).job["id"]
    second = submit(shared_relay, shared_pilot, 4, labels).job["id"]
    got = handed(shared_pilot, drone.poll(slots=4).json())
    assert got == [(first, 0, 0), (second, 0, 0), (first, 1, 0), (second, 1, 0)]
    assert job_of(shared_pilot, first)["counts"] == {
        "queued": 2, "running": 2, "succeeded": 0, "failed": 0, "cancelled": 0}


def test_max_parallel_holds_a_job_back_and_the_others_take_its_slots(
    shared_relay: RelayProcess, shared_pilot: PilotSession, make_drone: Any,
    labels: list[str],
) -> None:
    drone = make_drone(4)
    narrow = submit(shared_relay, shared_pilot, 4, labels, max_parallel=1).job["id"]
    wide = submit(shared_relay, shared_pilot, 4, labels).job["id"]
    answer = drone.poll(slots=4).json()
    assert handed(shared_pilot, answer) == [(narrow, 0, 0), (wide, 0, 0), (wide, 1, 0),
                                           (wide, 2, 0)]
    drone.finish(answer["tasks"][0]["id"])  # the narrow job's one trial ends: its next may go
    assert handed(shared_pilot, drone.poll(slots=4, running=[
        t["id"] for t in answer["tasks"][1:]]).json()) == [(narrow, 1, 0)]


def test_a_chosen_exit_code_runs_the_trial_again_once_under_its_spare_order(
    shared_relay: RelayProcess, shared_pilot: PilotSession, make_drone: Any,
    labels: list[str],
) -> None:
    drone = make_drone(2)
    job = submit(shared_relay, shared_pilot, 2, labels, retries=1, retry_on=[5]).job["id"]
    first = drone.poll(slots=2).json()["tasks"]
    assert [drone.open(t)["command"] for t in first] == ["echo 0", "echo 1"]
    drone.finish(first[0]["id"], "failed", exit_code=5)  # in retry_on: runs again
    drone.finish(first[1]["id"], "failed", exit_code=4)  # not in it: stays failed
    again = drone.poll(slots=2).json()["tasks"]
    assert handed(shared_pilot, {"tasks": again}) == [(job, 0, 1)]
    assert drone.open(again[0])["command"] == "echo 0"  # the same spec, a new signed order
    assert again[0]["order"] != first[0]["order"]
    assert job_of(shared_pilot, job)["state"] == "running"
    drone.finish(again[0]["id"], "failed", exit_code=5)  # its one spare is spent
    assert drone.poll(slots=2).json()["tasks"] == []
    shown = job_of(shared_pilot, job)
    assert shown["state"] == "failed" and shown["counts"]["failed"] == 2, shown
    assert shown["finished_at"] is not None


def test_stop_on_failure_cancels_what_has_not_started(
    shared_relay: RelayProcess, shared_pilot: PilotSession, make_drone: Any,
    labels: list[str],
) -> None:
    drone = make_drone(1)
    job = submit(shared_relay, shared_pilot, 3, labels, max_parallel=1,
                 stop_on_failure=True).job["id"]
    task = drone.poll().json()["tasks"][0]
    drone.finish(task["id"], "failed", exit_code=2)
    shown = job_of(shared_pilot, job)
    assert shown["stopped"] and "trial 0" in shown["stopped"], shown
    assert shown["counts"] == {"queued": 0, "running": 0, "succeeded": 0, "failed": 1,
                               "cancelled": 2}
    assert shown["state"] == "failed"
    assert drone.poll().json()["tasks"] == []


def test_only_its_pilot_may_add_to_or_cancel_a_job_and_ids_are_checked(
    shared_relay: RelayProcess, shared_pilot: PilotSession, make_drone: Any,
    labels: list[str],
) -> None:
    drone = make_drone(1)
    job = submit(shared_relay, shared_pilot, 1, labels).job["id"]
    empty = shared_pilot.post("/v1/jobs", json={"id": new_job_id(), "kind": "sweep",
                                                "tasks": []})
    assert empty.status_code == 422 and "tasks" in empty.json()["detail"]

    async def bad_id() -> None:
        async with client(shared_relay, shared_pilot) as c:
            await c.submit_job("j-NOTANID", name="x", kind="sweep", trials=[TrialSubmit(
                trial=0, spec={"command": "true"}, labels=labels)])
    with pytest.raises(RelayError) as shaped:
        asyncio.run(bad_id())
    assert shaped.value.status == 422 and "not a job id" in str(shaped.value)
    other = shared_relay.pilot("mallory")

    async def cancel_as_mallory() -> None:
        async with client(shared_relay, other) as c:
            await c.cancel_job(job)
    with pytest.raises(RelayError) as refused:
        asyncio.run(cancel_as_mallory())
    assert refused.value.code == "not_your_job"
    assert job_of(shared_pilot, job)["counts"]["queued"] == 1  # nothing changed

    trust_test_drone(other.env, drone)  # so the refusal is the relay's, not the client's

    async def add_as_mallory() -> None:
        async with client(shared_relay, other) as c:
            await c.add_job_tasks(job, [TrialSubmit(trial=5, spec={"command": "true"},
                                                    labels=labels)])
    with pytest.raises(RelayError) as not_theirs:
        asyncio.run(add_as_mallory())
    assert not_theirs.value.status == 403 and not_theirs.value.code == "not_your_job"
    assert job_of(shared_pilot, job)["trials"] == 1  # nothing added

    async def cancel_a_missing_job() -> None:
        async with client(shared_relay, shared_pilot) as c:
            await c.cancel_job(new_job_id())
    with pytest.raises(RelayError) as missing:
        asyncio.run(cancel_a_missing_job())
    assert missing.value.status == 404

    async def same_id_again() -> None:
        async with client(shared_relay, shared_pilot) as c:
            await c.submit_job(job, name="again", kind="sweep", trials=[TrialSubmit(
                trial=0, spec={"command": "true"}, labels=labels)])
    with pytest.raises(RelayError) as taken:
        asyncio.run(same_id_again())
    assert taken.value.code == "job_exists"


def test_a_relay_killed_mid_sweep_loses_no_trial_and_runs_none_twice(tmp_path: Path) -> None:
    with RelayProcess(tmp_path / "relay", config={"sweep_interval": 0.2}) as relay:
        pilot = relay.pilot("alice")
        drone = relay.drone("crash-d", ["crash"], slots=2, pilot=pilot)
        trust_test_drone(pilot.env, drone)
        job = submit(relay, pilot, 6, ["crash"]).job["id"]
        runs: list[str] = []  # each task id the drone was handed and ran
        held: list[str] = []
        for round_number in itertools.count():
            answer = drone.poll(slots=2, running=held).json()
            new = [t["id"] for t in answer["tasks"] if t["id"] not in held]
            runs.extend(new)
            held.extend(new)
            if round_number in (1, 3):
                relay.kill9()  # with two trials handed out and held, unfinished
                relay.start()
                continue
            if not held:
                break
            drone.finish(held.pop(0))
            assert round_number < 40
        trials = [pilot.get(f"/v1/tasks/{t}").json()["trial"] for t in runs]
        assert sorted(trials) == list(range(6)), trials  # every trial once, none twice
        shown = job_of(pilot, job)
        assert shown["state"] == "succeeded" and shown["counts"]["succeeded"] == 6, shown
        relay.kill9()


def test_a_sweep_placed_over_many_drones_goes_in_chunks_under_the_body_limit(
    shared_relay: RelayProcess, shared_pilot: PilotSession, labels: list[str],
) -> None:
    """Each trial by labels carries its task key wrapped for every matching drone: 200 over
    24 drones are over 1 MiB of JSON, so the client splits by size as well as by count."""
    for n in range(24):
        drone = shared_relay.drone(f"{labels[0]}-{n}", labels, pilot=shared_pilot)
        trust_test_drone(shared_pilot.env, drone)
    done = submit(shared_relay, shared_pilot, 200, labels)
    assert len(done.tasks) == 200 and sorted(t["trial"] for t in done.tasks) == list(range(200))
    assert job_of(shared_pilot, done.job["id"])["counts"]["queued"] == 200


def test_chunks_keep_to_the_count_and_the_byte_budget() -> None:
    from dragoon.cockpit.client.jobs import chunks

    bodies = [{"n": i, "pad": "x" * 90} for i in range(10)]  # 110 bytes of JSON each
    assert [len(run) for run in chunks(bodies, most=4, budget=10_000)] == [4, 4, 2]
    assert [len(run) for run in chunks(bodies, most=200, budget=300)] == [2] * 5
    huge = [{"pad": "x" * 1000}, {"n": 1}]
    assert [len(run) for run in chunks(huge, most=200, budget=300)] == [1, 1]
    assert list(chunks([], most=3)) == []


def test_the_inbox_filters_by_job_and_by_task_page_by_page(
    shared_relay: RelayProcess, shared_pilot: PilotSession, make_drone: Any,
    labels: list[str],
) -> None:
    drone = make_drone(4)
    first = submit(shared_relay, shared_pilot, 2, labels).job["id"]
    second = submit(shared_relay, shared_pilot, 2, labels).job["id"]
    tasks = drone.poll(slots=4).json()["tasks"]
    of = {t["id"]: job for t, (job, _, _) in zip(tasks, handed(shared_pilot, {"tasks": tasks}),
                                                strict=True)}
    for index in range(3):  # interleaved: every task says something each round
        for task in tasks:
            assert drone.message(task["id"], index, f"loss={index} {task['id']}").status_code \
                == 200
    mine = [t for t in of if of[t] == first]
    pages, after = [], 0
    while True:
        page = shared_pilot.inbox(job=first, after=after, limit=4)
        pages.append(page)
        if len(page) < 4:
            break
        after = page[-1]["id"]
    listed = [m for page in pages for m in page]
    assert [len(p) for p in pages] == [4, 2]
    assert {m["task"] for m in listed} == set(mine) and len(listed) == 6
    assert [m["id"] for m in listed] == sorted(m["id"] for m in listed)
    everything = shared_pilot.inbox(limit=1000)
    assert [m["id"] for m in listed] == [m["id"] for m in everything if m["task"] in mine]
    one = shared_pilot.inbox(task=mine[1].upper())
    assert [(m["task"], m["index"]) for m in one] == [(mine[1], i) for i in range(3)]
    assert shared_pilot.inbox(job=second, task=mine[0]) == []  # both filters hold
    assert shared_pilot.inbox(job=new_job_id()) == []
    for bad in ({"job": "j-nope"}, {"task": "t-abc"}, {"task": "x" * 41}):
        refused = shared_pilot.get("/v1/messages", params=bad)
        assert refused.status_code == 422, (bad, refused.text)

    async def newest() -> dict[str, Any]:
        async with client(shared_relay, shared_pilot) as c:
            return dict(await c.last_job_messages(second))
    found = asyncio.run(newest())
    theirs = [t for t in of if of[t] == second]
    assert sorted(found) == sorted(theirs)
    assert {t: found[t]["text"] for t in theirs} == {t: f"loss=2 {t}" for t in theirs}


def test_a_later_chunk_refused_names_the_job_and_the_trials_it_has(tmp_path: Path) -> None:
    """The queue holds 250 of this pilot's tasks: the first chunk of 200 goes in, the
    second is refused; the error says which job has them, and the job shows them."""
    with RelayProcess(tmp_path / "relay", config={"queued_per_pilot": 250}) as relay:
        pilot = relay.pilot("alice")
        drone = relay.drone("quota-d", ["quota"], pilot=pilot)
        trust_test_drone(pilot.env, drone)
        specs = [TrialSubmit(trial=i, spec={"command": "true"}, labels=["quota"])
                 for i in range(300)]
        job_id = new_job_id()

        async def go() -> None:
            async with client(relay, pilot) as c:
                await c.submit_job(job_id, name="big", kind="sweep", trials=specs)
        with pytest.raises(RelayError) as caught:
            asyncio.run(go())
        assert caught.value.status == 429
        assert f"job {job_id} has the first 200 of 300 trials" in str(caught.value)
        assert f"dragoon job cancel {job_id}" in str(caught.value)
        assert job_of(pilot, job_id)["counts"]["queued"] == 200
