"""Request bodies of docs/api.md as pydantic models; the OpenAPI document is built from them.

Models forbid unknown fields only where a typo would silently change meaning
(the task spec); elsewhere newer clients may send more. What a spec, a drone
name or a label may be is decided by shared/spec.py, the rules every door
calls: the models run them first and answer their one-line reason as the 422's
detail; the field types below describe the same rules for the OpenAPI document.

What a drone reports about itself is checked at the door too: its labels by the
label rule, its hostname and version by the one-line rule of a task's name (no
control or bidi character). Free text by nature (a message, a task's error, an
artifact's path, metrics) is stored as sent and escaped where a pilot sees it
(docs/security.md, "Untrusted text is data").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from dragoon.relay.errors import RULE_ERROR
from dragoon.shared import spec as rules
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    model_validator,
)
from pydantic import StrictStr as _StrictStr
from pydantic_core import PydanticCustomError

_BAD_CHARS = re.compile(r"[\x00\ud800-\udfff]")
T = TypeVar("T")


def _clean(text: str) -> str:
    """No NUL (it cannot reach bash, an env or a path) and no lone surrogates (not Unicode)."""
    if _BAD_CHARS.search(text):
        raise ValueError("text must not contain NUL or lone surrogates")
    return text


def _rule(check: Callable[[Any], T], *, nullable: bool = False) -> Callable[[Any], T | None]:
    """A validator applying one rule of shared/spec.py; a refusal keeps the shared reason."""

    def validate(value: Any) -> T | None:
        if value is None and nullable:
            return None
        try:
            return check(value)
        except rules.SpecError as exc:
            raise PydanticCustomError(RULE_ERROR, "{reason}", {"reason": str(exc)}) from None

    return validate


StrictStr = Annotated[_StrictStr, AfterValidator(_clean)]
EnvName = Annotated[_StrictStr,
                    Field(pattern=rf"^[A-Za-z_][A-Za-z0-9_]{{0,{rules.MAX_ENV_NAME - 1}}}$")]
DroneName = Annotated[_StrictStr, BeforeValidator(_rule(rules.check_drone_name))]
Labels = Annotated[list[_StrictStr], BeforeValidator(_rule(rules.check_labels))]
OptionalDroneName = Annotated[_StrictStr | None,
                              BeforeValidator(_rule(rules.check_drone_name, nullable=True))]
OptionalLabels = Annotated[list[_StrictStr] | None,
                           BeforeValidator(_rule(rules.check_labels, nullable=True))]

# What a drone says about itself is shown in every pilot's table: one line each, no control
# or bidi character (shared/spec.py ``check_line``, the task name's rule), refused at the door.
MAX_HOSTNAME = 255
MAX_NOTES = 100  # notes of one task's finish report
MAX_NOTE = 2000  # characters of one note (a sealed one: docs/protocol.md, "Sealed texts")
MAX_VERSION = 100


def _line(field: str, limit: int) -> Callable[[Any], str | None]:
    def check(value: str) -> str:
        return value if value == "" else rules.check_line(field, value, limit=limit)

    return _rule(check, nullable=True)


Hostname = Annotated[_StrictStr | None, AfterValidator(_line("hostname", MAX_HOSTNAME))]
Version = Annotated[_StrictStr | None, AfterValidator(_line("version", MAX_VERSION))]

MAX_OFFSET = 1 << 62  # byte offsets and sizes: far past any real output, inside SQLite's range
YEAR = rules.YEAR


class ChallengeBody(BaseModel):
    fingerprint: StrictStr


class LoginBody(BaseModel):
    fingerprint: StrictStr
    challenge: StrictStr = Field(max_length=200)
    signature: StrictStr = Field(max_length=20000)
    totp: StrictStr = Field(max_length=16)


class MintBody(BaseModel):
    name: DroneName
    labels: Labels = []
    ttl: float = Field(3600, gt=0, le=rules.MAX_TTL)
    replace: StrictBool = False  # may the token replace a drone that holds the name


class DrainBody(BaseModel):
    drain: StrictBool = True


# A pilot-signed order (shared/orders.py): its canonical JSON and the base64 SSHSIG.
OrderText = Annotated[StrictStr, Field(max_length=8192)]
OrderSignature = Annotated[StrictStr, Field(max_length=8192)]


class SpecBody(BaseModel):
    """The spec's clear part (shared/spec.py ``CLEAR_FIELDS``): all the relay reads of a task.

    The command, env, cwd and artifact globs travel in the sealed ``payload``, which the
    relay stores and hands on but cannot open (docs/security.md)."""

    model_config = ConfigDict(extra="forbid")

    timeout: StrictInt | None = Field(None, gt=0, le=rules.MAX_TIMEOUT)
    grace: StrictInt = Field(rules.DEFAULT_GRACE, ge=0, le=rules.MAX_GRACE)
    name: StrictStr | None = Field(None, min_length=1, max_length=rules.MAX_TASK_NAME)
    stdin: StrictBool = False

    @model_validator(mode="before")
    @classmethod
    def _shared_rules(cls, data: Any) -> Any:
        """The one rule for a spec's clear part (shared/spec.py), filled in."""
        return _rule(rules.parse_clear_spec)(data)

    def wire(self) -> dict[str, Any]:
        """The clear spec as stored, signed and handed on: ``stdin`` only when true."""
        return self.model_dump(exclude=None if self.stdin else {"stdin"})


