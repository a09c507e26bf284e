"""Prometheus metrics for the relay: ``GET /metrics`` in the text exposition format 0.0.4.

Written by hand so the relay needs no ``prometheus_client``: a few counters
and histograms kept in plain dicts, one pure ASGI middleware that times every
request, and a renderer. Gauges that describe the relay's state (drones and
tasks by state) are read from the store at scrape time, so they can never
drift from the truth the way incremented gauges would.

Labels are bounded on purpose: requests are labelled by the *route template*
(``/v1/tasks/{id}``), never the raw path, so a scrape stays small however many
tasks exist, and unmatched paths share one ``route="unmatched"`` label.

Who may scrape: when ``metrics.token`` exists in the relay's data directory,
whoever presents ``Authorization: Bearer <its content>``; otherwise peers on
loopback only (a local Prometheus, an SSH tunnel). A reverse proxy reaches the
relay from loopback too, so the proxy configurations in docs/deploy.md refuse
``/metrics`` unless a token is set.
"""

from __future__ import annotations

import bisect
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import resource
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from dragoon.shared.models import DroneState, TaskState
from starlette.routing import compile_path

log = logging.getLogger("dragoon.relay.metrics")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
METRICS_PATH: Final = "/metrics"
TOKEN_FILE: Final = "metrics.token"  # noqa: S105 - a file name, not a secret
PREFIX: Final = "dragoon_relay_"

# Request latency: sub-millisecond API calls up to 25 s long-polls and SSE streams.
REQUEST_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
# Dispatch latency: a task for an idle, long-polling drone leaves in about a millisecond;
# one queued behind busy slots or for an offline drone may wait hours.
DISPATCH_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0,
    300.0, 3600.0, 86400.0,
)
UNMATCHED_ROUTE: Final = "unmatched"
DISPATCH_HOOK: Final = "task_dispatched"
_TEMPLATES_ATTR: Final = "_dragoon_metrics_templates"
_AUTH_FAILURE_STATUS: Final = 401
_MAX_ERROR_BODY: Final = 4096


class Histogram:
    """Cumulative-bucket histogram; ``observe`` is a bisect and two additions."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, cumulative count)`` pairs, ``+Inf`` last, as the exposition format wants."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            out.append((format_value(bound), running))
        return out


@dataclass(frozen=True)
class StateCounts:
    """How many drones and tasks are in each state right now, as the store knows it."""

    drones: Mapping[str, int]
    tasks: Mapping[str, int]


StateReader = Callable[[], Awaitable[StateCounts]]


def _count_states(conn: sqlite3.Connection) -> StateCounts:
    """Two ``GROUP BY state`` counts; ``tasks_state`` makes the task one an index scan."""
    drones = dict(conn.execute("SELECT state, COUNT(*) FROM drones GROUP BY state").fetchall())
    tasks = dict(conn.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").fetchall())
    return StateCounts(drones=drones, tasks=tasks)


def store_state_reader(db: Any) -> StateReader:
    """Counts read on the relay's database thread (``relay.db.Database.run``) at scrape time."""

    async def read() -> StateCounts:
        counts: StateCounts = await db.run(_count_states)
        return counts

    return read


