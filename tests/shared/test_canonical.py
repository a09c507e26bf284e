"""shared.canonical: the signed byte strings, held to fixtures/ byte for byte.

The canonical request and task strings in fixtures/ were assembled by
fixtures/make_fixtures.py from PROTOCOL.md's text, and their signatures made
by ``ssh-keygen -Y sign``; these tests hold shared/ to them.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from dragoon.shared import sshsig
from dragoon.shared.canonical import (
    canonical_json,
    canonical_query,
    canonical_request,
    canonical_task,
    canonical_task_from_hash,
    login_string,
    sha256_hex,
    spec_sha256,
)
from dragoon.shared.constants import NS_REQUEST, NS_TASK
from dragoon.shared.errors import SignatureError
from dragoon.shared.keys import PublicKey
from dragoon.shared.request_auth import KeyMatch, VerifiedRequest, verify_request

from tests.shared.conftest import load_vectors

REQUESTS = load_vectors("canonical_requests.json")
TASKS = load_vectors("canonical_tasks.json")


def _request_bytes(vector: dict[str, Any]) -> bytes:
    return canonical_request(
        method=vector["method"], path=vector["path"], query=vector["query"],
        timestamp=vector["timestamp"], nonce=vector["nonce"],
        fingerprint=vector["fingerprint"], body=base64.b64decode(vector["body_b64"]),
    )


# --- RE-V1 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("vector", REQUESTS, ids=lambda v: v["case"])
def test_canonical_request_matches_the_fixture(vector: dict[str, Any]) -> None:
    assert _request_bytes(vector) == base64.b64decode(vector["canonical_b64"])


@pytest.mark.parametrize("vector", REQUESTS, ids=lambda v: v["case"])
def test_streamed_body_hash_gives_the_same_canonical_request(vector: dict[str, Any]) -> None:
    digest = hashlib.sha256(base64.b64decode(vector["body_b64"])).hexdigest()
    streamed = canonical_request(
        method=vector["method"], path=vector["path"], query=vector["query"],
        timestamp=vector["timestamp"], nonce=vector["nonce"],
        fingerprint=vector["fingerprint"], body_sha256=digest,
    )
    assert streamed == base64.b64decode(vector["canonical_b64"])


SIGNED_REQUESTS = [v for v in REQUESTS if "signature" in v]


@pytest.mark.parametrize("vector", SIGNED_REQUESTS, ids=lambda v: v["public_key"].split()[0])
def test_fixture_signed_request_verifies(vector: dict[str, Any]) -> None:
    key = PublicKey.from_openssh(vector["public_key"])
    headers = {"X-RE-Timestamp": vector["timestamp"], "X-RE-Nonce": vector["nonce"],
               "X-RE-Key-Fingerprint": vector["fingerprint"],
               "X-RE-Signature": vector["signature"]}
    result = verify_request(
        method=vector["method"], raw_path=vector["path"], raw_query=vector["query"],
        headers=headers, body=base64.b64decode(vector["body_b64"]),
        lookup=lambda fpr, _token: KeyMatch(key, fpr), now=float(vector["timestamp"]),
    )
    assert isinstance(result, VerifiedRequest), result
    assert result.principal == key.fingerprint == vector["fingerprint"]


def test_fixtures_sign_requests_with_three_key_types() -> None:
    assert {v["public_key"].split()[0] for v in SIGNED_REQUESTS} == {
        "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256"}


def test_canonical_request_has_eight_lines_and_no_trailing_newline() -> None:
    text = _request_bytes(REQUESTS[0]).decode()
    assert len(text.split("\n")) == 8
    assert text.startswith("RE-V1\n") and not text.endswith("\n")
    assert text.split("\n")[7] == sha256_hex(b"") == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize(("raw", "canonical"), [
    ("", ""),
    ("&", ""),
    ("&&a=1&&", "a=1"),
    ("b=2&a=1", "a=1&b=2"),
    ("a=2&a=10&a=1", "a=1&a=10&a=2"),        # bytewise, not numeric
    ("a-b=1&a=2", "a=2&a-b=1"),              # by name first, not by the whole pair
    ("B=1&a=1", "B=1&a=1"),                  # upper case sorts before lower case
    ("flag=&flag", "flag&flag="),            # the tie of a bare flag is broken by the pair
    ("q=a+b&q=a%2Bb", "q=a%2Bb&q=a+b"),       # kept percent-encoded exactly as sent
    ("x==1&x=", "x=&x==1"),                  # only the first '=' splits name from value
    ("é=1&e=1", "e=1&é=1"),                  # non-ASCII compared as UTF-8 bytes
])
def test_query_pairs_are_sorted_by_name_then_value_as_sent(raw: str, canonical: str) -> None:
    assert canonical_query(raw) == canonical


@pytest.mark.parametrize("field", ["method", "path", "query", "timestamp", "nonce",
                                   "fingerprint"])
def test_line_break_in_a_request_field_is_refused(field: str) -> None:
    values = {"method": "GET", "path": "/v1/tasks", "query": "", "timestamp": "1",
              "nonce": "0" * 32, "fingerprint": "SHA256:x"}
    values[field] += "\nX"
    with pytest.raises(ValueError, match=f"{field} must not contain a line break"):
        canonical_request(**values, body=b"")


def test_login_string_is_three_lines() -> None:
    assert login_string("abc", "SHA256:fp") == b"RE-LOGIN-V1\nabc\nSHA256:fp"
    with pytest.raises(ValueError, match="challenge"):
        login_string("abc\nSHA256:other", "SHA256:fp")


# --- RE-TASK-V1 and canonical JSON ------------------------------------------------------------

@pytest.mark.parametrize("vector", TASKS, ids=lambda v: v["task_id"])
def test_canonical_json_matches_the_fixture(vector: dict[str, Any]) -> None:
    assert canonical_json(vector["spec"]) == vector["spec_canonical_json"].encode("utf-8")
    assert spec_sha256(vector["spec"]) == sha256_hex(vector["spec_canonical_json"].encode())


@pytest.mark.parametrize("vector", TASKS, ids=lambda v: v["task_id"])
def test_canonical_task_matches_the_fixture(vector: dict[str, Any]) -> None:
    ours = canonical_task(task_id=vector["task_id"], drone=vector["drone"], seq=vector["seq"],
                          spec=vector["spec"])
    assert ours == base64.b64decode(vector["canonical_b64"])


@pytest.mark.parametrize("vector", TASKS, ids=lambda v: v["task_id"])
def test_fixture_task_signature_verifies_against_the_relay_key(vector: dict[str, Any]) -> None:
    relay_key = PublicKey.from_openssh(vector["relay_public_key"])
    canonical = base64.b64decode(vector["canonical_b64"])
    sshsig.verify_b64(vector["signature"], NS_TASK, canonical, relay_key)
    with pytest.raises(SignatureError, match="namespace"):
        sshsig.verify_b64(vector["signature"], NS_REQUEST, canonical, relay_key)


@pytest.mark.parametrize("change", [
    {"drone": "another-drone"}, {"seq": 0}, {"task_id": "t-aaaaaaaaaa"},
    {"spec": {"command": "rm -rf /"}},
])
def test_task_signature_does_not_cover_another_task(change: dict[str, Any]) -> None:
    vector = TASKS[0]
    fields = {k: vector[k] for k in ("task_id", "drone", "seq", "spec")} | change
    relay_key = PublicKey.from_openssh(vector["relay_public_key"])
    with pytest.raises(SignatureError, match="does not verify"):
        sshsig.verify_b64(vector["signature"], NS_TASK, canonical_task(**fields), relay_key)


def test_canonical_json_writes_non_ascii_as_itself_and_sorts_by_code_point() -> None:
    spec = {"\U0001f600": 1, "\ufb01": 2, "b": {"z": None, "a": [True, 1.5]}, "é": "日本"}
    expected = '{"b":{"a":[true,1.5],"z":null},"é":"日本","ﬁ":2,"😀":1}'
    assert canonical_json(spec) == expected.encode("utf-8")


def test_canonical_json_refuses_nan() -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        canonical_json({"x": float("nan")})


@pytest.mark.parametrize(("task_id", "drone", "seq"), [
    ("t-1\nx", "d", 1), ("t-1", "d\n", 1), ("t-1", "d", -1), ("t-1", "d", True),
    ("t-1", "d", "1"),
])
def test_canonical_task_refuses_ambiguous_fields(task_id: str, drone: str, seq: Any) -> None:
    with pytest.raises(ValueError, match=r"line break|non-negative integer"):
        canonical_task(task_id=task_id, drone=drone, seq=seq, spec={})


@pytest.mark.parametrize(("task_id", "drone", "seq"), [
    ("t-1\nx", "d", 1), ("t-1", "d\r", 1), ("t-1", "d", -1), ("t-1", "d", True),
])
def test_canonical_task_from_a_hash_refuses_ambiguous_fields(task_id: str, drone: str,
                                                             seq: Any) -> None:
    with pytest.raises(ValueError, match=r"line break|non-negative integer"):
        canonical_task_from_hash(task_id=task_id, drone=drone, seq=seq, spec_hash="0" * 64)


@pytest.mark.parametrize("spec_hash", ["", "0" * 63, "0" * 65, "A" * 64, "0" * 63 + "\n",
                                       " " + "0" * 63, "é" * 64])
def test_canonical_task_from_a_hash_refuses_a_hash_that_is_no_hash(spec_hash: str) -> None:
    with pytest.raises(ValueError, match="spec_sha256 must be 64 lowercase hex digits"):
        canonical_task_from_hash(task_id="t-1", drone="d", seq=1, spec_hash=spec_hash)


@pytest.mark.parametrize("body_sha256", ["0" * 63, "F" * 64, "0" * 64 + "\nX", ""])
def test_canonical_request_refuses_a_body_hash_that_is_no_hash(body_sha256: str) -> None:
    with pytest.raises(ValueError, match="body_sha256 must be 64 lowercase hex digits"):
        canonical_request(method="POST", path="/v1/worker/blob", query="", timestamp="1",
                          nonce="0" * 32, fingerprint="SHA256:x", body_sha256=body_sha256)