# The sealed payload (shared/e2e.py) in base64, and the task key's wraps by recipient
# fingerprint: the body cap (``max_body``) bounds them together.
Payload = Annotated[StrictStr, Field(min_length=1, max_length=2 * 1024 * 1024)]
Wrap = Annotated[StrictStr, Field(max_length=200)]
Wraps = Annotated[dict[Annotated[StrictStr, Field(max_length=60)], Wrap],
                  Field(max_length=512)]


class FetchBody(BaseModel):
    """A sealed fetch: the payload holds the path under the fetch key, ``wraps`` that key
    by recipient fingerprint (the drone's, the pilot's); the order signs the payload's
    hash (docs/protocol.md, "Sealed fetches")."""

    payload: StrictStr = Field(min_length=1, max_length=8192)
    wraps: Wraps = {}
    order: OrderText | None = None
    order_signature: OrderSignature | None = None


class SubmitBody(BaseModel):
    spec: SpecBody
    payload: Payload | None = None  # required, checked against the order (relay/tasks.py)
    wraps: Wraps = {}
    drone: OptionalDroneName = None
    labels: OptionalLabels = None
    expires_in: float | None = Field(None, gt=0, le=10 * YEAR)
    lost_after: float | None = Field(None, gt=0, le=10 * YEAR)
    # Cancel the task if no drone has taken it this many seconds after the submit.
    start_within: Annotated[Annotated[StrictInt, Field(gt=0, le=rules.MAX_START_WITHIN)] | None,
                            BeforeValidator(_rule(rules.check_start_within,
                                                  nullable=True))] = None
    # The pilot's signed order for this task; required (checked by relay/orders.py, so a
    # missing one is the named ``order_missing`` rather than a generic 422).
    order: OrderText | None = None
    order_signature: OrderSignature | None = None


MAX_JOB_TRIALS = 200  # trials of one request; a bigger sweep comes in chunks
MAX_RETRIES = 20


class SpareBody(BaseModel):
    """A pre-signed retry attempt: the same spec, target and recipients as its trial's
    order, its own order id and payload (docs/jobs.md, "Retries and spares")."""

    order: OrderText
    order_signature: OrderSignature
    payload: Payload


class TrialBody(SubmitBody):
    """One trial of a job: a task submit's fields, its place in the job and its spares."""

    trial: StrictInt = Field(ge=0, le=10_000_000)
    spares: list[SpareBody] = Field([], max_length=MAX_RETRIES)


class JobTasksBody(BaseModel):
    tasks: list[TrialBody] = Field(min_length=1, max_length=MAX_JOB_TRIALS)


class JobBody(JobTasksBody):
    id: StrictStr = Field(max_length=40)
    name: Annotated[_StrictStr | None, AfterValidator(_line("name", 200))] = None
    kind: Literal["fanout", "sweep"]
    max_parallel: StrictInt | None = Field(None, ge=1, le=100_000)
    retries: StrictInt = Field(0, ge=0, le=MAX_RETRIES)
    retry_on: list[Annotated[StrictInt, Field(ge=-1024, le=1024)]] = Field([], max_length=64)
    stop_on_failure: StrictBool = False


