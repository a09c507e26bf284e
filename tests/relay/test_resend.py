"""A submit whose answer is lost is sent again and runs once (docs/api.md, "Sending a
submit again"; issue 15's failover fault).

The relay answers a signed order it already holds with the task that order made (a submit,
a job's create, a job's chunk), and refuses the same order id under another order. The
pilot's ``RelayClient`` sends a submit again, signed afresh, when its answer was lost: here
through a real hop that forwards the request to the real relay and then drops the
connection, or answers a balancer's 502, as a replica killed after its commit leaves it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dragoon.cockpit.client import RelayClient, RelayError
from dragoon.cockpit.client._types import TrialSubmit
from dragoon.shared import orders
from dragoon.shared.jobs import new_job_id

from tests.support.cutting import AnswerLosingProxy, Picker, first_n
from tests.support.relay import DroneClient, PilotSession, RelayProcess
from tests.support.sealing import trust_test_drone


def _tasks_of(pilot: PilotSession, drone: str) -> list[dict[str, Any]]:
    answer = pilot.get("/v1/tasks", params={"drone": drone, "limit": 1000})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["tasks"])


@pytest.fixture
def hop(shared_relay: RelayProcess) -> Iterator[Callable[..., AnswerLosingProxy]]:
    made: list[AnswerLosingProxy] = []

    def make(cut: Picker, **options: Any) -> AnswerLosingProxy:
        proxy = AnswerLosingProxy(shared_relay.url, cut=cut, **options)
        made.append(proxy)
        return proxy
    yield make
    for proxy in made:
        proxy.close()


def _client(url: str, pilot: PilotSession, resends: list[str]) -> RelayClient:
    client = RelayClient(url, signer=pilot.signer, token=pilot.token, env=pilot.env)
    client.on_resend = lambda error, _delay: resends.append(error.code)
    return client


def test_the_same_signed_submit_twice_is_one_task_and_a_reused_order_id_is_refused(
        shared_pilot: PilotSession, new_drone: Callable[..., DroneClient]) -> None:
    drone = new_drone()
    sealed = shared_pilot.seal({"spec": {"command": "true"}, "drone": drone.name})
    body = {**sealed.body, **orders.sign_order(shared_pilot.signer, sealed.order()).wire()}
    first = shared_pilot.post("/v1/tasks", json=body)
    again = shared_pilot.post("/v1/tasks", json=body)  # signed afresh: a new nonce
    assert first.status_code == again.status_code == 201, again.text
    assert again.json()["id"] == first.json()["id"]
    assert [t["id"] for t in _tasks_of(shared_pilot, drone.name)] == [first.json()["id"]]

    other = sealed.order(expires_in=600)  # the same order id, another order
    refused = shared_pilot.post("/v1/tasks", json={
        **sealed.body, "expires_in": 600,
        **orders.sign_order(shared_pilot.signer, other).wire()})
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "order_reused"
    assert first.json()["id"] in refused.json()["detail"]
    assert len(_tasks_of(shared_pilot, drone.name)) == 1  # nothing added


@pytest.mark.parametrize("how", ["connection dropped", "balancer's 502"])
def test_a_submit_whose_answer_is_lost_is_sent_again_and_runs_once(
        shared_pilot: PilotSession, new_drone: Callable[..., DroneClient],
        hop: Callable[..., AnswerLosingProxy], how: str) -> None:
    drone = new_drone()
    trust_test_drone(shared_pilot.env, drone)
    proxy = hop(first_n(2, "POST", "/v1/tasks"), bad_gateway=how == "balancer's 502")
    resends: list[str] = []

    async def go() -> dict[str, Any]:
        async with _client(proxy.url, shared_pilot, resends) as client:
            return dict(await client.submit(spec={"command": "echo once"}, drone=drone.name))
    task = asyncio.run(go())
    assert len(proxy.lost) == 2 and len(resends) == 2, (proxy.lost, resends)
    assert [s for m, p, s in proxy.forwarded if m == "POST"] == [201, 201, 201]
    assert [t["id"] for t in _tasks_of(shared_pilot, drone.name)] == [task["id"]]
    assert task["spec"]["command"] == "echo once"  # opened: the client kept its key
    handed = drone.poll(wait=0).json()["tasks"]
    assert [t["id"] for t in handed] == [task["id"]]


def test_a_job_whose_create_and_chunk_answers_are_lost_has_each_trial_once(
        shared_relay: RelayProcess, shared_pilot: PilotSession,
        new_drone: Callable[..., DroneClient], hop: Callable[..., AnswerLosingProxy]) -> None:
    drone = new_drone(labels=("resend-job",))
    trust_test_drone(shared_pilot.env, drone)
    lost_kinds: set[str] = set()

    def create_and_first_chunk(method: str, path: str) -> bool:
        kind = "chunk" if path.endswith("/tasks") else "create"
        if method == "POST" and path.startswith("/v1/jobs") and kind not in lost_kinds:
            lost_kinds.add(kind)
            return True
        return False
    proxy = hop(create_and_first_chunk)
    trials = [TrialSubmit(trial=i, spec={"command": f"echo {i}"}, labels=["resend-job"])
              for i in range(5)]
    job_id = new_job_id()

    async def go() -> Any:
        async with _client(proxy.url, shared_pilot, []) as client:
            return await client.submit_job(job_id, name="resent", kind="sweep",
                                           trials=trials, retries=1, chunk=2)
    submitted = asyncio.run(go())
    assert lost_kinds == {"create", "chunk"}
    assert sorted(t["trial"] for t in submitted.tasks) == list(range(5))
    listed = shared_pilot.get("/v1/tasks", params={"job": job_id, "limit": 100}).json()
    assert sorted((t["trial"], t["attempt"]) for t in listed["tasks"]) == \
        [(i, 0) for i in range(5)]
    assert submitted.job["trials"] == 5
    assert {t["id"] for t in listed["tasks"]} == {t["id"] for t in submitted.tasks}


def test_a_relay_never_reached_is_news_at_once_not_a_silent_resend(
        shared_pilot: PilotSession, new_drone: Callable[..., DroneClient],
        hop: Callable[..., AnswerLosingProxy]) -> None:
    drone = new_drone()
    trust_test_drone(shared_pilot.env, drone)
    proxy = hop(lambda _m, _p: False)
    resends: list[str] = []

    async def go() -> None:
        async with _client(proxy.url, shared_pilot, resends) as client:
            await client.submit(spec={"command": "true"}, drone=drone.name)  # recipients read
            proxy.close()  # the port now refuses connections
            await client.submit(spec={"command": "true"}, drone=drone.name)
    started = time.monotonic()
    with pytest.raises(RelayError) as failed:
        asyncio.run(go())
    assert failed.value.code == "unreachable"
    assert resends == []
    assert time.monotonic() - started < 10  # not the 30 s a lost answer is resent for
