"""Times every HTTP request by method, route template and status; counts 401s by error code.

A pure ASGI middleware rather than ``@app.middleware("http")``: it does not
wrap requests and responses in objects, so streaming answers (log follows,
SSE) pass through untouched and the per-request cost is a clock read and a
dict look-up. The route template is read from ``scope["route"]``, which
Starlette's router sets on the shared scope once it matched.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from dragoon.relay.metrics.families import RelayMetrics
from starlette.routing import compile_path

log = logging.getLogger("dragoon.relay.metrics")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNMATCHED_ROUTE: Final = "unmatched"
_TEMPLATES_ATTR: Final = "_dragoon_metrics_templates"
_AUTH_FAILURE_STATUS: Final = 401
_MAX_ERROR_BODY: Final = 4096


class RequestMetrics:
    """The outermost middleware: its timing covers the relay's own middlewares too."""

    def __init__(self, app: ASGIApp, metrics: RelayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        error_body: list[bytes] | None = None

        async def timed_send(message: Message) -> None:
            nonlocal status, error_body
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == _AUTH_FAILURE_STATUS:
                    error_body = []
            elif (error_body is not None and message["type"] == "http.response.body"
                  and sum(map(len, error_body)) < _MAX_ERROR_BODY):
                error_body.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self.metrics.observe_request(
                scope["method"], route_template(scope), status, time.perf_counter() - started
            )
            if error_body is not None:
                self.metrics.observe_auth_failure(_error_code(b"".join(error_body)))


def route_template(scope: Scope) -> str:
    """The path template of the route that served (or would have served) this request.

    The router leaves the matched route in ``scope["route"]``. A request refused
    before routing (a bad signature, a body too large) has none; its path is
    then matched against the templates of the app's OpenAPI document, which
    FastAPI builds once and caches, on that rarer path only.
    """
    template = getattr(scope.get("route"), "path", None)
    if isinstance(template, str) and template:
        return template
    path = scope.get("path", "")
    for pattern, candidate in _templates(scope.get("app")):
        if pattern.match(path):
            return candidate
    return UNMATCHED_ROUTE


def _templates(app: Any) -> list[tuple[re.Pattern[str], str]]:
    cached: list[tuple[re.Pattern[str], str]] | None = getattr(app, _TEMPLATES_ATTR, None)
    if cached is not None:
        return cached
    try:
        paths = list(app.openapi().get("paths", {}))
    except Exception:  # a schema that cannot be built must not break a request
        log.exception("no route templates for metrics")
        paths = []
    # Literal segments win over parameters: fewer parameters first.
    paths.sort(key=lambda template: (template.count("{"), template))
    cached = [(compile_path(template)[0], template) for template in paths]
    if app is not None:
        setattr(app, _TEMPLATES_ATTR, cached)
    return cached


def _error_code(body: bytes) -> str:
    try:
        code = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return "unknown"
    return code if isinstance(code, str) and code.isidentifier() else "unknown"
