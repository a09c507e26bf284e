"""The drone ships ``order`` beside stdout and stderr; a relay that refuses it costs no output."""

from __future__ import annotations

from tests.drone.conftest import Fleet
from tests.drone.proxy import TamperingProxy


def test_the_order_reaches_the_relay_and_its_size_is_in_the_finish(fleet: Fleet) -> None:
    fleet.drone("d1")
    task_id = fleet.submit("echo one; echo two >&2; echo three", drone="d1")
    task = fleet.wait_state(task_id)
    assert task["state"] == "succeeded"
    order = fleet.output(task_id, "order", whole=True)
    assert order.startswith(b"dragoon-order 1\n")
    assert task["order_size"] == len(fleet.stored(task_id, "order"))  # sealed, as stored


def test_an_older_relay_that_refuses_the_order_stream_still_gets_the_output(
    fleet: Fleet,
) -> None:
    proxy = TamperingProxy(fleet.relay.url)
    proxy.refuse = lambda path: path.startswith("/v1/worker/log") and "stream=order" in path
    try:
        drone = fleet.drone("d1", start=False)
        drone.configure(relay=proxy.url)
        drone.start()
        task_id = fleet.submit("echo one; echo two >&2", drone="d1")
        task = fleet.wait_state(task_id, timeout=30)
        assert task["state"] == "succeeded", task
        assert fleet.output(task_id) == b"one\n" and fleet.output(task_id, "stderr") == b"two\n"
        assert task["order_size"] == 0
        assert drone.log_text().count("takes no order stream") == 1
    finally:
        fleet.close()
        proxy.close()
