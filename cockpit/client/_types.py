"""Shapes of the relay's JSON bodies (docs/api.md), for type checkers and readers.

They are ``TypedDict``s, not classes: the client hands on the relay's dicts
as they came, so a field the relay adds later reaches the cockpit untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from dragoon.shared.spec import SpecJSON


class Task(TypedDict, total=False):
    id: str
    name: str | None
    state: str
    drone: str | None
    target: dict[str, Any]
    spec: SpecJSON
    pilot: str
    created_at: float
    dispatched_at: float | None
    started_at: float | None
    finished_at: float | None
    expires_at: float
    lost_after: int
    exit_code: int | None
    signal: int | None
    cpu_seconds: float | None
    peak_rss: int | None
    cancel_requested: bool
    error: str | None
    notes: list[str]
    stdout_size: int
    stderr_size: int
    order_size: int  # the order stream (docs/api.md); absent from an older relay
    output_truncated: bool
    start_by: float | None  # the relay cancels it if still queued then (``start_within``)
    waiting: dict[str, Any] | None  # a queued task: why it has not started (docs/api.md)


class Drone(TypedDict, total=False):
    name: str
    state: str
    draining: bool
    labels: list[str]
    slots: int
    running: int
    fingerprint: str
    last_seen: float | None
    enrolled_at: float
    hostname: str | None
    version: str | None
    metrics: dict[str, Any] | None
    # What the drone sent at init, for the pilot to check (cockpit/client/enrollments.py).
    public_key: str
    x25519_public_key: str | None
    x25519_signature: str | None
    binding: str | None
    enrollment: str | None


class Message(TypedDict, total=False):
    """A message as the client hands it out: opened (``text``), or ``error`` saying in one
    line why it is not shown; ``index`` is its place in its task, ``size`` its sealed size."""

    id: int
    task: str
    drone: str
    index: int
    size: int
    text: str
    error: str
    created_at: float
    acked: bool


class Artifact(TypedDict, total=False):
    """An artifact, its sealed metadata opened: ``path``, ``size``, ``sha256`` are the
    drone's; ``name`` and ``stored_size`` all the relay knows; ``sealed`` why it does not
    open (then ``path`` is ``?NAME``)."""

    path: str
    size: int
    sha256: str
    uploaded_at: float
    name: str
    stored_size: int
    sealed: str


class Fetch(TypedDict, total=False):
    """A fetch as the relay shows it: no path; ``payload``/``wraps`` (the sealed path and
    the fetch key's wraps), ``meta`` (the file's sealed metadata); ``size``/``sha256`` are
    the stored, sealed file's (``RelayClient.open_fetch``)."""

    id: str
    drone: str
    state: str
    error: str | None
    size: int | None
    sha256: str | None
    order: str
    order_signature: str
    payload: str
    wraps: dict[str, str]
    meta: str | None


class JoinTokenAnswer(TypedDict):
    token: str
    expires_at: float


@dataclass(frozen=True)
class Session:
    """What a login yields: the bearer token, bound to the key that logged in."""

    token: str
    expires_at: float
    pilot: str | None
    fingerprint: str


@dataclass(frozen=True)
class StdinAnswer:
    """The relay took a task's stdin up to ``next_offset``; ``eof`` once it is closed."""

    next_offset: int
    eof: bool


@dataclass(frozen=True)
class LogChunk:
    """Plaintext of one stream's records stored from ``offset`` up to ``next_offset``.

    The offsets are the relay's (stored, sealed bytes) at record boundaries. ``eof``
    is true when the task is final and every byte of the stream has been returned:
    a follower stops there. ``cut_at``: at eof, the stream was cut by the relay's
    output cap of that many bytes (said out of band), not ended by the task.
    """

    stream: str
    data: bytes
    offset: int
    next_offset: int
    state: str | None
    eof: bool
    cut_at: int | None = None


@dataclass(frozen=True)
class TaskPage:
    tasks: list[Task]
    next: str | None


@dataclass(frozen=True)
class Event:
    """One server-sent event: ``kind`` is ``drone``, ``task`` or ``message`` (the object as
    ``data``), or ``reset`` (reload the lists); ``id`` (``<epoch>-<n>``) is where to resume."""

    kind: str
    data: Any
    id: str | None


class JobCounts(TypedDict):
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


class Job(TypedDict, total=False):
    """A job's view (docs/api.md, JOBVIEW)."""

    id: str
    name: str | None
    kind: str  # fanout | sweep
    pilot: str
    state: str  # running | succeeded | partly_failed | failed | cancelled
    created_at: float
    finished_at: float | None
    trials: int
    max_parallel: int | None
    retries: int
    retry_on: list[int]
    stop_on_failure: bool
    cancel_requested: bool
    stopped: str | None
    counts: JobCounts


@dataclass
class JobPage:
    jobs: list[Job]
    next: str | None


@dataclass(frozen=True)
class TrialSubmit:
    """One trial to seal and send: its number and spec (env already holds DRAGOON_JOB…),
    and exactly one target."""

    trial: int
    spec: SpecJSON
    drone: str | None = None
    labels: list[str] | None = None


@dataclass
class JobSubmitted:
    job: Job
    tasks: list[Task]
