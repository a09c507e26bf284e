"""The drone's link to its relay: every request signed RE-V1, every failure a value to retry.

``RelayLink`` sends the requests; shared/request_auth.py makes their headers
(over the body, or over the hash of a body streamed from disk). Transport
errors and 5xx answers raise ``RelayUnavailable``: the callers back off
(``JitteredBackoff``: 1 s doubling to 60 s, with jitter) and try again,
forever; a drone never exits because the relay is away. Other answers are
returned for the caller to read, except ``drone_replaced``: it raises
``DroneReplaced`` (a ``RelayUnavailable``, so callers only wait) and sets
``RelayLink.replaced`` for the daemon to stop on. ``Reachability`` turns the
many request outcomes into one log line per change of the relay's reachability;
a TLS failure (the relay's certificate does not chain to the trusted CA, a
handshake that fails) is named as such in that line, at error level, since
waiting alone will not mend it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from dragoon.shared.constants import ERR_DRONE_REPLACED
from dragoon.shared.h11transport import direct_transport
from dragoon.shared.request_auth import retry_timestamp, sign_request, sign_streamed_request
from dragoon.shared.signers import Signer
from dragoon.shared.tls import is_tls_failure, plain_http_context

log = logging.getLogger("dragoon.drone")

BACKOFF_START: Final = 1.0
BACKOFF_CAP: Final = 60.0
# `dragoon drone join` (and `drone run` given an unusable CA file) exit with the pilot's
# TLS code (cockpit/cli/exit_codes.py): scripts read 6 the same way from either side.
EXIT_TLS: Final = 6
TLS_HINT: Final = ("does the relay's certificate chain to the CA in drone.toml's ca_cert "
                   "(or --ca-cert FILE)?")


class RelayUnavailable(Exception):
    """The relay could not be reached, or answered 5xx: worth retrying later."""


class DroneReplaced(RelayUnavailable):
    """The relay retired this drone's key: a newer enrollment took its name.

    A ``RelayUnavailable`` so that every caller just backs off quietly; the
    daemon, woken by ``RelayLink.replaced``, stops the drone. Retrying would
    never help: the key is not coming back.
    """

    def __init__(self, drone: str | None, replaced_at: float | None, detail: str) -> None:
        super().__init__(detail)
        self.drone = drone
        self.replaced_at = replaced_at
        self.detail = detail

    @classmethod
    def from_response(cls, response: httpx.Response) -> DroneReplaced:
        try:
            data = response.json()
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        drone, at = data.get("drone"), data.get("replaced_at")
        return cls(drone if isinstance(drone, str) else None,
                   float(at) if isinstance(at, int | float) else None,
                   str(data.get("detail") or ERR_DRONE_REPLACED))


class JitteredBackoff:
    """Delays of 1 s doubling to a 60 s cap, jittered so a fleet does not return in lockstep.

    Never gives up: a drone waits for its relay forever (unlike the pilot's
    follower back-off in cockpit/client/_retry.py, which ends in an error).
    """

    def __init__(self, start: float = BACKOFF_START, cap: float = BACKOFF_CAP) -> None:
        self.start = start
        self.cap = cap
        self._next = start

    def next_delay(self) -> float:
        delay = min(self._next, self.cap)
        self._next = min(self._next * 2, self.cap)
        return delay * random.uniform(0.75, 1.25)  # noqa: S311 - jitter, not a secret

    def reset(self) -> None:
        self._next = self.start


T = TypeVar("T")


async def until_reachable(action: Callable[[], Awaitable[T]]) -> T:
    """``action()`` again and again, with backoff, until the relay is reachable for it."""
    backoff = JitteredBackoff()
    while True:
        try:
            return await action()
        except RelayUnavailable:
            await asyncio.sleep(backoff.next_delay())


class Reachability:
    """The relay's reachability as the drone sees it: logs only when it changes."""

    def __init__(self) -> None:
        self.up: bool | None = None
        self.tls_failing = False

    def ok(self) -> None:
        if self.up is not True:
            log.info("relay reachable")
        self.up = True
        self.tls_failing = False

    def failed(self, reason: str, *, tls: bool = False) -> None:
        # A relay that was away and comes back with a certificate the drone does not trust
        # is a change worth its own line: the first one blamed the network.
        if self.up is not False or self.tls_failing != tls:
            if tls:
                log.error("relay unreachable: TLS failure (%s); %s retrying with backoff",
                          reason, TLS_HINT)
            else:
                log.warning("relay unreachable (%s); retrying with backoff", reason)
        self.up = False
        self.tls_failing = tls


def query_string(params: Mapping[str, str | int]) -> str:
    """The query exactly as it goes on the wire (and into the signature)."""
    return "&".join(f"{quote(k, safe='')}={quote(str(v), safe='')}" for k, v in params.items())


