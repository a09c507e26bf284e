"""Task admission (PROTOCOL.md, RE-TASK-V1): the drone's policy over shared's verification.

shared/task_auth.py reads the signed envelope and checks the signature, the
drone name and the spec's hash; this module adds what only the drone knows:
the last sequence number it accepted (kept across restarts by drone/state.py),
which a task's must be above. The drone spawns nothing before ``verify_task``
answers None. A reason is a short human line; the daemon reports it as
``bad_task_signature: <reason>``.
"""

from __future__ import annotations

from dragoon.shared import task_auth
from dragoon.shared.keys import PublicKey
from dragoon.shared.spec import SpecError, TaskSpec
from dragoon.shared.spec import parse_spec as parse_task_spec
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



def parse_spec(spec: object) -> TaskSpec | str:
    """The typed spec, or why it cannot be run (reported as ``bad_spec: <reason>``).

    The reason is shared/spec.py's, word for word the relay's 422 for the same
    spec, so a drone refusing what its relay let through names the same rule.
    """
    try:
        return parse_task_spec(spec)
    except SpecError as exc:
        return str(exc)
