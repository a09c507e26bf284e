"""A session ended on the relay (a logout from another client) ends the cockpit's stream at once.

The event stream is refused with 401 ``bad_session`` once the session is gone:
``RelayClient.events`` must end with that error on the spot (no back-off, no
reconnecting for minutes), and the cockpit must say so and ask to log in again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from dragoon.cockpit.app.application import CockpitApp
from dragoon.cockpit.app.live import SESSION_ENDED, LiveSource
from dragoon.cockpit.app.messages import Link
from dragoon.cockpit.app.screens.dialogs import PromptScreen
from dragoon.cockpit.client import RelayClient, RelayError

from tests.cockpit.waiting import showing, until
from tests.support.relay import RelayProcess

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    with RelayProcess(tmp_path_factory.mktemp("ended-cockpit") / "relay") as process:
        yield process


async def _within(waiting: Any, seconds: float) -> bool:
    try:
        await asyncio.wait_for(waiting, seconds)
    except TimeoutError:
        return False
    return True


async def test_the_event_stream_ends_with_the_session_and_is_not_retried(
        relay: RelayProcess) -> None:
    pilot = relay.pilot("alice")
    client = RelayClient(relay.url, signer=pilot.signer, token=pilot.token,
                         env=pilot.env, timeout=10.0)
    retries: list[str] = []
    connected = asyncio.Event()

    async def follow() -> None:
        async for event in client.events(on_retry=lambda e, _d: retries.append(e.code),
                                         give_up_after=float("inf")):
            if event.kind == "drone":
                connected.set()

    drone = relay.drone("box-1", ["cpu"])
    async with client:
        follower = asyncio.ensure_future(follow())
        for beat in range(200):  # until an event proves the stream is open
            await asyncio.to_thread(drone.poll, metrics={"cpu_percent": beat})
            if await _within(connected.wait(), 0.1):
                break
        assert connected.is_set(), "no event reached the stream"
        assert (await asyncio.to_thread(pilot.post, "/v1/auth/logout")).status_code == 200
        with pytest.raises(RelayError) as ended:
            await asyncio.wait_for(follower, 20)  # the old back-off would take 300 s
    assert ended.value.session_ended and ended.value.status == 401
    # at most the one reconnect that learns why the relay closed the stream
    assert retries in ([], ["protocol"])


async def test_the_cockpit_says_the_session_ended_and_asks_to_log_in(
        relay: RelayProcess) -> None:
    pilot = relay.pilot("bob")
    client = RelayClient(relay.url, signer=pilot.signer, token=pilot.token,
                         env=pilot.env, timeout=10.0)
    app = CockpitApp(LiveSource(client, pilot="bob"), ping_interval=0.3)
    async with app.run_test(size=(140, 40)) as driver:
        await until(driver, lambda: app.link is Link.CONNECTED, timeout=20, what="connected")
        assert (await asyncio.to_thread(pilot.post, "/v1/auth/logout")).status_code == 200
        await until(driver, lambda: showing(app, PromptScreen), timeout=20,
                    what="the login prompt")
        assert app.link is Link.LOGIN_NEEDED
        assert app.screen.title_text == "Session ended: enter your TOTP code to log in again"
        assert SESSION_ENDED in str(app.bar.render())
        # The sync worker is cancelled as the prompt opens; under load it ends a moment later.
        await until(driver, lambda: not any(w.name == "sync" and w.is_running
                                            for w in app.workers),
                    timeout=10, what="the sync worker to stop")
