"""Where the cockpit's data comes from: the `DataSource` protocol and its live implementation.

The app talks to a `DataSource`, not to `RelayClient` directly, for two
reasons: the snapshot tests feed a fixed in-memory source (same app, same
widgets, no network), and the things the app needs that the API client does
not offer as one call (a full snapshot, a cheap round-trip probe, an SSE
stream that tells the app when it broke) live here, built on the client.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dragoon.cockpit.client._errors import RelayError
from dragoon.cockpit.client._logs import cut_notice
from dragoon.cockpit.safe_text import clean

if TYPE_CHECKING:
    from dragoon.cockpit.client import RelayClient

# 401 codes that a fresh login cures (a bad signature or unknown key would not).
SESSION_CODES = frozenset({"bad_session"})
# What the cockpit says when the relay ended the session (a logout elsewhere, expiry, a new key).
SESSION_ENDED = "session ended: log in again with dragoon login"
TASKS_IN_SNAPSHOT = 500
JOBS_IN_SNAPSHOT = 100


@dataclass
class Snapshot:
    drones: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)  # unread only
    jobs: list[dict[str, Any]] = field(default_factory=list)  # JOBVIEWs, newest first


def session_expired(error: BaseException) -> bool:
    return getattr(error, "code", None) in SESSION_CODES


def name_taken(error: BaseException) -> str | None:
    """The taken drone's state when minting was refused for an existing name, else None."""
    if getattr(error, "code", None) != "name_taken":
        return None
    body = getattr(error, "body", None)
    state = body.get("state") if isinstance(body, dict) else None
    return state if isinstance(state, str) else "?"


def describe(error: BaseException) -> str:
    """One line for the pilot, never a traceback; safe text (a relay's detail is its words)."""
    if session_expired(error):
        return SESSION_ENDED
    code = getattr(error, "code", None)
    text = str(error) or type(error).__name__
    return clean(f"{code}: {text}" if code and code not in text else text)


class DataSource(Protocol):
    """Everything the cockpit reads from or asks of the relay."""

    relay_url: str
    pilot: str

    async def snapshot(self) -> Snapshot: ...

    def events(self, on_retry: Callable[[BaseException], None]) -> AsyncIterator[
        tuple[str, dict[str, Any]]]:
        """(kind, object) for each change since the last snapshot; ``("snapshot", {"drones",
        "tasks", "messages"})`` when the relay could not replay what was missed and the
        lists were read again."""
        ...

    async def ping(self) -> float: ...

    def follow_log(self, task_id: str, stream: str, offset: int) -> AsyncIterator[bytes]: ...

    async def submit(self, spec: dict[str, Any], *, drone: str | None,
                     labels: list[str] | None) -> dict[str, Any]: ...

    async def cancel(self, task_id: str) -> dict[str, Any]: ...

    async def job_tasks(self, job_id: str) -> list[dict[str, Any]]: ...

    async def ack(self, ids: list[int]) -> int: ...

    async def drain(self, drone: str, drain: bool) -> dict[str, Any]: ...

    async def enroll(self, drone: str, labels: list[str], *, replace: bool = False) -> str: ...

    async def artifacts(self, task_id: str) -> list[dict[str, Any]]: ...

    async def download_artifact(self, task_id: str, artifact: dict[str, Any],
                                dest: Path, *, force: bool = False) -> Path: ...

    async def fetch(self, drone: str, path: str, dest: Path, *, force: bool = False) -> Path: ...

    async def login(self, totp: str) -> None: ...

    async def aclose(self) -> None: ...


