"""Job ids and references: one rule for every door (CLI, cockpit, relay).

A job id is ``j-`` and ten characters of the task-id alphabet. The *client* chooses it,
as it chooses order ids: each trial's sealed environment holds ``DRAGOON_JOB``, so the id
must be known before anything reaches the relay, which only checks its shape and that it
is new (docs/jobs.md).
"""

from __future__ import annotations

import re
import secrets
from typing import Final

from dragoon.shared.spec import (
    TASK_ID_ALPHABET,
    TASK_ID_LENGTH,
    SpecError,
    parse_id_ref,
    ref_rule,
)

JOB_ID_RULE: Final = f"j- and {TASK_ID_LENGTH} of a-z 2-7"
JOB_REF_RULE: Final = ref_rule("j")
_JOB_ID: Final = re.compile(rf"j-[{TASK_ID_ALPHABET}]{{{TASK_ID_LENGTH}}}")


def new_job_id() -> str:
    return "j-" + "".join(secrets.choice(TASK_ID_ALPHABET) for _ in range(TASK_ID_LENGTH))


def check_job_id(value: object, *, field: str = "job") -> str:
    """A whole job id, as the relay stores it; anything else is a ``SpecError``."""
    if not isinstance(value, str) or _JOB_ID.fullmatch(value) is None:
        shown = repr(value)[:60]
        raise SpecError(field, f"{shown} is not a job id ({JOB_ID_RULE})")
    return value


def parse_job_ref(text: str, *, field: str = "job") -> tuple[str, bool]:
    """``j-4jgab2kq7z`` or a prefix (``j-4jg``, ``4jg``) → (the id form, whether whole),
    by shared/spec.py's one rule for id references (``parse_id_ref``)."""
    return parse_id_ref(text, mark="j", noun="a job", field=field)
