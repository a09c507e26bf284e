"""Request bodies of docs/api.md as pydantic models; the OpenAPI document is built from them.

Models forbid unknown fields only where a typo would silently change meaning
(the task spec); elsewhere newer clients may send more.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt
from pydantic import StrictStr as _StrictStr

_BAD_CHARS = re.compile(r"[\x00\ud800-\udfff]")


def _clean(text: str) -> str:
    """No NUL (it cannot reach bash, an env or a path) and no lone surrogates (not Unicode)."""
    if _BAD_CHARS.search(text):
        raise ValueError("text must not contain NUL or lone surrogates")
    return text


StrictStr = Annotated[_StrictStr, AfterValidator(_clean)]
EnvName = Annotated[_StrictStr, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")]

MAX_OFFSET = 1 << 62  # byte offsets and sizes: far past any real output, inside SQLite's range
YEAR = 366 * 86400


class ChallengeBody(BaseModel):
    fingerprint: StrictStr


class LoginBody(BaseModel):
    fingerprint: StrictStr
    challenge: StrictStr = Field(max_length=200)
    signature: StrictStr = Field(max_length=20000)
    totp: StrictStr = Field(max_length=16)


class MintBody(BaseModel):
    name: StrictStr
    labels: list[StrictStr] = []
    ttl: float = Field(3600, gt=0, le=30 * 86400)
    replace: StrictBool = False  # may the token replace a drone that holds the name


class DrainBody(BaseModel):
    drain: StrictBool = True


class FetchBody(BaseModel):
    path: StrictStr = Field(min_length=1, max_length=4096)


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: StrictStr = Field(min_length=1, max_length=128 * 1024)
    env: dict[EnvName, StrictStr] = {}
    cwd: StrictStr | None = None
    timeout: StrictInt | None = Field(None, gt=0, le=100 * YEAR)
    grace: StrictInt = Field(10, ge=0, le=3600)
    artifacts: list[StrictStr] = []
    name: StrictStr | None = Field(None, max_length=200)


class SubmitBody(BaseModel):
    spec: Spec
    drone: StrictStr | None = None
    labels: list[StrictStr] | None = None
    expires_in: float | None = Field(None, gt=0, le=10 * YEAR)
    lost_after: float | None = Field(None, gt=0, le=10 * YEAR)


class CancelBody(BaseModel):
    grace: StrictInt | None = Field(None, ge=0, le=3600)


class AckBody(BaseModel):
    ids: list[StrictInt] = Field(max_length=10000)


class InitBody(BaseModel):
    name: StrictStr
    secret: StrictStr = Field(max_length=200)
    public_key: StrictStr = Field(max_length=2000)
    labels: list[StrictStr] = []
    slots: StrictInt = Field(1, ge=1, le=1024)
    hostname: StrictStr | None = None
    version: StrictStr | None = None


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
    labels: list[StrictStr] | None = None
    slots: StrictInt | None = Field(None, ge=1, le=1024)
    hostname: StrictStr | None = None
    version: StrictStr | None = None
    running: list[StrictStr] = []
    started: list[Started] = []
    rejected: list[Rejected] = []
    fetch_errors: list[FetchError] = []


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
    error: StrictStr | None = Field(None, max_length=2000)


class MessageBody(BaseModel):
    task: StrictStr
    index: StrictInt = Field(ge=0)
    text: StrictStr