class JobCancelItem(BaseModel):
    task: StrictStr = Field(max_length=40)
    order: OrderText
    order_signature: OrderSignature


class CancelBody(BaseModel):
    grace: Annotated[Annotated[StrictInt, Field(ge=0, le=rules.MAX_GRACE)] | None,
                     BeforeValidator(_rule(rules.check_grace, nullable=True))] = None
    order: OrderText | None = None
    order_signature: OrderSignature | None = None


class JobCancelBody(BaseModel):
    cancels: list[JobCancelItem] = Field([], max_length=100_000)
    grace: Annotated[Annotated[StrictInt, Field(ge=0, le=rules.MAX_GRACE)] | None,
                     BeforeValidator(_rule(rules.check_grace, nullable=True))] = None


class AckBody(BaseModel):
    ids: list[StrictInt] = Field(max_length=10000)


class InitBody(BaseModel):
    name: StrictStr
    secret: StrictStr = Field(max_length=200)
    public_key: StrictStr = Field(max_length=2000)
    labels: list[StrictStr] = []
    slots: StrictInt = Field(1, ge=1, le=1024)
    hostname: Hostname = None
    version: Version = None
    # Trust roots (docs/protocol.md, "Join token"): the drone's X25519 key, its signing key's
    # certificate of it, and the pilot's binding. Optional: older drones send none.
    x25519_public_key: StrictStr | None = Field(None, max_length=100)
    x25519_signature: StrictStr | None = Field(None, max_length=1000)
    binding: StrictStr | None = Field(None, max_length=100)


class PilotKeyBody(BaseModel):
    """``PUT /v1/pilot/x25519``: the pilot's X25519 key and its SSH key's certificate of it."""

    x25519_public_key: StrictStr = Field(max_length=100)
    x25519_signature: StrictStr = Field(max_length=20000)


class PilotsListBody(BaseModel):
    """``PUT /v1/worker/pilots``: the drone's canonical pilots list and its signature."""

    list: StrictStr = Field(max_length=1 << 20)
    signature: StrictStr = Field(max_length=1000)


class Started(BaseModel):
    id: StrictStr
    started_at: float | None = None
    pid: StrictInt | None = None


class Rejected(BaseModel):
    id: StrictStr
    reason: StrictStr = Field(max_length=2000)


class FetchError(BaseModel):
    id: StrictStr
    error: StrictStr = Field(max_length=2000)


class PollBody(BaseModel):
    wait: float = Field(25, ge=0)
    metrics: dict[str, object] | None = None
    labels: OptionalLabels = None  # the one label rule, as at enrollment
    slots: StrictInt | None = Field(None, ge=1, le=1024)
    hostname: Hostname = None
    version: Version = None
    running: list[StrictStr] = []
    started: list[Started] = []
    rejected: list[Rejected] = []
    fetch_errors: list[FetchError] = []
    # Cancels whose pilot-signed order the drone refused (the task runs on).
    refused_cancels: list[Rejected] = Field([], max_length=10000)


class FinishBody(BaseModel):
    task: StrictStr
    state: Literal["succeeded", "failed", "timed_out", "cancelled"]
    exit_code: StrictInt | None = None
    signal: StrictInt | None = None
    cpu_seconds: float | None = None
    peak_rss: StrictInt | None = None
    started_at: float | None = None
    finished_at: float | None = None
    stdout_size: StrictInt | None = Field(None, ge=0)
    stderr_size: StrictInt | None = Field(None, ge=0)
    order_size: StrictInt | None = Field(None, ge=0)  # an older drone sends none
    error: StrictStr | None = Field(None, max_length=2000)
    # Said about the task without failing it (an artifact pattern that matched nothing).
    notes: list[Annotated[StrictStr, Field(max_length=MAX_NOTE)]] | None = Field(
        None, max_length=MAX_NOTES)


class MessageBody(BaseModel):
    task: StrictStr
    index: StrictInt = Field(ge=0)
    # Message ``index`` of the task, sealed by the drone under the task key (one record,
    # base64: shared/sealed_message.py). The relay holds it to the form of one record at
    # that index; its size is the relay's own setting (message_max, by default the shared
    # cap, plus a record's overhead), answered 413 by the route. The body cap bounds it too.
    sealed: _StrictStr
