"""relay/metrics.py on a small real ASGI app: the exposition parses back and counts right."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from dragoon.relay import metrics as m
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.relay_ops.promtext import parse


def _app(tmp_path: Path, counts: m.StateCounts | None = None) -> FastAPI:
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

    async def read_counts() -> m.StateCounts:
        assert counts is not None
        return counts

    m.install(app, state_reader=read_counts if counts else None, data_dir=tmp_path)
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
    assert family.value("_bucket", le="60") == 2
    assert family.value("_bucket", le="300") == 3
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


@pytest.mark.parametrize(("value", "text"), [(3.0, "3"), (0.25, "0.25"),
                                             (float("inf"), "+Inf"), (float("-inf"), "-Inf")])
def test_values_are_spelled_as_prometheus_reads_them(value: float, text: str) -> None:
    assert m.format_value(value) == text


def test_dispatched_task_view_is_timed_on_the_relays_clock() -> None:
    registry = m.RelayMetrics()
    registry.observe_dispatched_task({"id": "t-1", "created_at": 50.0, "dispatched_at": 50.002})
    registry.observe_dispatched_task({"id": "t-2"})  # no times: nothing to observe
    family = parse(registry.render())["dragoon_relay_dispatch_latency_seconds"]
    assert family.value("_count") == 1
    assert family.value("_bucket", le="0.001") == 0
    assert family.value("_bucket", le="0.0025") == 1
