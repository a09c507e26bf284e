"""relay/metrics/ on a small real ASGI app: the exposition parses back and counts right."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest
from dragoon.relay import metrics as m
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.relay_ops.promtext import parse


def _app(tmp_path: Path, counts: m.StateCounts | None = None,
         reader: m.StateReader | None = None) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/tasks/{task_id}")
    async def show(task_id: str) -> dict[str, str]:
        return {"id": task_id}

    @app.get("/v1/workers")
    async def refuse() -> JSONResponse:
        return JSONResponse({"error": "bad_signature", "detail": "no"}, status_code=401)

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    @app.get("/v1/tasks/{task_id}/log")
    async def log(task_id: str) -> dict[str, str]:
        return {"id": task_id}

    app.add_middleware(_RefuseUnsigned)

    def read_counts() -> m.StateCounts:
        assert counts is not None
        return counts

    m.install(app, state_reader=reader or (read_counts if counts else None), data_dir=tmp_path)
    return app


class _RefuseUnsigned:
    """Refuses, before routing, requests to /v1/tasks/…/log without a signature header.

    It stands where the relay's RE-V1 middleware stands, to show that a request
    refused before routing is still labelled with its route template.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/log") and not any(
            name == b"x-re-signature" for name, _ in scope["headers"]
        ):
            response = JSONResponse({"error": "bad_request_signature_headers", "detail": "-"},
                                    status_code=401)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _client(app: FastAPI, peer: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://relay")


def test_requests_are_labelled_by_route_template_and_status(tmp_path: Path) -> None:
    app = _app(tmp_path)

    async def go() -> str:
        async with _client(app) as client:
            for task_id in ("t-aaaaaaaaaa", "t-bbbbbbbbbb", "t-cccccccccc"):
                assert (await client.get(f"/v1/tasks/{task_id}")).status_code == 200
            assert (await client.get("/v1/workers")).status_code == 401
            assert (await client.get("/v1/no/such/route")).status_code == 404
            assert (await client.get("/v1/boom")).status_code == 500
            assert (await client.get("/v1/tasks/t-aaaaaaaaaa/log")).status_code == 401
            answer = await client.get("/metrics")
            assert answer.headers["content-type"] == m.CONTENT_TYPE
            return answer.text

    families = parse(asyncio.run(go()))
    total = families["dragoon_relay_http_requests_total"]
    assert total.value("", method="GET", route="/v1/tasks/{task_id}", status="200") == 3
    assert total.value("", method="GET", route="/v1/workers", status="401") == 1
    assert total.value("", method="GET", route="unmatched", status="404") == 1
    assert total.value("", method="GET", route="/v1/boom", status="500") == 1
    # No raw path ever becomes a label value.
    assert not any("t-aaaaaaaaaa" in value for labels in total.series() for _, value in labels)
    duration = families["dragoon_relay_http_request_duration_seconds"]
    assert duration.kind == "histogram"
    assert duration.value("_count", method="GET", route="/v1/tasks/{task_id}", status="200") == 3
    assert duration.value("_bucket", method="GET", route="/v1/tasks/{task_id}", status="200",
                          le="+Inf") == 3
    failures = families["dragoon_relay_auth_failures_total"]
    assert failures.value("", code="bad_signature") == 1
    assert failures.value("", code="bad_request_signature_headers") == 1
    assert total.value("", method="GET", route="/v1/tasks/{task_id}/log", status="401") == 1


def test_drone_and_task_gauges_list_every_state(tmp_path: Path) -> None:
    counts = m.StateCounts(drones={"online": 2}, tasks={"queued": 5, "succeeded": 7})
    app = _app(tmp_path, counts)

    async def go() -> str:
        async with _client(app) as client:
            return (await client.get("/metrics")).text

    families = parse(asyncio.run(go()))
    drones = families["dragoon_relay_drones"]
    assert drones.kind == "gauge"
    assert drones.value("", state="online") == 2
    assert drones.value("", state="offline") == 0
    tasks = families["dragoon_relay_tasks"]
    assert tasks.value("", state="queued") == 5
    assert tasks.value("", state="succeeded") == 7
    assert tasks.value("", state="lost") == 0
    assert len(tasks.series()) == 8


def test_dispatch_latency_lands_in_the_right_buckets(tmp_path: Path) -> None:
    registry = m.RelayMetrics()
    registry.observe_dispatch(100.0, now=100.003)
    registry.observe_dispatch(100.0, now=100.0004)
    registry.observe_dispatch(100.0, now=190.0)
    family = parse(registry.render())["dragoon_relay_dispatch_latency_seconds"]
    assert family.value("_bucket", le="0.0005") == 1
    assert family.value("_bucket", le="0.005") == 2
    # prometheus-client spells a bound as a float ("60.0"), as Prometheus 3 normalises it.
    assert family.value("_bucket", le="60.0") == 2
    assert family.value("_bucket", le="300.0") == 3
    assert family.value("_count") == 3
    assert family.value("_sum") == pytest.approx(90.0034)


def test_metrics_are_refused_to_a_remote_peer_without_the_token(tmp_path: Path) -> None:
    app = _app(tmp_path)

    async def go() -> tuple[int, int, int, int, int]:
        async with _client(app, peer="203.0.113.7") as remote, _client(app) as local:
            before = (await remote.get("/metrics")).status_code
            local_before = (await local.get("/metrics")).status_code
            (tmp_path / m.TOKEN_FILE).write_text("s3cret-scrape-token\n")
            wrong = await remote.get("/metrics", headers={"authorization": "Bearer nope"})
            right = await remote.get("/metrics",
                                     headers={"authorization": "Bearer s3cret-scrape-token"})
            # With a token set, loopback (where a reverse proxy connects from) needs it too.
            local_after = (await local.get("/metrics")).status_code
            return before, local_before, wrong.status_code, right.status_code, local_after

    assert asyncio.run(go()) == (403, 200, 403, 200, 403)


def test_label_values_are_escaped() -> None:
    registry = m.RelayMetrics()
    registry.observe_request("GET", 'odd"\\route\n', 200, 0.01)
    family = parse(registry.render())["dragoon_relay_http_requests_total"]
    assert family.value("", method="GET", route='odd"\\route\n', status="200") == 1


@pytest.mark.parametrize(("seconds", "text"), [(3.0, "3.0"), (0.25, "0.25"), (90.5, "90.5")])
def test_values_are_spelled_as_prometheus_reads_them(seconds: float, text: str) -> None:
    registry = m.RelayMetrics()
    registry.observe_dispatch(100.0, now=100.0 + seconds)
    lines = registry.render().splitlines()
    assert f"dragoon_relay_dispatch_latency_seconds_sum {text}" in lines
    assert 'dragoon_relay_dispatch_latency_seconds_bucket{le="+Inf"} 1.0' in lines


def test_dispatched_task_view_is_timed_on_the_relays_clock() -> None:
    registry = m.RelayMetrics()
    registry.observe_dispatched_task({"id": "t-1", "created_at": 50.0, "dispatched_at": 50.002})
    registry.observe_dispatched_task({"id": "t-2"})  # no times: nothing to observe
    family = parse(registry.render())["dragoon_relay_dispatch_latency_seconds"]
    assert family.value("_count") == 1
    assert family.value("_bucket", le="0.001") == 0
    assert family.value("_bucket", le="0.0025") == 1


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(tmp_path: Path) -> None:
    app = _app(tmp_path, m.StateCounts(drones={"online": 2}, tasks={}))
    openmetrics = "application/openmetrics-text; version=1.0.0; charset=utf-8"

    async def go() -> tuple[httpx.Response, httpx.Response]:
        async with _client(app) as client:
            asked = await client.get("/metrics", headers={"accept": openmetrics})
            plain = await client.get("/metrics")
            return asked, plain

    asked, plain = asyncio.run(go())
    assert asked.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert asked.text.endswith("# EOF\n")
    families = {f.name: f for f in text_string_to_metric_families(asked.text)}
    online = [s.value for s in families["dragoon_relay_drones"].samples
              if s.labels == {"state": "online"}]
    assert online == [2]
    assert plain.headers["content-type"] == m.CONTENT_TYPE
    assert "# EOF" not in plain.text


def test_two_relays_in_one_process_keep_their_own_series(tmp_path: Path) -> None:
    first, second = _app(tmp_path / "first"), _app(tmp_path / "second")

    async def go() -> tuple[str, str]:
        async with _client(first) as one, _client(second) as two:
            assert (await one.get("/v1/tasks/t-aaaaaaaaaa")).status_code == 200
            return (await one.get("/metrics")).text, (await two.get("/metrics")).text

    one_text, two_text = asyncio.run(go())
    route = (("method", "GET"), ("route", "/v1/tasks/{task_id}"), ("status", "200"))
    assert parse(one_text)["dragoon_relay_http_requests_total"].series()[route] == 1
    assert route not in parse(two_text)["dragoon_relay_http_requests_total"].series()


def test_store_is_read_at_each_scrape_off_the_event_loop(tmp_path: Path) -> None:
    threads: list[threading.Thread] = []

    def read() -> m.StateCounts:
        threads.append(threading.current_thread())
        return m.StateCounts(drones={"online": len(threads)}, tasks={})

    app = _app(tmp_path, reader=read)

    async def go() -> list[float]:
        async with _client(app) as client:
            return [parse((await client.get("/metrics")).text)["dragoon_relay_drones"]
                    .value("", state="online") for _ in range(2)]

    assert asyncio.run(go()) == [1, 2]
    assert threading.main_thread() not in threads  # the loop runs on the main thread here


def test_metrics_route_is_left_out_of_the_openapi_document(tmp_path: Path) -> None:
    app = _app(tmp_path)
    assert "/v1/tasks/{task_id}" in app.openapi()["paths"]
    assert m.METRICS_PATH not in app.openapi()["paths"]


def test_a_scrape_is_counted_under_its_own_route(tmp_path: Path) -> None:
    app = _app(tmp_path)

    async def go() -> str:
        async with _client(app) as client:
            assert (await client.head("/metrics")).status_code == 200
            await client.get("/metrics")
            return (await client.get("/metrics")).text

    total = parse(asyncio.run(go()))["dragoon_relay_http_requests_total"]
    assert total.value("", method="GET", route="/metrics", status="200") == 1
    assert total.value("", method="HEAD", route="/metrics", status="200") == 1