@dataclass
class RelayMetrics:
    """Every figure the relay exports. One per app; thread-safe for the dispatcher's threads."""

    state_reader: StateReader | None = None
    token_file: Path | None = None
    started_at: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _requests: dict[tuple[str, str, str], Histogram] = field(default_factory=dict, repr=False)
    _auth_failures: dict[str, int] = field(default_factory=dict, repr=False)
    _dispatch: Histogram = field(default_factory=lambda: Histogram(DISPATCH_BUCKETS), repr=False)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        with self._lock:
            histogram = self._requests.get(key)
            if histogram is None:
                histogram = self._requests[key] = Histogram(REQUEST_BUCKETS)
            histogram.observe(seconds)

    def observe_auth_failure(self, code: str) -> None:
        with self._lock:
            self._auth_failures[code] = self._auth_failures.get(code, 0) + 1

    def observe_dispatch(self, created_at: float, *, now: float | None = None) -> None:
        """The dispatcher's hook: a task created at ``created_at`` was just handed to a drone."""
        waited = (time.time() if now is None else now) - created_at
        with self._lock:
            self._dispatch.observe(max(waited, 0.0))

    async def scrape(self) -> str:
        """The whole exposition; the store is read here, once per scrape."""
        state = await self.state_reader() if self.state_reader is not None else None
        return self.render(state)

    def observe_dispatched_task(self, task: Mapping[str, Any]) -> None:
        """Dispatch hook over a task view: ``dispatched_at - created_at``, on the relay's clock."""
        created = task.get("created_at")
        if isinstance(created, int | float):
            dispatched = task.get("dispatched_at")
            self.observe_dispatch(created, now=dispatched if isinstance(dispatched, int | float)
                                  else None)

    def render(self, state: StateCounts | None = None) -> str:
        with self._lock:
            requests = {key: _copy(h) for key, h in self._requests.items()}
            failures = dict(self._auth_failures)
            dispatch = _copy(self._dispatch)
        out: list[str] = []
        if state is not None:
            _gauge_family(out, "drones", "Drones by state, read from the store at scrape time.",
                          "state", _with_zeros(state.drones, DroneState))
            _gauge_family(out, "tasks", "Tasks by state, read from the store at scrape time.",
                          "state", _with_zeros(state.tasks, TaskState))
        _request_families(out, requests)
        _header(out, "auth_failures_total", "counter",
                "Requests refused with 401, by the error code of the answer.")
        for code in sorted(failures):
            out.append(f"{PREFIX}auth_failures_total{_labels(code=code)} {failures[code]}")
        _header(out, "dispatch_latency_seconds", "histogram",
                "Time from a task's submission to its hand-over to a drone.")
        _histogram_lines(out, "dispatch_latency_seconds", {}, dispatch)
        _process_families(out, self.started_at)
        return "\n".join(out) + "\n"

    def allowed(self, scope: Scope) -> bool:
        """The bearer of ``metrics.token`` when that file exists, else any loopback peer.

        With a token, loopback is not enough: behind a reverse proxy every
        request comes from loopback.
        """
        token = _read_token(self.token_file)
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


class MetricsMiddleware:
    """Times every HTTP request by route template and status, and answers ``GET /metrics``.

    A pure ASGI middleware rather than ``@app.middleware("http")``: it does not
    wrap requests and responses in objects, so streaming answers (log follows,
    SSE) pass through untouched and the per-request cost is a clock read, a
    dict look-up and a bisect. The route template is read from ``scope["route"]``,
    which Starlette's router sets on the shared scope once it matched.
    """

    def __init__(self, app: ASGIApp, metrics: RelayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == METRICS_PATH and scope["method"] in ("GET", "HEAD"):
            await self._serve_metrics(scope, send)
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

    async def _serve_metrics(self, scope: Scope, send: Send) -> None:
        started = time.perf_counter()
        if self.metrics.allowed(scope):
            status, content_type = 200, CONTENT_TYPE
            body = (await self.metrics.scrape()).encode()
        else:
            status, content_type = 403, "application/json"
            body = json.dumps({"error": "forbidden",
                               "detail": "metrics need the metrics.token bearer token, "
                                         "or a loopback peer when there is none"}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type.encode()),
                                (b"content-length", str(len(body)).encode()),
                                (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else body})
        self.metrics.observe_request(scope["method"], METRICS_PATH, status,
                                     time.perf_counter() - started)


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


