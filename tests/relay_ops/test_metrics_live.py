"""``GET /metrics`` of a real relay subprocess: what it counts matches what was done to it."""

from __future__ import annotations

import httpx

from tests.relay_ops.promtext import Family, parse
from tests.support.relay import PilotSession, RelayProcess, wait_until


def _scrape(relay: RelayProcess, **headers: str) -> dict[str, Family]:
    answer = httpx.get(f"{relay.url}/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(answer.text)


def test_metrics_count_requests_by_template_drones_and_auth_failures(
    relay: RelayProcess, pilot: PilotSession
) -> None:
    relay.drone("gpu-1", ["gpu"])
    relay.drone("gpu-2", ["gpu"])
    for _ in range(3):
        assert pilot.get("/v1/workers").status_code == 200
    assert pilot.post("/v1/workers/gpu-1/drain", json={"drain": True}).status_code == 200
    # Altered after signing: the relay refuses it before any route runs.
    headers = pilot.signed_headers("GET", "/v1/workers")
    tampered = pilot.http.get("/v1/workers?x=1", headers=headers)
    assert tampered.status_code == 401 and tampered.json()["error"] == "bad_signature"
    unsigned = pilot.http.get("/v1/workers")
    assert unsigned.json()["error"] == "bad_request_signature_headers"

    families = _scrape(relay)
    drones = families["dragoon_relay_drones"]
    assert drones.value("", state="pending") == 2
    assert drones.value("", state="online") == 0
    assert families["dragoon_relay_tasks"].value("", state="queued") == 0

    requests = families["dragoon_relay_http_requests_total"]
    assert requests.value("", method="GET", route="/v1/workers", status="200") == 3
    assert requests.value("", method="GET", route="/v1/workers", status="401") == 2
    drain = {dict(labels)["route"]: value for labels, value in requests.series().items()
             if "drain" in dict(labels)["route"]}
    assert list(drain.values()) == [1] and "{" in next(iter(drain))  # a template, not a name
    assert all("gpu-1" not in value for labels in requests.series() for _, value in labels)
    failures = families["dragoon_relay_auth_failures_total"]
    assert failures.value("", code="bad_signature") == 1
    assert failures.value("", code="bad_request_signature_headers") == 1
    rss = families["dragoon_relay_process_resident_memory_bytes"].value()
    assert 10 * 2**20 < rss < 2**31
    assert families["dragoon_relay_process_cpu_seconds_total"].value() > 0


def test_metrics_speak_openmetrics_to_a_scraper_that_asks(relay: RelayProcess) -> None:
    answer = httpx.get(f"{relay.url}/metrics",
                       headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.endswith("# EOF\n")
    assert "dragoon_relay_drones" in answer.text


def test_metrics_are_refused_to_a_remote_bearer_of_a_wrong_token(relay: RelayProcess) -> None:
    (relay.data_dir / "metrics.token").write_text("scrape-me\n")
    assert httpx.get(f"{relay.url}/metrics").status_code == 403
    wrong = httpx.get(f"{relay.url}/metrics", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert "dragoon_relay_drones" in _scrape(relay, authorization="Bearer scrape-me")


def test_dispatch_latency_is_observed_when_a_drone_takes_a_task(
    relay: RelayProcess, pilot: PilotSession
) -> None:
    drone = relay.drone("gpu-1")
    task = pilot.submit("true", drone="gpu-1")
    answer = drone.poll(wait=5)
    assert [t["id"] for t in answer.json()["tasks"]] == [task["id"]]

    families = wait_until(
        lambda: (f := _scrape(relay))["dragoon_relay_dispatch_latency_seconds"].value("_count")
        and f,
        message="a dispatch observed",
    )
    dispatch = families["dragoon_relay_dispatch_latency_seconds"]
    assert dispatch.value("_count") == 1
    assert 0 <= dispatch.value("_sum") < 5
    tasks = families["dragoon_relay_tasks"]
    assert tasks.value("", state="dispatched") == 1
    assert tasks.value("", state="queued") == 0