class LiveSource:
    """A `DataSource` over the pilot's `RelayClient`.

    `on_login` is called with the new session after an in-app login, so the
    caller can store it where `dragoon login` would.
    """

    def __init__(self, client: RelayClient, *, pilot: str = "",
                 on_login: Callable[[Any], None] | None = None) -> None:
        self.client = client
        self.relay_url = client.base_url
        self.pilot = pilot
        self.on_login = on_login
        # The id of the last event folded into what the app holds: the event stream
        # resumes after it, across reconnects and relay restarts.
        self.position: str | None = None

    async def snapshot(self) -> Snapshot:
        """The lists, and (read first) the event position they are at least as new as."""
        position = await self.client.event_position()
        drones = await self.client.drones()
        page = await self.client.tasks(limit=TASKS_IN_SNAPSHOT)
        messages = await self.client.messages(unread=True, limit=1000)
        jobs = await self._jobs()
        self.position = position
        return Snapshot(drones=[dict(d) for d in drones], tasks=[dict(t) for t in page.tasks],
                        messages=[dict(m) for m in messages], jobs=jobs)

    async def _jobs(self) -> list[dict[str, Any]]:
        """The newest jobs (`GET /v1/jobs`); a relay from before jobs (404) lists none rather
        than failing the sync."""
        try:
            page = await self.client.jobs(limit=JOBS_IN_SNAPSHOT)
        except RelayError as error:
            if error.status == 404:
                return []
            raise
        return [dict(j) for j in page.jobs]

    async def job_tasks(self, job_id: str) -> list[dict[str, Any]]:
        """Every attempt of every trial of a job, opened: the job view reads them all, the
        snapshot holds only the newest tasks."""
        return [dict(t) for t in await self.client.job_tasks(job_id)]

    async def events(self, on_retry: Callable[[BaseException], None]) -> AsyncIterator[
            tuple[str, dict[str, Any]]]:
        """Every change after the snapshot, none twice; a relay ``reset`` reads the lists again.

        A change made while the snapshot was read may come once more as an event (it is
        applied again, to the same effect); none made after the position is missed.
        """
        def hook(error: BaseException, _delay: float) -> None:
            on_retry(error)

        while True:
            stream = self.client.events(last_event_id=self.position, on_retry=hook,
                                        give_up_after=math.inf)
            async with contextlib.aclosing(stream):
                async for event in stream:
                    if event.kind == "reset":
                        break
                    self.position = event.id or self.position
                    if isinstance(event.data, dict):
                        yield event.kind, event.data
                else:
                    return
            snapshot = await self.snapshot()
            yield "snapshot", {"drones": snapshot.drones, "tasks": snapshot.tasks,
                               "messages": snapshot.messages, "jobs": snapshot.jobs}

    async def ping(self) -> float:
        """The cheapest authenticated request: proves the relay is up and the session good;
        answers the round trip in seconds."""
        start = time.monotonic()
        await self.client.messages(unread=True, limit=1)
        return time.monotonic() - start

    async def follow_log(self, task_id: str, stream: str, offset: int) -> AsyncIterator[bytes]:
        """The stream's plaintext; where the relay's cap cut the output, stderr ends with a
        line that says so (the relay cannot write one into the sealed stream)."""
        async for chunk in self.client.follow_log(task_id=task_id, stream=stream, offset=offset,
                                                  give_up_after=math.inf):
            if chunk.data:
                yield chunk.data
            if chunk.cut_at is not None and stream == "stderr":
                yield f"\n{cut_notice(chunk.cut_at)}\n".encode()

    async def submit(self, spec: dict[str, Any], *, drone: str | None,
                     labels: list[str] | None) -> dict[str, Any]:
        return dict(await self.client.submit(spec=spec, drone=drone, labels=labels))  # type: ignore[arg-type]

    async def cancel(self, task_id: str) -> dict[str, Any]:
        return dict(await self.client.cancel(task_id=task_id))

    async def ack(self, ids: list[int]) -> int:
        return await self.client.ack(ids=ids)

    async def drain(self, drone: str, drain: bool) -> dict[str, Any]:
        return dict(await self.client.drain(drone=drone, drain=drain))

    async def enroll(self, drone: str, labels: list[str], *, replace: bool = False) -> str:
        """The join token made on the pilot's side, as ``dragoon enroll`` makes it: the pilot's
        key and a binding key added to the relay's half; `dragoon drones` confirms it later."""
        from dragoon.cockpit.client.enrollments import PendingStore, pilot_token

        answer = await self.client.enroll(name=drone, labels=labels, replace=replace)
        token, pending = pilot_token(str(answer["token"]), self.relay_url,
                                     [self.client.signer.public_key.openssh()],
                                     expires_at=float(answer["expires_at"]), labels=labels)
        PendingStore().add(pending)
        return token

    async def artifacts(self, task_id: str) -> list[dict[str, Any]]:
        return [dict(a) for a in await self.client.artifacts(task_id=task_id)]

    async def download_artifact(self, task_id: str, artifact: dict[str, Any],
                                dest: Path, *, force: bool = False) -> Path:
        return await self.client.download_artifact(task_id=task_id, artifact=artifact,  # type: ignore[arg-type]
                                                   dest=dest, force=force)

    async def fetch(self, drone: str, path: str, dest: Path, *, force: bool = False) -> Path:
        return await self.client.fetch(drone=drone, path=path, dest=dest, force=force)

    async def login(self, totp: str) -> None:
        session = await self.client.login(totp=totp)
        if session.pilot:
            self.pilot = session.pilot
        if self.on_login is not None:
            self.on_login(session)

    async def aclose(self) -> None:
        await self.client.aclose()