def install(app: Any, *, state_reader: StateReader | None, data_dir: Path | None) -> RelayMetrics:
    """Add the middleware to a FastAPI/Starlette app and keep the metrics on ``app.state.metrics``.

    Added last, it is the outermost middleware, so its timing covers the whole
    request including the relay's own middlewares.
    """
    metrics = RelayMetrics(
        state_reader=state_reader,
        token_file=(data_dir / TOKEN_FILE) if data_dir is not None else None,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.state.metrics = metrics
    return metrics


def install_for_relay(app: Any) -> RelayMetrics:
    """:func:`install` on an app of ``relay.app.create_app``: its store, data dir and dispatcher.

    The dispatcher calls ``relay.hooks["task_dispatched"](task)`` with the task's
    view each time a queued task is handed to a drone.
    """
    relay = app.state.relay
    metrics = install(app, state_reader=store_state_reader(relay.db),
                      data_dir=relay.config.data_dir)
    relay.hooks[DISPATCH_HOOK] = metrics.observe_dispatched_task
    return metrics


# --- text format ------------------------------------------------------------------------------


def format_value(value: float) -> str:
    """Integers without a fraction, ``+Inf``/``-Inf``/``NaN`` spelled as Prometheus spells them."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels.items())
    return "{" + inner + "}"


def _header(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {PREFIX}{name} {help_text}")
    out.append(f"# TYPE {PREFIX}{name} {kind}")


def _gauge_family(out: list[str], name: str, help_text: str, label: str,
                  values: Mapping[str, int]) -> None:
    _header(out, name, "gauge", help_text)
    for key in sorted(values):
        out.append(f"{PREFIX}{name}{_labels(**{label: key})} {values[key]}")


def _histogram_lines(out: list[str], name: str, labels: Mapping[str, str],
                     histogram: Histogram) -> None:
    for le, count in histogram.cumulative():
        out.append(f"{PREFIX}{name}_bucket{_labels(**labels, le=le)} {count}")
    out.append(f"{PREFIX}{name}_sum{_labels(**labels)} {format_value(histogram.total)}")
    out.append(f"{PREFIX}{name}_count{_labels(**labels)} {histogram.count}")


def _request_families(out: list[str], requests: Mapping[tuple[str, str, str], Histogram]) -> None:
    keys = sorted(requests)
    _header(out, "http_requests_total", "counter",
            "HTTP requests answered, by method, route template and status.")
    for method, route, status in keys:
        labels = _labels(method=method, route=route, status=status)
        out.append(f"{PREFIX}http_requests_total{labels} {requests[method, route, status].count}")
    _header(out, "http_request_duration_seconds", "histogram",
            "Time to answer an HTTP request (long-polls and streams included), by route template.")
    for method, route, status in keys:
        _histogram_lines(out, "http_request_duration_seconds",
                         {"method": method, "route": route, "status": status},
                         requests[method, route, status])


def _process_families(out: list[str], started_at: float) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _header(out, "process_start_time_seconds", "gauge", "Unix time the relay process started.")
    out.append(f"{PREFIX}process_start_time_seconds {format_value(started_at)}")
    _header(out, "process_cpu_seconds_total", "counter", "User and system CPU time of the relay.")
    out.append(f"{PREFIX}process_cpu_seconds_total "
               f"{format_value(usage.ru_utime + usage.ru_stime)}")
    rss = _resident_bytes()
    if rss is not None:
        _header(out, "process_resident_memory_bytes", "gauge", "Resident memory of the relay.")
        out.append(f"{PREFIX}process_resident_memory_bytes {rss}")


def _resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def _with_zeros(counts: Mapping[str, int], states: Iterable[str]) -> dict[str, int]:
    """Every known state appears, zero included, so a dashboard never sees a series vanish."""
    merged = dict.fromkeys((str(s) for s in states), 0)
    merged.update({str(k): int(v) for k, v in counts.items()})
    return merged


def _copy(histogram: Histogram) -> Histogram:
    clone = Histogram(histogram.bounds)
    clone.counts = list(histogram.counts)
    clone.total = histogram.total
    clone.count = histogram.count
    return clone


def _error_code(body: bytes) -> str:
    try:
        code = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return "unknown"
    return code if isinstance(code, str) and code.isidentifier() else "unknown"


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization" and value.startswith(b"Bearer "):
            return value[len(b"Bearer "):].strip()
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
