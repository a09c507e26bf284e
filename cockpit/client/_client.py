"""``RelayClient``: the pilot's async client for every route of docs/api.md.

The CLI and the cockpit both drive the relay through this one class. Every
request it sends is signed with shared's RE-V1 signer over the exact path and
query bytes that go on the wire (it builds the URL first and signs what httpx
will send, so percent-encoding can never make a signature disagree).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import quote, urlencode

if "httpx" not in sys.modules:
    # httpx's own command line (httpx._main) imports rich.progress and pygments when
    # they are installed, a quarter of the CLI's start-up budget; dragoon never uses
    # it, and httpx falls back to a stub when the import fails.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
import httpx
from dragoon.cockpit.client import _errors as E
from dragoon.cockpit.client._errors import RelayError
from dragoon.cockpit.client._logs import Marks, check_end, open_records
from dragoon.cockpit.client._retry import Backoff, RetryHook
from dragoon.cockpit.client._types import (
    Artifact,
    Drone,
    Event,
    Fetch,
    Job,
    JobPage,
    JobSubmitted,
    JoinTokenAnswer,
    LogChunk,
    Message,
    Session,
    SpecJSON,
    StdinAnswer,
    Task,
    TaskPage,
    TrialSubmit,
)
from dragoon.cockpit.client.sealing import TAMPERED, UNTRUSTED, PilotKeys, seal_task
from dragoon.shared import orders
from dragoon.shared.e2e import E2EError
from dragoon.shared.errors import DragoonError
from dragoon.shared.h11transport import direct_transport
from dragoon.shared.login_auth import sign_login
from dragoon.shared.request_auth import is_signed, retry_timestamp, sign_request
from dragoon.shared.signers import Signer
from dragoon.shared.spec import SpecError, TaskSpec, parse_spec, parse_task_ref
from dragoon.shared.tls import is_tls_failure, plain_http_context

if TYPE_CHECKING:
    from dragoon.shared.sealed_files import FileOpener

Query = Mapping[str, str | int | float | None]
Progress = Callable[[int, int | None], None]

LONG_POLL = 25  # seconds the relay may hold a follow request (docs/api.md)
STDIN_WAIT = 10  # seconds the relay may hold a stdin chunk while its window is full
# A fetch the drone refuses comes back in its next poll; asking again every few
# seconds bounds how long a refusal takes to reach the pilot, whichever way the
# relay wakes (or does not wake) a held status request.
FETCH_POLL = 5
AMBIGUOUS_SHOWN = 5  # ids an "ambiguous" error lists
_CHUNK = 64 * 1024


# Seconds a long-lived client (the cockpit, a script) reuses the checked recipients of a
# target: a `dragoon drone authorize` reaches its next submits that much later at most.
RECIPIENTS_TTL: Final = 10.0
# How long a submit whose answer was lost is sent again (``_send``): past a balancer's
# health checks taking a dead replica out (deploy/haproxy.cfg: fall 3, inter 2 s) and a relay's
# restart under systemd, with room to spare.
RESEND_FOR: Final = 30.0
RESEND_FIRST: Final = 0.05  # seconds before the first resend; doubling up to 1 s


def checked_spec(spec: SpecJSON) -> TaskSpec:
    """The spec by the shared rule: the relay can't judge a sealed spec, so this door must."""
    try:
        return parse_spec(dict(spec))
    except SpecError as exc:
        raise RelayError("invalid", str(exc), status=None) from None


def segment(value: str) -> str:
    """One path segment, percent-encoded the way it is signed and sent."""
    return quote(value, safe="")


def _transport_error(exc: httpx.HTTPError, url: str) -> RelayError:
    """The client's code for a request the relay never answered."""
    if isinstance(exc, httpx.TimeoutException):
        return RelayError(E.TIMEOUT, f"relay at {url} did not answer in time")
    if is_tls_failure(exc):
        reason = str(exc) or type(exc).__name__
        return RelayError(E.TLS, f"TLS failure talking to {url}: {reason}")
    if isinstance(exc, httpx.ConnectError):
        reason = str(exc) or "connection failed"
        return RelayError(E.UNREACHABLE, f"relay at {url} is unreachable ({reason})")
    return RelayError(E.PROTOCOL, f"connection to relay at {url} broke ({type(exc).__name__})")


def _answer_lost(error: RelayError, *, after_a_cut: bool) -> bool:
    """Whether a request may have reached the relay and its answer was lost: the
    connection broke or timed out, or a balancer answered for a replica that went away
    (a 502, 503 or 504 that is not the relay's own JSON). After such a cut, a relay not
    reachable yet is the same failover (a replica restarting); before one, it is the
    user's news at once, never a silent wait."""
    if error.status is None:
        return error.code in (E.PROTOCOL, E.TIMEOUT) or (after_a_cut and
                                                          error.code == E.UNREACHABLE)
    return error.status in (502, 503, 504) and not error.body


def _error_from_response(status: int, content: bytes) -> RelayError:
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        detail = body.get("detail")
        if not isinstance(detail, str):
            detail = json.dumps(detail) if detail is not None else body["error"]
        return RelayError(body["error"], detail, status=status, body=body)
    text = content[:200].decode("utf-8", "replace").strip()
    return RelayError(f"http_{status}", f"relay answered HTTP {status} {text}".strip(),
                      status=status)