def error_code(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return f"http_{response.status_code}"
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return data["error"]
    return f"http_{response.status_code}"


class RelayLink:
    """Signed requests to one relay with one drone key."""

    def __init__(self, base_url: str, signer: Signer, *,
                 link: Reachability | None = None,
                 verify: ssl.SSLContext | bool = True) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        self._base = base_url.rstrip("/")
        self._prefix = parts.path
        self._signer = signer
        self.link = link or Reachability()
        # Set, with ``replaced_by`` filled in, on the first ``drone_replaced`` answer.
        self.replaced = asyncio.Event()
        self.replaced_by: DroneReplaced | None = None
        if parts.scheme == "http":
            verify = plain_http_context()
        elif verify is True:
            # Built once here (httpx's rule: SSL_CERT_FILE, SSL_CERT_DIR, else certifi)
            # rather than once per transport: each proxy variable adds a transport.
            verify = httpx.create_ssl_context()
        # The relay's replay floor, once it named one: requests are signed at or above it.
        self._not_before: int | None = None
        # h11 straight over asyncio (shared/h11transport.py: ~0.8 ms a round trip, not ~1.6),
        # unless a proxy is configured: then httpx's own transport, which handles it.
        transport = (direct_transport(verify, max_connections=32, max_keepalive=8)
                     if isinstance(verify, ssl.SSLContext) else None)
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, connect=10.0),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
            headers={"User-Agent": "dragoon-drone"},
            verify=verify,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _signed(self, method: str, path: str, query: str, body: bytes,
                stream_sha256: str | None) -> dict[str, str]:
        timestamp = None
        if self._not_before is not None and self._not_before > int(time.time()):
            timestamp = self._not_before
        if stream_sha256 is None:
            return sign_request(self._signer, method=method, path=path, query=query, body=body,
                                timestamp=timestamp)
        return sign_streamed_request(self._signer, method=method, path=path, query=query,
                                     body_sha256=stream_sha256, timestamp=timestamp)

    async def request(
        self,
        method: str,
        route: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: bytes = b"",
        json_body: Any = None,
        stream: AsyncIterator[bytes] | None = None,
        stream_sha256: str | None = None,
        stream_size: int | None = None,
        read_timeout: float = 30.0,
        signed: bool = True,
    ) -> httpx.Response:
        """One request; RelayUnavailable on a network error or a 5xx answer.

        A ``stream`` is signed over ``stream_sha256``, its hash computed ahead.
        """
        query = query_string(params or {})
        path = self._prefix + route
        headers: dict[str, str] = {}
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode("utf-8")
            headers["Content-Type"] = "application/json"
        elif stream is not None or body:
            headers["Content-Type"] = "application/octet-stream"
        if stream is not None and stream_size is not None:
            # A known length instead of chunked encoding: every proxy on the way accepts it.
            headers["Content-Length"] = str(stream_size)
        if signed and stream is not None and stream_sha256 is None:
            raise ValueError("a signed stream needs its stream_sha256")
        url = self._base + route + (f"?{query}" if query else "")
        timeout = httpx.Timeout(read_timeout, connect=10.0)
        for attempt in range(2):
            if signed:
                headers.update(self._signed(method, path, query, body, stream_sha256))
            response = await self._send(method, url, stream if stream is not None else body,
                                        headers, timeout)
            floor = self._floor_refusal(response) if signed else None
            if floor is None:
                break
            # The relay restarted and refuses what was signed before its replay floor: sign
            # again at the floor. A stream is half read already: its caller retries it.
            self._not_before = floor
            if stream is not None or attempt:
                raise RelayUnavailable("the relay restarted: signed again at its replay floor")
        if response.status_code == 401 and error_code(response) == ERR_DRONE_REPLACED:
            replaced = DroneReplaced.from_response(response)
            if self.replaced_by is None:
                self.replaced_by = replaced
                self.replaced.set()
            raise replaced
        return response

    @staticmethod
    def _floor_refusal(response: httpx.Response) -> int | None:
        if response.status_code != 401:
            return None
        try:
            data = response.json()
        except ValueError:
            return None
        return retry_timestamp(data) if isinstance(data, dict) else None

    async def _send(self, method: str, url: str, content: Any, headers: dict[str, str],
                    timeout: httpx.Timeout) -> httpx.Response:
        try:
            response = await self._http.request(method, url, content=content, headers=headers,
                                                timeout=timeout)
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
            self.link.failed(reason, tls=is_tls_failure(exc))
            raise RelayUnavailable(reason) from exc
        if response.status_code >= 500:
            reason = f"HTTP {response.status_code} {error_code(response)}"
            self.link.failed(reason)
            raise RelayUnavailable(reason)
        self.link.ok()
        return response
