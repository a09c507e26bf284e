"""Task admission (PROTOCOL.md, RE-TASK-V1): the drone's policy over shared's verification.

shared/task_auth.py reads the signed envelope and checks the signature, the
drone name and the spec's hash; this module adds what only the drone knows:
the last sequence number it accepted (kept across restarts by drone/state.py),
which a task's must be above. The drone spawns nothing before ``verify_task``
answers None. A reason is a short human line; the daemon reports it as
``bad_task_signature: <reason>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dragoon.shared import task_auth
from dragoon.shared.keys import PublicKey
from dragoon.shared.task_auth import SignedTask, TaskRejected


def parse_task(raw: object) -> SignedTask | str:
    """The task's fields, or why it cannot even be read."""
    try:
        return task_auth.parse_signed_task(raw)
    except TaskRejected as exc:
        return exc.detail


def verify_task(
    task: SignedTask, *, relay_key: PublicKey, drone_name: str, last_seq: int
) -> str | None:
    """None when the task may run; else the reason.

    Signature, drone name and spec hash are shared's checks (in that order);
    then the sequence number must be above ``last_seq``, the last one accepted.
    """
    try:
        verified = task_auth.verify_task(relay_key, task, drone_name=drone_name)
    except TaskRejected as exc:
        return exc.detail
    if verified.seq <= last_seq:
        return f"sequence {verified.seq} is not above {last_seq}"
    return None


@dataclass(frozen=True)
class Spec:
    """A verified spec, with its fields typed; what the drone actually runs."""

    command: str
    env: dict[str, str]
    cwd: str | None
    timeout: float | None
    grace: float | None
    artifacts: list[str]
    name: str | None


def parse_spec(spec: dict[str, Any]) -> Spec | str:
    """The typed spec, or why it cannot be run (reported as ``bad_spec: <reason>``)."""
    command = spec.get("command")
    if not isinstance(command, str) or not command.strip():
        return "command must be a non-empty string"
    if "\x00" in command:
        return "command holds a NUL byte"
    env = spec.get("env") or {}
    if not isinstance(env, dict):
        return "env must be an object"
    for key, value in env.items():
        if not isinstance(value, str) or not key or "=" in key or "\x00" in key + value:
            return f"env entry {key!r} is not a valid variable"
    cwd = spec.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or "\x00" in cwd or not cwd):
        return "cwd must be a path or null"
    numbers: dict[str, float | None] = {}
    for key in ("timeout", "grace"):
        value = spec.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value < 0
        ):
            return f"{key} must be a non-negative number or null"
        numbers[key] = float(value) if value is not None else None
    artifacts = spec.get("artifacts") or []
    if not isinstance(artifacts, list) or not all(isinstance(a, str) for a in artifacts):
        return "artifacts must be a list of glob patterns"
    name = spec.get("name")
    return Spec(command, dict(env), cwd, numbers["timeout"], numbers["grace"], list(artifacts),
                name if isinstance(name, str) else None)