class RelayClient:
    """Talks to one relay as one pilot.

    ``signer`` signs every request (and the login); ``token`` is the bearer
    session token bound to that signer's key. ``verify`` is httpx's: an
    ``ssl.SSLContext``, ``True`` for the system's CAs, or ``False``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        signer: Signer,
        token: str | None = None,
        verify: ssl.SSLContext | bool = True,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.signer = signer
        # Sealing tasks and opening them (cockpit/client/sealing.py): known_drones and the
        # pilot's encryption key, read from this pilot's config dir when first needed.
        self.keys = PilotKeys(signer.public_key, os.environ if env is None else env)
        # Tasks that do not open for this pilot, and why: their messages say so without
        # asking the relay for the task again (a task's wraps never change).
        self._unopened: dict[str, str] = {}
        self._log_marks = Marks()  # where each stream's reads may resume (_logs.py)
        self._lists_read: set[str] = set()  # drones whose pilots list open_tasks has read
        # Whom the last submits to a target were sealed to, reused for RECIPIENTS_TTL: a
        # cockpit or script submitting many tasks checks the keys once, not once a task.
        self._recipients: dict[tuple[Any, Any], tuple[float, Any]] = {}
        self.token = token
        # Told of each resend of a submit whose answer was lost (``_send``): the CLI says so.
        self.on_resend: RetryHook | None = None
        # The relay's replay floor, once it named one: requests are signed at or above it.
        self._not_before: int | None = None
        self._base = httpx.URL(self.base_url)
        self._prefix = self._base.path.rstrip("/")
        self._timeout = timeout
        if self._base.scheme == "http":
            # Plain HTTP never does TLS: skip loading the CA bundle (~45 ms per start).
            verify = plain_http_context()
        elif verify is True:
            # Once, not once per transport: httpx adds one for each proxy variable set.
            verify = httpx.create_ssl_context()
        if transport is None and isinstance(verify, ssl.SSLContext):
            # h11 straight over asyncio (shared/h11transport.py), unless a proxy is configured:
            # then None, and httpx's own transport, which handles it.
            transport = direct_transport(verify, max_connections=100, max_keepalive=20)
        self._http = httpx.AsyncClient(
            verify=verify, timeout=timeout, transport=transport, follow_redirects=False
        )

    async def __aenter__(self) -> RelayClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the one place requests are built, signed and sent --------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: Query | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        signed: bool = True,
        headers: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> httpx.Request:
        pairs = [(k, str(v)) for k, v in (query or {}).items() if v is not None]
        query_string = urlencode(pairs, quote_via=quote)
        raw_path = self._prefix + path
        url = self._base.copy_with(
            raw_path=(raw_path + ("?" + query_string if query_string else "")).encode("ascii")
        )
        body = b"" if json_body is None else json.dumps(json_body).encode("utf-8")
        all_headers = dict(headers or {})
        if json_body is not None:
            all_headers["Content-Type"] = "application/json"
        elif content is not None:
            body = content
            all_headers["Content-Type"] = "application/octet-stream"
        if signed:
            all_headers.update(self._signature(method, url, body))
        timeout = httpx.Timeout(self._timeout, read=read_timeout or self._timeout)
        return self._http.build_request(
            method, url, content=body or None, headers=all_headers, timeout=timeout
        )

    def _signature(self, method: str, url: httpx.URL, body: bytes) -> dict[str, str]:
        wire_path, _, wire_query = url.raw_path.decode("ascii").partition("?")
        timestamp = None
        if self._not_before is not None and self._not_before > int(time.time()):
            timestamp = self._not_before
        return sign_request(self.signer, method=method, path=wire_path, query=wire_query,
                            body=body, token=self.token, timestamp=timestamp)

    async def _send(self, request: httpx.Request, *, stream: bool = False,
                    resend: bool = False) -> httpx.Response:
        """Send ``request``; with ``resend`` (a request the relay answers once however often
        it comes: a submit, a job's trials, under their signed orders), a request whose
        answer was lost is sent again, signed afresh, for up to RESEND_FOR seconds."""
        if not resend:
            return await self._send_signed(request, stream=stream)
        cut_at: float | None = None
        delay = RESEND_FIRST
        while True:
            try:
                return await self._send_signed(request, stream=stream)
            except RelayError as error:
                now = time.monotonic()
                if not _answer_lost(error, after_a_cut=cut_at is not None):
                    raise
                cut_at = now if cut_at is None else cut_at
                if now - cut_at > RESEND_FOR:
                    raise
                if self.on_resend is not None:
                    self.on_resend(error, delay)
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)
            if is_signed(request.headers):  # a fresh nonce: the first may have been seen
                request.headers.update(self._signature(request.method, request.url,
                                                       request.content))

    async def _send_signed(self, request: httpx.Request, *, stream: bool) -> httpx.Response:
        try:
            return await self._send_once(request, stream=stream)
        except RelayError as error:
            # A relay that restarted refuses what was signed before its replay floor and
            # names the floor: sign once more at it (a fresh nonce too), not a user's error.
            floor = retry_timestamp(error.body or {})
            if floor is None or not is_signed(request.headers):
                raise
            self._not_before = floor
            request.headers.update(self._signature(request.method, request.url,
                                                   request.content))
            return await self._send_once(request, stream=stream)

    async def _send_once(self, request: httpx.Request, *, stream: bool) -> httpx.Response:
        try:
            response = await self._http.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.base_url) from None
        if response.is_error:
            try:
                content = await response.aread()
            except httpx.HTTPError as exc:
                raise _transport_error(exc, self.base_url) from None
            finally:
                await response.aclose()
            raise _error_from_response(response.status_code, content)
        return response

    async def _call(self, method: str, path: str, *, resend: bool = False,
                    **kwargs: Any) -> httpx.Response:
        response = await self._send(self._request(method, path, **kwargs), resend=resend)
        try:
            await response.aread()
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.base_url) from None
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._call(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise RelayError(E.PROTOCOL, f"relay sent a non-JSON answer to {method} {path}",
                           status=response.status_code) from None

    @asynccontextmanager
    async def _stream(self, request: httpx.Request) -> AsyncIterator[httpx.Response]:
        response = await self._send(request, stream=True)
        try:
            yield response
        finally:
            await response.aclose()

    # -- login ------------------------------------------------------------------------------

    async def login(self, *, totp: str) -> Session:
        """Challenge, sign the login string in the login namespace, trade it for a token.

        The new token is kept on this client for the requests that follow.
        """
        fingerprint = self.signer.fingerprint
        answer = await self._json("POST", "/v1/auth/challenge", signed=False,
                                  json_body={"fingerprint": fingerprint})
        challenge = answer["challenge"]
        signature = await asyncio.to_thread(
            sign_login, self.signer, challenge=challenge, fingerprint=fingerprint
        )
        result = await self._json(
            "POST", "/v1/auth/login", signed=False,
            json_body={"fingerprint": fingerprint, "challenge": challenge,
                       "signature": signature, "totp": totp},
        )
        self.token = result["token"]
        return Session(token=result["token"], expires_at=float(result["expires_at"]),
                       pilot=result.get("pilot"), fingerprint=fingerprint)

    async def logout(self) -> None:
        await self._json("POST", "/v1/auth/logout")

    async def publish_pilot_key(self, *, x25519_public_key: str,
                                x25519_signature: str) -> None:
        """Give the relay this pilot's X25519 key and its SSH key's certificate of it
        (cockpit/client/pilot_key.py), for the other pilots and the drones to encrypt for."""
        await self._json("PUT", "/v1/pilot/x25519",
                         json_body={"x25519_public_key": x25519_public_key,
                                    "x25519_signature": x25519_signature})

    # -- drones -----------------------------------------------------------------------------

    async def drones(self) -> list[Drone]:
        return cast(list[Drone], (await self._json("GET", "/v1/workers"))["drones"])

    async def enroll(self, *, name: str, labels: list[str] | None = None,
                     ttl: int | None = None, replace: bool = False) -> JoinTokenAnswer:
        """Mint a one-time join token for a new drone named ``name``.

        A name a drone holds is refused (``RelayError`` code ``name_taken``) unless
        ``replace``: the token then replaces that drone when it is used.
        """
        body: dict[str, Any] = {"name": name, "labels": labels or []}
        if ttl is not None:
            body["ttl"] = ttl
        if replace:
            body["replace"] = True
        return cast(JoinTokenAnswer, await self._json("POST", "/v1/workers", json_body=body))

    async def recipients(self, *, drone: str) -> dict[str, Any]:
        """What the relay holds for encrypting to ``drone``: its keys, its signed pilots list
        and those pilots' certified X25519 keys. Unchecked: cockpit/client/recipients.py
        checks it against this pilot's own roots."""
        answer = await self._json("GET", f"/v1/workers/{segment(drone)}/recipients")
        if not isinstance(answer, dict):
            raise RelayError(E.PROTOCOL, "relay sent a recipients answer that is no object")
        return answer

    async def drain(self, *, drone: str, drain: bool = True) -> Drone:
        return cast(Drone, await self._json(
            "POST", f"/v1/workers/{segment(drone)}/drain", json_body={"drain": drain}))

    # -- tasks ------------------------------------------------------------------------------

    async def submit(
        self,
        *,
        spec: SpecJSON,
        drone: str | None = None,
        labels: list[str] | None = None,
        expires_in: int | None = None,
        lost_after: int | None = None,
        start_within: int | None = None,
    ) -> Task:
        """Queue ``spec`` on the drone named ``drone``, or on any drone with all ``labels``;
        with ``start_within``, the relay cancels it if no drone took it that soon."""
        if (drone is None) == (labels is None):
            raise ValueError("submit needs exactly one of drone= or labels=")
        task_spec = checked_spec(spec)
        found = await self._recipients_for(drone, labels)
        sealed, body = self._sealed_body(task_spec, found, drone=drone, labels=labels,
                                         expires_in=expires_in, start_within=start_within)
        if lost_after is not None:
            body["lost_after"] = lost_after
        task = await self._json("POST", "/v1/tasks", json_body=body, resend=True)
        self.keys.remember(str(task.get("id")), sealed.task_key)
        return cast(Task, self.keys.open(task))

    async def _recipients_for(self, drone: str | None, labels: list[str] | None) -> Any:
        """Whom a task for this target is sealed to (cockpit/client/recipients.py), cached
        for RECIPIENTS_TTL; the signers found are believed."""
        from dragoon.cockpit.client import recipients as who

        target_key = (drone, None) if drone is not None else (None, tuple(sorted(labels or [])))
        cached = self._recipients.get(target_key)
        if cached is not None and time.monotonic() - cached[0] < RECIPIENTS_TTL:
            found = cached[1]
        else:
            found = (await who.recipients_for_drone(self, drone, env=self.keys.env)
                     if drone is not None else
                     await who.recipients_for_labels(self, labels or [], env=self.keys.env))
            self._recipients[target_key] = (time.monotonic(), found)
        if not found.drones:
            raise RelayError(UNTRUSTED, "no drone in your known_drones has the labels "
                             f"{','.join(labels or []) or '(any)'}: confirm one (`dragoon "
                             "drones`) or `dragoon drones trust NAME FINGERPRINT`")
        self.keys.believe(found.signers)
        return found

    def _sealed_body(self, task_spec: TaskSpec, found: Any, *, drone: str | None,
                     labels: list[str] | None, expires_in: int | None = None,
                     start_within: int | None = None, key: bytes | None = None,
                     wraps: Mapping[str, str] | None = None) -> tuple[Any, dict[str, Any]]:
        """One task sealed to ``found`` (under ``key``, or a fresh one) with its signed
        order: the submit body's fields. A submit and every trial and spare of a job.
        ``wraps``: ``key``'s wraps from an earlier seal under it (shared/sealed_task.py)."""
        recipients = list(found.drones)
        order_id = orders.new_order_id()
        sealed = seal_task(task_spec, order_id=order_id,
                           recipients=[*recipients, *found.pilots], key=key, wraps=wraps)
        body: dict[str, Any] = sealed.wire()
        if drone is not None:
            body["drone"] = drone
        else:
            body["labels"] = labels
        if expires_in is not None:
            body["expires_in"] = expires_in
        if start_within is not None:
            body["start_within"] = start_within
        target = orders.drone_target(drone) if drone is not None else orders.labels_target(
            labels or [])
        body.update(self._signed_order(lambda: orders.task_order(
            target=target, spec_sha256=sealed.spec_sha256,
            payload_sha256=sealed.payload_sha256, recipients=[r.fingerprint for r in recipients],
            start_within=start_within, expires_in=expires_in, order_id=order_id)))
        return sealed, body

    def _signed_order(self, make: Callable[[], orders.Order]) -> dict[str, str]:
        """The order's two body fields, signed by this pilot's key (shared/orders.py).

        A request the order's own rules refuse (a drone name or label that is no name,
        a path too long) goes without one: the relay refuses it first, in the one rule's
        words, as it did before orders."""
        try:
            order = make()
        except orders.OrderError:
            return {}
        return orders.sign_order(self.signer, order).wire()

    # -- jobs (cockpit/client/jobs.py does the work) -----------------------------------------

    async def submit_job(self, job_id: str, *, name: str | None, kind: str,
                         trials: list[TrialSubmit], max_parallel: int | None = None,
                         retries: int = 0, retry_on: Sequence[int] = (),
                         stop_on_failure: bool = False, expires_in: int | None = None,
                         lost_after: int | None = None, chunk: int = 200) -> JobSubmitted:
        from dragoon.cockpit.client import jobs

        return await jobs.submit_job(
            self, job_id, name=name, kind=kind, trials=trials, max_parallel=max_parallel,
            retries=retries, retry_on=retry_on, stop_on_failure=stop_on_failure,
            expires_in=expires_in, lost_after=lost_after, chunk=chunk)

    async def add_job_tasks(self, job_id: str, trials: list[TrialSubmit], *,
                            expires_in: int | None = None, lost_after: int | None = None,
                            chunk: int = 200) -> JobSubmitted:
        from dragoon.cockpit.client import jobs

        return await jobs.add_job_tasks(self, job_id, trials, expires_in=expires_in,
                                        lost_after=lost_after, chunk=chunk)

    async def jobs(self, *, limit: int = 100, before: str | None = None) -> JobPage:
        answer = await self._json("GET", "/v1/jobs", query={"limit": limit, "before": before})
        return JobPage(jobs=answer["jobs"], next=answer.get("next"))

    async def job(self, job_id: str) -> Job:
        return cast(Job, await self._json("GET", f"/v1/jobs/{segment(job_id)}"))

    async def job_tasks(self, job_id: str) -> list[Task]:
        """Every task of the job (all pages, newest first), opened."""
        out: list[Task] = []
        before = None
        while True:
            answer = await self._json("GET", "/v1/tasks", query={
                "job": job_id, "limit": 1000, "before": before})
            out.extend(await self.open_tasks(answer["tasks"]))
            before = answer.get("next")
            if not before:
                return out

    async def cancel_job(self, job_id: str, grace: int | None = None) -> Job:
        from dragoon.cockpit.client import jobs

        return await jobs.cancel_job(self, job_id, grace=grace)

    async def resolve_job(self, ref: str) -> str:
        """The whole id of the one job ``ref`` names (an id or a unique prefix)."""
        from dragoon.shared.jobs import parse_job_ref

        text, whole = parse_job_ref(ref)
        if whole:
            return text
        found: list[str] = []
        before = None
        while True:  # jobs are few next to tasks: the listing is read, no prefix query
            page = await self.jobs(limit=1000, before=before)
            found.extend(j["id"] for j in page.jobs if j["id"].startswith(text))
            before = page.next
            if not before:
                break
        if not found:
            raise RelayError(E.NOT_FOUND, f"no job matches {text}", status=404)
        if len(found) > 1:
            shown = ", ".join(found[:AMBIGUOUS_SHOWN]) + (
                ", …" if len(found) > AMBIGUOUS_SHOWN else "")
            raise RelayError(E.AMBIGUOUS, f"ambiguous: {text} matches {shown}; "
                                          "type more of the id")
        return found[0]

    async def tasks(self, *, drone: str | None = None, state: str | None = None,
                    limit: int = 100, before: str | None = None,
                    id_prefix: str | None = None) -> TaskPage:
        answer = await self._json("GET", "/v1/tasks", query={
            "drone": drone, "state": state, "limit": limit, "before": before,
            "id_prefix": id_prefix})
        return TaskPage(tasks=await self.open_tasks(answer["tasks"]), next=answer.get("next"))

    async def open_tasks(self, tasks: list[Any]) -> list[Any]:
        """The tasks opened (cockpit/client/sealing.py); a task signed by a pilot this pilot
        does not know yet sends it to the drone's checked pilots list first, once a drone."""
        opened = [self.keys.open(t) for t in tasks]
        unknown = {name for t in opened if t.get("sealed") and self.keys.unknown_signer(t)
                   for name in self.keys.drones_of(t)} - self._lists_read
        if not unknown:
            return opened
        from dragoon.cockpit.client import recipients as who

        for name in sorted(unknown):
            self._lists_read.add(name)
            try:
                found = await who.recipients_for_drone(self, name, env=self.keys.env)
            except (RelayError, who.TrustMismatch, DragoonError):
                continue  # left sealed, with the reason it has
            self.keys.believe(found.signers)
        return [self.keys.open(t) if t.get("sealed") else t for t in opened]

    async def resolve_task(self, ref: str) -> str:
        """The whole id of the one task ``ref`` names: an id, or a unique prefix of one.

        The one resolver every verb that takes a TASK calls. ``ref`` is read by
        shared/spec.py's ``parse_task_ref`` (``t-4jg`` or ``4jg``; a ``SpecError``
        otherwise). A whole id is returned as it is, with no request: whether it
        exists is the next request's answer. A prefix is looked up on the relay
        (``GET /v1/tasks?id_prefix=``); none matching is ``RelayError``
        ``not_found``, several ``ambiguous``, listing the first few.
        """
        parsed = parse_task_ref(ref)
        if parsed.exact:
            return parsed.text
        page = await self.tasks(id_prefix=parsed.text, limit=AMBIGUOUS_SHOWN + 1)
        ids = [task["id"] for task in page.tasks]
        if not ids:
            raise RelayError(E.NOT_FOUND, f"no task matches {parsed.text}", status=404)
        if len(ids) > 1:
            shown = ", ".join(ids[:AMBIGUOUS_SHOWN]) + (", …" if len(ids) > AMBIGUOUS_SHOWN
                                                        else "")
            raise RelayError(E.AMBIGUOUS, f"ambiguous: {parsed.text} matches {shown}; "
                                          "type more of the id")
        return ids[0]

    async def task(self, *, task_id: str) -> Task:
        task = await self._json("GET", f"/v1/tasks/{segment(task_id)}")
        return cast(Task, (await self.open_tasks([task]))[0])

    async def cancel(self, *, task_id: str, grace: int | None = None) -> Task:
        """Cancel the task, with a signed cancel order naming it and its task order.

        The task's view says which order it runs under and where it went; a relay that
        lies there gets an order the drone refuses (it names the task as well), never one
        that cancels another task.
        """
        body: dict[str, Any] = {} if grace is None else {"grace": grace}
        task = await self.task(task_id=task_id)
        order_id = task.get("order_id")
        if isinstance(order_id, str) and order_id:
            target = (orders.drone_target(task["drone"]) if task.get("drone")
                      else dict(task.get("target") or {}))
            body.update(self._signed_order(lambda: orders.cancel_order(
                target=target, task=task_id, task_order_id=order_id, grace=grace)))
        return cast(Task, await self._json(
            "POST", f"/v1/tasks/{segment(task_id)}/cancel", json_body=body))

    # -- logs -------------------------------------------------------------------------------

    async def read_log(self, *, task_id: str, stream: str = "stdout", offset: int = 0,
                       limit: int | None = None, wait: int | None = None) -> LogChunk:
        """One read of ``stream`` from ``offset``, opened (cockpit/client/_logs.py); with
        ``wait`` the relay holds it until news.

        ``offset`` is 0 or a ``next_offset`` this client handed out (a record boundary);
        ``data`` is the plaintext of the whole records read. A record the relay has only
        part of yet is read on until it is whole (or the stream ends). ``E2EError`` when
        the stream does not hold (cut, reordered, forged): nothing of it past that point.
        """
        reader = self._log_marks.reader(await self._task_key(task_id), task_id=task_id,
                                        stream=stream, offset=offset)
        at = offset
        parts: list[bytes] = []
        pending = b""  # a record begun, not whole yet
        while True:
            response = await self._call(
                "GET", f"/v1/tasks/{segment(task_id)}/log",
                query={"stream": stream, "offset": at, "limit": limit, "wait": wait},
                read_timeout=(wait or 0) + self._timeout,
            )
            h = response.headers
            data = response.content
            at = int(h.get("X-Dragoon-Next-Offset", at + len(data)))
            opened, pending, error = open_records(reader, pending + data)
            parts.append(opened)
            eof = h.get("X-Dragoon-Eof") == "1"
            cut = h.get("X-Dragoon-Truncated")
            cut_at = int(cut) if cut and cut.isdigit() else None
            if error is not None or opened or eof or not data or not pending:
                break  # else read on from where the record's bytes end so far
        plaintext = b"".join(parts)
        if error is not None:
            if not plaintext:
                raise error
            # What opened before the bad record is handed out; the next read raises.
            self._log_marks.remember(task_id, stream, reader, error)
            eof = False
        elif eof:
            check_end(reader, partial=len(pending), cut_at=cut_at,
                      state=h.get("X-Dragoon-Task-State"))
            self._log_marks.remember(task_id, stream, reader)
        else:
            self._log_marks.remember(task_id, stream, reader)
        return LogChunk(
            stream=stream,
            data=plaintext,
            offset=offset,
            next_offset=reader.consumed,
            state=h.get("X-Dragoon-Task-State"),
            eof=eof,
            cut_at=cut_at if eof and not reader.finished else None,
        )

    async def follow_log(
        self,
        *,
        task_id: str,
        stream: str = "stdout",
        offset: int = 0,
        wait: int = LONG_POLL,
        on_retry: RetryHook | None = None,
        give_up_after: float = 300.0,
    ) -> AsyncIterator[LogChunk]:
        """Yield ``stream``'s bytes as they come, until the task is over and all is read.

        Each read resumes from the previous answer's next offset (a record boundary),
        and a read whose body did not arrive whole is simply asked again, so a network
        drop or a relay restart costs neither a gap nor a repeat. The last chunk
        yielded has ``eof`` set (its data may be empty; ``cut_at`` if the relay's cap
        cut the output). A stream that does not open raises ``E2EError``, not retried.
        """
        backoff = Backoff(on_retry=on_retry, give_up_after=give_up_after)
        while True:
            try:
                chunk = await self.read_log(task_id=task_id, stream=stream, offset=offset,
                                            wait=wait)
            except RelayError as exc:
                await backoff.wait(exc)
                continue
            backoff.reset()
            offset = chunk.next_offset
            if chunk.data or chunk.eof:
                yield chunk
            if chunk.eof:
                return

    # -- stdin ------------------------------------------------------------------------------

    async def send_stdin(self, *, task_id: str, offset: int, data: bytes, eof: bool = False,
                         wait: int = STDIN_WAIT) -> StdinAnswer:
        """Append ``data`` to the task's stdin at ``offset`` (``eof``: and close it after).

        Signed as a streamed upload (its hash in the query), so the relay can
        hold it while its window is full: up to ``wait`` seconds, then
        ``RelayError`` ``window_full`` (send it again). ``offset_gap`` carries
        the relay's ``expected`` offset; a finished task answers ``task_finished``.
        """
        digest = hashlib.sha256(data).hexdigest()
        query: dict[str, str | int | float | None] = {"offset": offset, "sha256": digest}
        if eof:
            query["eof"] = "true"
        query["wait"] = wait
        answer = await self._json("POST", f"/v1/tasks/{segment(task_id)}/stdin", query=query,
                                  content=data, read_timeout=wait + self._timeout)
        return StdinAnswer(next_offset=int(answer["next_offset"]), eof=bool(answer["eof"]))

    # -- artifacts and fetches --------------------------------------------------------------

    async def _task_key(self, task_id: str) -> bytes:
        """The task's key, for its output, artifacts, messages and stdin: remembered from its
        submit or its last view, else from one read of the task (which opens it). A task
        that stays sealed to this pilot is remembered too, so its many messages do not each
        ask the relay again (a task's wraps never change): RelayError ``tampered``."""
        key = self.keys.task_key(task_id)
        if key is not None:
            return key
        why = self._unopened.get(task_id)
        if why is None:
            task = await self.task(task_id=task_id)
            key = self.keys.task_key(task_id)
            if key is not None:
                return key
            why = self._unopened[task_id] = (
                f"its task does not open: {task.get('sealed') or 'no key for this pilot'}")
        raise RelayError(TAMPERED, f"task {task_id}: {why}")

    async def artifacts(self, *, task_id: str) -> list[Artifact]:
        """The task's artifacts, their sealed metadata opened (shared/sealed_files.py): the
        relay knows each by an opaque name (``name``) and its stored size; ``path``,
        ``size`` and ``sha256`` are the drone's, sealed under the task key. One whose
        metadata does not open is listed with ``sealed`` saying why, and no path."""
        from dragoon.shared.sealed_files import FileStream, open_meta

        answer = await self._json("GET", f"/v1/tasks/{segment(task_id)}/artifact")
        rows = answer["artifacts"]
        key = await self._task_key(task_id) if rows else b""
        found: list[Artifact] = []
        for row in rows:
            name = str(row.get("path"))
            stored = {"name": name, "stored_size": row.get("size"),
                      "uploaded_at": row.get("uploaded_at")}
            try:
                meta = open_meta(FileStream(key, task_id, "artifact", name), row.get("meta"))
                if not isinstance(meta.get("path"), str) or not meta["path"]:
                    raise E2EError("the artifact's metadata has no path")
            except E2EError as exc:
                found.append(cast(Artifact, {**stored, "path": f"?{name}",
                                             "sealed": exc.detail}))
                continue
            found.append(cast(Artifact, {**stored, "path": meta["path"], "size": meta["size"],
                                         "sha256": meta["sha256"]}))
        return sorted(found, key=lambda a: a["path"])

    async def download_artifact(self, *, task_id: str, artifact: Artifact, dest: Path,
                                force: bool = False, on_progress: Progress | None = None) -> Path:
        """Save one artifact at ``dest``: its records opened under the task key, the
        plaintext checked against the SHA-256 of its sealed metadata."""
        from dragoon.shared.sealed_files import FileOpener, FileStream

        if artifact.get("sealed") or "name" not in artifact:
            raise RelayError(TAMPERED, f"artifact {artifact.get('path')} does not open: "
                                       f"{artifact.get('sealed') or 'not listed'}")
        stream = FileStream(await self._task_key(task_id), task_id, "artifact", artifact["name"])
        return await self._download(
            f"/v1/tasks/{segment(task_id)}/artifact", {"path": artifact["name"]}, dest=dest,
            opener=FileOpener(stream, size=artifact["size"], sha256=artifact["sha256"]),
            force=force, on_progress=on_progress,
        )

    async def request_fetch(self, *, drone: str, path: str) -> Fetch:
        """Ask the drone for a file: the path sealed under a fresh fetch key, wrapped to the
        drone (from known_drones) and to this pilot, with a signed fetch order naming the
        drone and the sealed payload's hash (shared/sealed_files.py ``seal_fetch``)."""
        from dragoon.cockpit.client import recipients as who
        from dragoon.shared.sealed_files import seal_fetch

        # The drone's key as known_drones pins it (the same checks as a submit's), and this
        # pilot's own: a fetched file is for the pilot who asked, not every reader of tasks.
        found = await who.recipients_for_drone(self, drone, env=self.keys.env)
        target, me = found.drones[0], found.pilots[0]
        order_id = orders.new_order_id()
        try:
            sealed = seal_fetch(path, order_id=order_id,
                                recipients=[(target.fingerprint, target.x25519),
                                            (me.fingerprint, me.x25519)])
        except ValueError as exc:
            raise RelayError("invalid", str(exc), status=None) from None
        body: dict[str, Any] = {"payload": sealed.payload, "wraps": sealed.wraps}
        body.update(self._signed_order(lambda: orders.fetch_order(
            drone=drone, payload_sha256=sealed.payload_sha256, order_id=order_id)))
        return cast(Fetch, await self._json(
            "POST", f"/v1/workers/{segment(drone)}/fetch", json_body=body))

    def open_fetch(self, fetch: Mapping[str, Any]) -> tuple[str, Any]:
        """The path and file stream of a fetch as the relay shows it, opened with this
        pilot's own wrap of its key: its order signed by a key this pilot believes, its
        payload the one the order signs. RelayError ``tampered`` otherwise."""
        from dragoon.shared.sealed_files import fetch_stream, open_fetch

        try:
            order, signer = orders.read_signed(fetch.get("order"), fetch.get("order_signature"))
            if signer.blob not in self.keys.trusted_signers:
                raise E2EError(f"its order is signed by {signer.fingerprint}, not by you")
            wraps = fetch.get("wraps")
            path, key = open_fetch(
                order, payload=fetch.get("payload"),
                wrap=wraps.get(self.keys.own.fingerprint) if isinstance(wraps, dict) else None,
                x25519_secret=self.keys.x25519.secret)
        except (E2EError, orders.OrderError) as exc:
            raise RelayError(TAMPERED, f"fetch {fetch.get('id')} does not open: "
                                       f"{exc.detail}") from None
        return path, fetch_stream(key, order.id)

    async def fetch_status(self, *, fetch_id: str, wait: int | None = None) -> Fetch:
        return cast(Fetch, await self._json(
            "GET", f"/v1/fetches/{segment(fetch_id)}", query={"wait": wait},
            read_timeout=(wait or 0) + self._timeout))

    async def fetch(self, *, drone: str, path: str, dest: Path, force: bool = False,
                    on_progress: Progress | None = None,
                    give_up_after: float = 300.0,
                    on_pending: Callable[[Fetch], Awaitable[None]] | None = None) -> Path:
        """Ask ``drone`` for the file at ``path``, wait until it reached the relay, save it.

        ``on_pending`` is awaited before each wait while the drone has not sent it
        (the CLI says there why it waits: the drone is offline)."""
        if dest.exists() and not force:
            raise _exists(dest)
        fetch = await self.request_fetch(drone=drone, path=path)
        backoff = Backoff(give_up_after=give_up_after)
        while fetch.get("state") == "pending":
            if on_pending is not None:
                await on_pending(fetch)
            try:
                fetch = await self.fetch_status(fetch_id=fetch["id"], wait=FETCH_POLL)
            except RelayError as exc:
                await backoff.wait(exc)
        return await self.download_fetch(fetch=fetch, drone=drone, path=path, dest=dest,
                                         force=force, on_progress=on_progress)

    async def download_fetch(self, *, fetch: Fetch, drone: str, path: str, dest: Path,
                             force: bool = False, on_progress: Progress | None = None) -> Path:
        """Save a settled fetch of ``path`` at ``dest``: opened with this pilot's wrap, its
        refusal opened and raised (``fetch_failed``), or its file opened record by record
        and checked against its sealed metadata."""
        from dragoon.shared.sealed_files import FileOpener, open_error, open_meta

        opened_path, stream = self.open_fetch(fetch)
        if opened_path != path:
            raise RelayError(TAMPERED, f"fetch {fetch.get('id')} is of another path than "
                                       "the one asked")
        try:
            if fetch.get("state") != "ready":
                error = open_error(stream.key, stream.task_id, fetch.get("error"))
                raise RelayError(E.FETCH_FAILED, f"{drone} could not send {path}: {error}")
            meta = open_meta(stream, fetch.get("meta"))
        except E2EError as exc:
            raise RelayError(TAMPERED, f"fetch {fetch.get('id')}: {exc.detail}") from None
        return await self._download(
            f"/v1/fetches/{segment(fetch['id'])}/content", {}, dest=dest,
            opener=FileOpener(stream, size=meta["size"], sha256=meta["sha256"]), force=force,
            on_progress=on_progress,
        )

    async def _download(self, path: str, query: Query, *, dest: Path, opener: FileOpener,
                        force: bool, on_progress: Progress | None) -> Path:
        """Stream the sealed file, opening its records as they come, into a hidden part
        file beside ``dest``; resume with Range after a drop (from the record boundary
        where the plaintext stopped, ``e2e.blob_span``); check it is whole and its
        SHA-256 the sealed metadata's, and only then move it into place. Any record that
        does not open, or a file cut before its final record, fails it as a SHA-256
        mismatch does: the part file goes, ``dest`` is untouched."""

        if dest.exists() and not force:
            raise _exists(dest)
        part = dest.with_name(f".{dest.name}.part")
        backoff = Backoff()
        try:
            with open(part, "wb") as out:
                while not opener.finished:
                    start = opener.resume()
                    out.seek(opener.done)
                    out.truncate()
                    headers = {"Range": f"bytes={start}-"} if start else {}
                    request = self._request("GET", path, query=query, headers=headers)
                    try:
                        async with self._stream(request) as response:
                            if start and response.status_code != 206:
                                opener.restart()
                                out.seek(0)
                                out.truncate()
                            async for data in response.aiter_bytes(_CHUNK):
                                out.write(opener.feed(data))
                                if on_progress is not None:
                                    on_progress(opener.done, opener.size)
                        break
                    except httpx.HTTPError as exc:
                        await backoff.wait(_transport_error(exc, self.base_url))
                    except RelayError as exc:
                        await backoff.wait(exc)
                opener.check()
            if dest.exists() and not force:
                raise _exists(dest)
            os.replace(part, dest)
        except E2EError as exc:
            raise RelayError(E.SHA256_MISMATCH, f"download of {dest.name} is corrupt or "
                                                f"altered: {exc.detail}") from None
        finally:
            part.unlink(missing_ok=True)
        return dest

    # -- inbox ------------------------------------------------------------------------------

    async def messages(self, *, after: int | None = None, unread: bool = False,
                       limit: int = 100, wait: int | None = None, job: str | None = None,
                       task: str | None = None) -> list[Message]:
        """The inbox, each message opened under its task's key (``open_message``);
        ``job`` or ``task`` (whole ids) keeps only that job's or that task's messages."""
        listed = await self._message_page(after=after, unread=unread, limit=limit,
                                          wait=wait, job=job, task=task)
        return [await self.open_message(m) for m in listed]

    async def _message_page(self, *, after: int | None, unread: bool, limit: int,
                            wait: int | None, job: str | None,
                            task: str | None) -> list[dict[str, Any]]:
        answer = await self._json(
            "GET", "/v1/messages",
            query={"after": after, "unread": 1 if unread else None, "limit": limit,
                   "wait": wait, "job": job, "task": task},
            read_timeout=(wait or 0) + self._timeout,
        )
        return list(answer["messages"])

    async def last_job_messages(self, job_id: str) -> dict[str, Message]:
        """Each task of the job's newest message (highest index), opened, by task id.

        The relay keeps only the job's messages (``?job=``); they are paged through once,
        and only each task's newest is opened, so a chatty trial costs one open."""
        latest: dict[str, dict[str, Any]] = {}
        after = 0
        while True:
            batch = await self._message_page(after=after, unread=False, limit=1000,
                                             wait=None, job=job_id, task=None)
            for message in batch:
                task_id = str(message.get("task"))
                seen = latest.get(task_id)
                if seen is None or int(message.get("index") or 0) >= int(seen.get("index")
                                                                         or 0):
                    latest[task_id] = message
            if len(batch) < 1000:
                break
            after = int(batch[-1]["id"])
        return {task_id: await self.open_message(m) for task_id, m in latest.items()}

    async def open_message(self, message: Mapping[str, Any]) -> Message:
        """The message as the relay lists it, its ``sealed`` record opened into ``text``
        (shared/sealed_message.py); one that does not open, or whose task this pilot cannot
        open, has ``error`` (one line) and no ``text``: never a relay's words as a task's."""
        from dragoon.shared.sealed_message import open_message

        opened: dict[str, Any] = {k: v for k, v in message.items() if k != "sealed"}
        task_id, index = message.get("task"), message.get("index")
        if not isinstance(task_id, str) or not isinstance(index, int) or isinstance(
                index, bool):
            opened["error"] = "the relay listed a message without its task or index"
            return cast(Message, opened)
        try:
            key = await self._task_key(task_id)
        except RelayError as exc:
            opened["error"] = (self._unopened.get(task_id) if exc.code == TAMPERED
                               else f"its task cannot be read: {exc.detail}")
            return cast(Message, opened)
        try:
            opened["text"] = open_message(key, task_id=task_id, index=index,
                                          sealed=message.get("sealed"))
        except E2EError as exc:
            opened["error"] = exc.detail
        return cast(Message, opened)

    async def ack(self, *, ids: list[int]) -> int:
        answer = await self._json("POST", "/v1/messages/ack", json_body={"ids": ids})
        return int(answer.get("acked", 0))

    async def follow_messages(self, *, after: int | None = None, unread: bool = True,
                              on_retry: RetryHook | None = None,
                              give_up_after: float = 300.0) -> AsyncIterator[Message]:
        """Yield messages as tasks send them, forever; resumes after the last id seen."""
        backoff = Backoff(on_retry=on_retry, give_up_after=give_up_after)
        while True:
            try:
                batch = await self.messages(after=after, unread=unread, wait=LONG_POLL)
            except RelayError as exc:
                await backoff.wait(exc)
                continue
            backoff.reset()
            for message in batch:
                after = max(after or 0, int(message["id"]))
                yield message

    # -- live events ------------------------------------------------------------------------

    async def events(self, *, last_event_id: str | None = None,
                     on_retry: RetryHook | None = None,
                     give_up_after: float = 300.0) -> AsyncIterator[Event]:
        """Server-sent events (drone, task, message changes), after ``last_event_id`` if given.

        Every reconnect (a dropped network, a relay restart: refused for a while,
        then back) sends the id of the last event seen as ``Last-Event-ID``, and the
        relay replays exactly what came after it, so nothing is missed or repeated.
        When the relay cannot (the id is older than it keeps, or from another relay),
        the next event is ``reset``: reload the lists; the stream goes on from there.
        ``event.id`` is always the id to resume from.
        A stream the relay refuses with 401 ``bad_session`` (the session was
        revoked by a logout elsewhere, expired, or the pilot's key changed) ends
        the iteration at once with that ``RelayError``: no new connection could
        fix it, only a new login (``session_ended`` on the error says so).
        """
        backoff = Backoff(on_retry=on_retry, give_up_after=give_up_after)
        last_id = last_event_id
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            request = self._request("GET", "/v1/events", headers=headers, read_timeout=120.0)
            try:
                async with self._stream(request) as response:
                    backoff.reset()
                    async for position, event in _parse_sse(response.aiter_lines()):
                        last_id = position or last_id
                        if event is not None and event.kind == "task":
                            event = Event(event.kind, self.keys.open(event.data), event.id)
                        elif event is not None and event.kind == "message" and isinstance(
                                event.data, dict):
                            event = Event(event.kind, dict(await self.open_message(
                                event.data)), event.id)
                        if event is not None:
                            yield event
            except httpx.HTTPError as exc:
                await backoff.wait(_transport_error(exc, self.base_url))
            except RelayError as exc:
                if exc.session_ended:
                    raise
                await backoff.wait(exc)
            else:
                # the relay ends a stream whose session ended; the reconnect tells which it was
                await backoff.wait(RelayError(E.PROTOCOL, "event stream closed"))

    async def event_position(self) -> str | None:
        """The id of the relay's newest event: ``events(last_event_id=…)`` from it misses
        nothing that happens after this call. Read before listing, it makes a snapshot
        plus its events whole. None from a relay that does not say (an older one)."""
        request = self._request("GET", "/v1/events", headers={"Accept": "text/event-stream"})
        try:
            async with self._stream(request) as response:
                blocks = _parse_sse(response.aiter_lines(), comments=True)
                async with aclosing(blocks):
                    async for position, _event in blocks:
                        return position  # a fresh stream's first block: its position, or none
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.base_url) from None
        return None


async def _parse_sse(lines: AsyncIterator[str], *, comments: bool = False) -> AsyncIterator[
        tuple[str | None, Event | None]]:
    """Each block as (the last event id so far, its event or None for an id or comment alone).

    As in the SSE spec, a block with an ``id`` and no data moves the last event id
    without being an event (the relay tells a new stream its position so); with
    ``comments``, blocks of comments alone are reported too.
    """
    kind, data, event_id, fields = "message", [], None, 0
    async for line in lines:
        if not line:
            if data:
                text = "\n".join(data)
                try:
                    payload: Any = json.loads(text)
                except ValueError:
                    payload = text
                yield event_id, Event(kind=kind, data=payload, id=event_id)
            elif fields or comments:
                yield event_id, None
            kind, data, fields = "message", [], 0
            continue
        if line.startswith(":"):
            continue
        fields += 1
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            kind = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value


def _exists(dest: Path) -> RelayError:
    return RelayError(E.FILE_EXISTS, f"{dest} already exists (use --force to overwrite it)")
