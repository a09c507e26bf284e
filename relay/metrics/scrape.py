"""``GET /metrics``: who may scrape, and the exposition in the format the scraper asks for.

Who may scrape: when ``metrics.token`` exists in the relay's data directory,
whoever presents ``Authorization: Bearer <its content>``; otherwise peers on
loopback only (a local Prometheus, an SSH tunnel). A reverse proxy reaches the
relay from loopback too, so the proxy configurations in docs/deploy.md refuse
``/metrics`` unless a token is set.

The route is open as far as RE-V1 goes (``relay/auth.py`` lists it) and is
left out of the OpenAPI document. The exposition is built on a worker thread:
building it reads the store, and that read waits on the database thread.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, Final

from dragoon.relay.metrics.families import RelayMetrics
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

METRICS_PATH: Final = "/metrics"
TOKEN_FILE: Final = "metrics.token"  # noqa: S105 - a file name, not a secret
# What a scraper that asks for nothing in particular gets: the text format 0.0.4.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_NO_STORE: Final = {"cache-control": "no-store"}
_REFUSAL: Final = {"error": "forbidden",
                   "detail": "metrics need the metrics.token bearer token, "
                             "or a loopback peer when there is none"}

Scope = MutableMapping[str, Any]


def add_route(app: Any, metrics: RelayMetrics, *, token_file: Path | None) -> None:
    """``GET`` and ``HEAD /metrics`` on a FastAPI app, out of its OpenAPI document.

    An API route rather than a bare Starlette one: FastAPI's routes leave
    themselves in ``scope["route"]``, so the scrape is timed as ``/metrics``.
    """
    app.add_api_route(METRICS_PATH, endpoint(metrics, token_file), methods=["GET", "HEAD"],
                      include_in_schema=False)


def endpoint(
    metrics: RelayMetrics, token_file: Path | None
) -> Callable[[Request], Awaitable[Response]]:
    async def serve(request: Request) -> Response:
        if not allowed(request.scope, token_file):
            return JSONResponse(_REFUSAL, status_code=403, headers=_NO_STORE)
        body, content_type = await asyncio.to_thread(
            metrics.exposition, request.headers.get("accept", "")
        )
        return Response(body, media_type=content_type, headers=_NO_STORE)

    return serve


def allowed(scope: Scope, token_file: Path | None) -> bool:
    """The bearer of ``metrics.token`` when that file exists, else any loopback peer.

    With a token, loopback is not enough: behind a reverse proxy every
    request comes from loopback.
    """
    token = _read_token(token_file)
    if token is not None:
        presented = _bearer(scope)
        return presented is not None and hmac.compare_digest(presented, token.encode())
    client = scope.get("client")
    if not client:
        return False
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization" and value.startswith(b"Bearer "):
            return bytes(value[len(b"Bearer "):]).strip()
    return None


def _read_token(path: Path | None) -> str | None:
    """Read at each scrape: a rotated token takes effect without a restart; scrapes are rare."""
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return token or None
