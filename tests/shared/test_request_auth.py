"""shared.request_auth: RE-V1 signing and the relay's verifier, check by check.

Each error code of PROTOCOL.md that the verifier makes is pinned here, in
the order the protocol checks them; ``replayed_nonce`` belongs to the relay
(its nonce memory, relay/replay.py) and is tested there. The replay floor is
part of check 2 and is pinned here, with the client's side of it.
"""

from __future__ import annotations

import base64
import hashlib
import random
import string
from pathlib import Path
from typing import Any

import pytest
from dragoon.shared import constants as c
from dragoon.shared import sshsig
from dragoon.shared.canonical import canonical_request
from dragoon.shared.keys import PrivateKey, PublicKey
from dragoon.shared.request_auth import (
    BelowFloor,
    KeyMatch,
    RequestRejected,
    VerifiedRequest,
    bearer_token,
    new_nonce,
    precheck_request,
    retry_timestamp,
    sign_request,
    sign_streamed_request,
    verify_request,
)
from dragoon.shared.signers import AgentSigner, KeyFileSigner

from tests.shared.conftest import load_vectors
from tests.support.agent import SshAgent
from tests.support.keys import KeyMaker, check_novalidate, sign_with_ssh_keygen

NOW = 1_763_900_000
PILOT = KeyFileSigner(PrivateKey.generate_ed25519("pilot"))
OTHER = KeyFileSigner(PrivateKey.generate_ed25519("other"))
SESSION = "tok"


class Lookup:
    """A key lookup like the relay's: knows one key, records what it was asked."""

    def __init__(self, key: PublicKey, answer: RequestRejected | None = None) -> None:
        self.key = key
        self.answer = answer
        self.calls: list[tuple[str, str | None]] = []

    def __call__(self, fingerprint: str, token: str | None) -> KeyMatch[str] | RequestRejected:
        self.calls.append((fingerprint, token))
        if self.answer is not None:
            return self.answer
        return KeyMatch(self.key, f"pilot:{fingerprint}")


def _signed(signer: Any = PILOT, *, method: str = "POST", path: str = "/v1/tasks",
            query: str = "drone=gpu-1", body: bytes = b'{"command":"true"}',
            token: str | None = SESSION, timestamp: int = NOW) -> dict[str, str]:
    return sign_request(signer, method=method, path=path, query=query, body=body, token=token,
                        timestamp=timestamp)


def _verify(headers: dict[str, str], *, method: str = "POST", path: str = "/v1/tasks",
            query: str = "drone=gpu-1", body: bytes = b'{"command":"true"}',
            lookup: Lookup | None = None, now: float = NOW
            ) -> VerifiedRequest[str] | RequestRejected:
    return verify_request(method=method, raw_path=path, raw_query=query, headers=headers,
                          body=body, lookup=lookup or Lookup(PILOT.public_key), now=now)


def _rejected(result: object, code: str) -> RequestRejected:
    assert isinstance(result, RequestRejected), result
    assert result.code == code, result
    return result


# --- the good path -----------------------------------------------------------------------------

def test_signed_request_verifies_and_names_the_principal() -> None:
    headers = _signed()
    lookup = Lookup(PILOT.public_key)
    result = _verify(headers, lookup=lookup)
    assert isinstance(result, VerifiedRequest)
    assert result.principal == f"pilot:{PILOT.fingerprint}"
    assert result.public_key == PILOT.public_key
    assert (result.nonce, result.timestamp) == (headers[c.HEADER_NONCE], NOW)
    assert lookup.calls == [(PILOT.fingerprint, "tok")]


def test_drone_request_without_bearer_token_passes_none_to_the_lookup() -> None:
    lookup = Lookup(PILOT.public_key)
    assert isinstance(_verify(_signed(token=None), lookup=lookup), VerifiedRequest)
    assert lookup.calls == [(PILOT.fingerprint, None)]


def test_headers_are_found_in_any_case() -> None:
    for transform in (str.lower, str.upper, str.title):
        headers = {transform(k): v for k, v in _signed().items()}
        assert isinstance(_verify(headers), VerifiedRequest), transform


def test_query_order_on_the_wire_does_not_matter() -> None:
    headers = _signed(query="b=2&a=1&a=0")
    assert isinstance(_verify(headers, query="a=0&b=2&a=1"), VerifiedRequest)


def test_sign_request_makes_well_formed_headers() -> None:
    headers = sign_request(PILOT, method="GET", path="/v1/workers")
    assert set(headers) == {c.HEADER_TIMESTAMP, c.HEADER_NONCE, c.HEADER_FINGERPRINT,
                            c.HEADER_SIGNATURE}
    assert len(headers[c.HEADER_NONCE]) == 32
    assert set(headers[c.HEADER_NONCE]) <= set("0123456789abcdef")
    assert headers[c.HEADER_FINGERPRINT] == PILOT.fingerprint
    assert new_nonce() != new_nonce()


def test_request_signed_through_the_ssh_agent_verifies(agent: SshAgent, public_key: PublicKey
                                                       ) -> None:
    signer = AgentSigner.for_key(public_key, str(agent.socket_path))
    headers = _signed(signer)
    assert isinstance(_verify(headers, lookup=Lookup(public_key)), VerifiedRequest)


def test_request_signed_by_ssh_keygen_verifies(key_path: Path, public_key: PublicKey) -> None:
    # A third-party client with nothing but OpenSSH: PROTOCOL.md's promise.
    nonce = new_nonce()
    message = canonical_request(method="GET", path="/v1/workers", query="", timestamp=str(NOW),
                                nonce=nonce, fingerprint=public_key.fingerprint, body=b"")
    blob = sign_with_ssh_keygen(key_path, c.NS_REQUEST, message)
    headers = {c.HEADER_TIMESTAMP: str(NOW), c.HEADER_NONCE: nonce,
               c.HEADER_FINGERPRINT: public_key.fingerprint,
               c.HEADER_SIGNATURE: sshsig.encode_b64(blob)}
    result = _verify(headers, method="GET", path="/v1/workers", query="", body=b"",
                     lookup=Lookup(public_key))
    assert isinstance(result, VerifiedRequest), result


_PATH_CHARS = string.ascii_letters + string.digits + "-._~%/!$'()*+,;:@"
_QUERY_CHARS = string.ascii_letters + string.digits + "-._~%+=!$'()*,;:@/?"


def _random_request(rng: random.Random) -> dict[str, Any]:
    path = "/" + "".join(rng.choice(_PATH_CHARS) for _ in range(rng.randrange(0, 40)))
    query = "&".join("".join(rng.choice(_QUERY_CHARS) for _ in range(rng.randrange(0, 12)))
                     for _ in range(rng.randrange(0, 6)))
    body = rng.randbytes(rng.choice([0, 1, 17, 1000]))
    method = rng.choice(["GET", "POST", "DELETE", "put"])
    return {"method": method, "path": path, "query": query, "body": body}


def test_sign_then_verify_round_trips_for_random_requests() -> None:
    rng = random.Random(20261123)
    for _ in range(300):
        request = _random_request(rng)
        headers = sign_request(PILOT, timestamp=NOW, **request)
        result = verify_request(raw_path=request["path"], raw_query=request["query"],
                                method=request["method"], body=request["body"],
                                headers=headers, lookup=Lookup(PILOT.public_key), now=NOW)
        assert isinstance(result, VerifiedRequest), (request, result)
        tampered = bytes(request["body"]) + b"x"
        result = verify_request(raw_path=request["path"], raw_query=request["query"],
                                method=request["method"], body=tampered,
                                headers=headers, lookup=Lookup(PILOT.public_key), now=NOW)
        _rejected(result, c.ERR_BAD_SIGNATURE)


# --- 1. bad_request_signature_headers ---------------------------------------------------------

@pytest.mark.parametrize("header", [c.HEADER_TIMESTAMP, c.HEADER_NONCE, c.HEADER_FINGERPRINT,
                                    c.HEADER_SIGNATURE])
def test_missing_header_is_rejected(header: str) -> None:
    headers = _signed()
    del headers[header]
    lookup = Lookup(PILOT.public_key)
    result = _rejected(_verify(headers, lookup=lookup), c.ERR_HEADERS)
    assert result.detail == f"missing header {header}"
    assert lookup.calls == []


def test_empty_header_counts_as_missing() -> None:
    headers = _signed() | {c.HEADER_NONCE: ""}
    assert _rejected(_verify(headers), c.ERR_HEADERS).detail == f"missing header {c.HEADER_NONCE}"


@pytest.mark.parametrize(("header", "value", "detail"), [
    (c.HEADER_TIMESTAMP, "abc", "must be decimal Unix seconds"),
    (c.HEADER_TIMESTAMP, "-1763900000", "must be decimal Unix seconds"),
    (c.HEADER_TIMESTAMP, "1763900000.5", "must be decimal Unix seconds"),
    (c.HEADER_TIMESTAMP, " 1763900000", "must be decimal Unix seconds"),
    (c.HEADER_TIMESTAMP, "1" * 13, "must be decimal Unix seconds"),
    (c.HEADER_TIMESTAMP, "١٧٦٣٩٠٠٠٠٠", "must be decimal Unix seconds"),  # Arabic-Indic digits
    (c.HEADER_NONCE, "A" * 32, "must be 32 lowercase hex digits"),
    (c.HEADER_NONCE, "a" * 31, "must be 32 lowercase hex digits"),
    (c.HEADER_NONCE, "a" * 33, "must be 32 lowercase hex digits"),
    (c.HEADER_NONCE, "g" * 32, "must be 32 lowercase hex digits"),
    (c.HEADER_FINGERPRINT, "MD5:" + "a" * 43, "must be SHA256:<43 base64>"),
    (c.HEADER_FINGERPRINT, "SHA256:short", "must be SHA256:<43 base64>"),
    (c.HEADER_FINGERPRINT, "SHA256:" + "a" * 43 + "=", "must be SHA256:<43 base64>"),
    (c.HEADER_SIGNATURE, "not base64!", "is not valid base64"),
    (c.HEADER_SIGNATURE, "U1NIU0lH=x", "is not valid base64"),
    (c.HEADER_AUTHORIZATION, "Basic dXNlcjpwdw==", "Authorization must be 'Bearer <token>'"),
    (c.HEADER_AUTHORIZATION, "Bearer ", "Authorization must be 'Bearer <token>'"),
    (c.HEADER_AUTHORIZATION, "Bearer a b", "Authorization must be 'Bearer <token>'"),
    (c.HEADER_AUTHORIZATION, "Bearer " + "a" * 513, "Authorization must be 'Bearer <token>'"),
])
def test_malformed_header_is_rejected(header: str, value: str, detail: str) -> None:
    headers = _signed() | {header: value}
    lookup = Lookup(PILOT.public_key)
    result = _rejected(_verify(headers, lookup=lookup), c.ERR_HEADERS)
    assert detail in result.detail
    assert lookup.calls == []


def test_bearer_token_is_none_when_absent_and_rejected_when_malformed() -> None:
    assert bearer_token({}) is None
    assert bearer_token({"authorization": "Bearer abc.def"}) == "abc.def"
    assert isinstance(bearer_token({"Authorization": "bearer"}), RequestRejected)


# --- 2. stale_timestamp ------------------------------------------------------------------------

@pytest.mark.parametrize("skew", [-61, 61, -3600, 10**9])
def test_stale_timestamp_is_rejected_both_ways(skew: int) -> None:
    lookup = Lookup(PILOT.public_key)
    result = _rejected(_verify(_signed(), now=NOW + skew, lookup=lookup), c.ERR_STALE)
    assert f"{skew} s off" in result.detail
    assert lookup.calls == []


@pytest.mark.parametrize("skew", [-60, -1, 0, 1, 60])
def test_timestamp_within_sixty_seconds_is_accepted(skew: int) -> None:
    assert isinstance(_verify(_signed(), now=NOW + skew), VerifiedRequest)


def test_stale_check_comes_before_the_key_lookup() -> None:
    answer = RequestRejected(c.ERR_UNKNOWN_KEY, "no such key")
    _rejected(_verify(_signed(), now=NOW + 120, lookup=Lookup(PILOT.public_key, answer)),
              c.ERR_STALE)


def test_a_timestamp_below_the_replay_floor_is_stale_and_names_the_floor() -> None:
    lookup = Lookup(PILOT.public_key)
    result = verify_request(method="POST", raw_path="/v1/tasks", raw_query="drone=gpu-1",
                            headers=_signed(), body=b'{"command":"true"}', lookup=lookup,
                            now=NOW, not_before=NOW + 1)
    rejected = _rejected(result, c.ERR_STALE)
    assert isinstance(rejected, BelowFloor)
    assert rejected.extra() == {"not_before": NOW + 1}
    assert lookup.calls == []  # refused before the key lookup, like any stale timestamp


def test_a_timestamp_at_the_replay_floor_is_accepted() -> None:
    result = verify_request(method="POST", raw_path="/v1/tasks", raw_query="drone=gpu-1",
                            headers=_signed(), body=b'{"command":"true"}',
                            lookup=Lookup(PILOT.public_key), now=NOW, not_before=NOW)
    assert isinstance(result, VerifiedRequest)


def test_the_streamed_precheck_holds_the_floor_too() -> None:
    _rejected(precheck_request(headers=_signed(), lookup=Lookup(PILOT.public_key), now=NOW,
                               not_before=NOW + 1), c.ERR_STALE)


@pytest.mark.parametrize(("answer", "expected"), [
    ({"error": "stale_timestamp", "detail": "", "not_before": NOW + 5}, NOW + 5),
    ({"error": "stale_timestamp", "detail": "", "not_before": NOW - 5}, NOW),  # clock is later
    ({"error": "stale_timestamp", "detail": "", "not_before": NOW + 60}, NOW + 60),
    ({"error": "stale_timestamp", "detail": "", "not_before": NOW + 61}, None),  # too far ahead
    ({"error": "stale_timestamp", "detail": "timestamp is 120 s off"}, None),  # plain skew
    ({"error": "stale_timestamp", "not_before": "soon"}, None),
    ({"error": "stale_timestamp", "not_before": True}, None),
    ({"error": "replayed_nonce", "not_before": NOW + 5}, None),
])
def test_a_client_signs_again_only_at_a_floor_it_may_reach(answer: dict[str, Any],
                                                           expected: int | None) -> None:
    assert retry_timestamp(answer, now=NOW + 0.5) == expected


# --- 3. unknown_key, bad_session, fingerprint_mismatch: the lookup's answer ------------------

@pytest.mark.parametrize("code", [c.ERR_UNKNOWN_KEY, c.ERR_BAD_SESSION,
                                  c.ERR_FINGERPRINT_MISMATCH])
def test_lookup_rejection_is_passed_through_unchanged(code: str) -> None:
    answer = RequestRejected(code, f"the relay says {code}")
    result = _verify(_signed(), lookup=Lookup(PILOT.public_key, answer))
    assert result is answer


# --- 4. bad_signature --------------------------------------------------------------------------

@pytest.mark.parametrize("tamper", [
    {"method": "PUT"}, {"path": "/v1/tasks/t-1"}, {"path": "/v1/Tasks"},
    {"query": "drone=gpu-2"}, {"query": "drone=gpu-1&x=1"}, {"query": ""},
    {"body": b'{"command":"rm -rf /"}'}, {"body": b""},
], ids=lambda t: next(iter(t)) + "=" + repr(next(iter(t.values())))[:20])
def test_tampered_request_is_rejected(tamper: dict[str, Any]) -> None:
    result = _rejected(_verify(_signed(), **tamper), c.ERR_BAD_SIGNATURE)
    assert "does not verify" in result.detail


@pytest.mark.parametrize("header", [c.HEADER_TIMESTAMP, c.HEADER_NONCE])
def test_tampered_timestamp_or_nonce_is_rejected(header: str) -> None:
    headers = _signed()
    headers[header] = str(NOW + 1) if header == c.HEADER_TIMESTAMP else new_nonce()
    _rejected(_verify(headers), c.ERR_BAD_SIGNATURE)


def test_signature_made_in_another_namespace_is_rejected() -> None:
    headers = _signed()
    message = canonical_request(method="POST", path="/v1/tasks", query="drone=gpu-1",
                                timestamp=str(NOW), nonce=headers[c.HEADER_NONCE],
                                fingerprint=PILOT.fingerprint, body=b'{"command":"true"}')
    headers[c.HEADER_SIGNATURE] = sshsig.encode_b64(PILOT.sign(c.NS_LOGIN, message))
    result = _rejected(_verify(headers), c.ERR_BAD_SIGNATURE)
    assert result.detail == f"signature is for namespace '{c.NS_LOGIN}', not '{c.NS_REQUEST}'"


def test_signature_by_another_key_is_rejected() -> None:
    # The headers claim the pilot's fingerprint, the signature is by another key.
    headers = sign_request(OTHER, method="POST", path="/v1/tasks", query="drone=gpu-1",
                           body=b'{"command":"true"}', timestamp=NOW)
    headers[c.HEADER_FINGERPRINT] = PILOT.fingerprint
    result = _rejected(_verify(headers), c.ERR_BAD_SIGNATURE)
    assert result.detail == f"signed by {OTHER.fingerprint}, expected {PILOT.fingerprint}"


def test_fingerprint_header_swapped_to_another_enrolled_key_is_rejected() -> None:
    headers = _signed()
    headers[c.HEADER_FINGERPRINT] = OTHER.fingerprint
    _rejected(_verify(headers, lookup=Lookup(OTHER.public_key)), c.ERR_BAD_SIGNATURE)


@pytest.mark.parametrize("signature", ["", "AAAA", sshsig.encode_b64(b"SSHSIG\x00\x00")])
def test_base64_that_is_not_an_sshsig_is_a_bad_signature(signature: str) -> None:
    headers = _signed() | {c.HEADER_SIGNATURE: signature}
    code = c.ERR_HEADERS if not signature else c.ERR_BAD_SIGNATURE
    _rejected(_verify(headers), code)


def test_junk_headers_are_always_answered_never_raised() -> None:
    rng = random.Random(5)
    alphabet = string.printable + "é☃\x00\u2028"
    good = _signed()
    for _ in range(500):
        headers = dict(good)
        for name in rng.sample(sorted(headers), rng.randrange(1, len(headers) + 1)):
            if rng.random() < 0.5:
                headers[name] = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
            else:  # damage the good value slightly, so later checks are reached too
                value = list(headers[name])
                value[rng.randrange(len(value))] = rng.choice(alphabet)
                headers[name] = "".join(value)
        result = _verify(headers, now=NOW)
        assert isinstance(result, RequestRejected | VerifiedRequest)


def test_path_with_a_line_break_is_a_bad_signature_not_a_crash() -> None:
    _rejected(_verify(_signed(), path="/v1/tasks\nGET"), c.ERR_BAD_SIGNATURE)


# --- bodies streamed from disk (body_sha256) ---------------------------------------------------

STREAMED = load_vectors("streamed_requests.json")


def _streamed_headers(vector: dict[str, Any]) -> dict[str, str]:
    return {c.HEADER_TIMESTAMP: vector["timestamp"], c.HEADER_NONCE: vector["nonce"],
            c.HEADER_FINGERPRINT: vector["fingerprint"], c.HEADER_SIGNATURE: vector["signature"]}


def _verify_streamed(vector: dict[str, Any], body_sha256: str
                     ) -> VerifiedRequest[str] | RequestRejected:
    key = PublicKey.from_openssh(vector["public_key"])
    return verify_request(method=vector["method"], raw_path=vector["path"],
                          raw_query=vector["query"], headers=_streamed_headers(vector), body=b"",
                          body_sha256=body_sha256, lookup=Lookup(key),
                          now=float(vector["timestamp"]))


@pytest.mark.parametrize("vector", STREAMED, ids=lambda v: v["case"])
def test_streamed_request_matches_the_fixture(vector: dict[str, Any]) -> None:
    body = base64.b64decode(vector["body_b64"])
    assert len(body) == vector["body_size"]
    assert hashlib.sha256(body).hexdigest() == vector["body_sha256"]
    fields = {k: vector[k] for k in ("method", "path", "query", "timestamp", "nonce",
                                     "fingerprint")}
    canonical = base64.b64decode(vector["canonical_b64"])
    assert canonical_request(**fields, body_sha256=vector["body_sha256"]) == canonical
    assert canonical_request(**fields, body=body) == canonical


@pytest.mark.parametrize("vector", STREAMED, ids=lambda v: v["case"])
def test_fixture_streamed_request_verifies_over_its_hash(vector: dict[str, Any]) -> None:
    result = _verify_streamed(vector, vector["body_sha256"])
    assert isinstance(result, VerifiedRequest), result
    assert result.nonce == vector["nonce"]


@pytest.mark.parametrize("vector", STREAMED, ids=lambda v: v["case"])
def test_fixture_streamed_request_over_other_bytes_is_a_bad_signature(vector: dict[str, Any]
                                                                      ) -> None:
    other = hashlib.sha256(base64.b64decode(vector["body_b64"]) + b"x").hexdigest()
    _rejected(_verify_streamed(vector, other), c.ERR_BAD_SIGNATURE)


def test_a_body_hash_that_is_no_hash_is_a_bad_signature_not_a_crash() -> None:
    result = _rejected(_verify_streamed(STREAMED[0], "0" * 64 + "\nX"), c.ERR_BAD_SIGNATURE)
    assert "body_sha256 must be 64 lowercase hex digits" in result.detail


def test_streamed_signing_gives_the_headers_of_signing_the_bytes() -> None:
    body = bytes(range(256)) * 17
    args: dict[str, Any] = {"method": "POST", "path": "/v1/worker/blob",
                            "query": "task=t-1&path=a.txt", "timestamp": NOW,
                            "nonce": new_nonce()}
    streamed = sign_streamed_request(PILOT, body_sha256=hashlib.sha256(body).hexdigest(), **args)
    assert streamed == sign_request(PILOT, body=body, **args)  # ed25519 is deterministic
    result = _verify(streamed, path="/v1/worker/blob", query="task=t-1&path=a.txt", body=body)
    assert isinstance(result, VerifiedRequest), result


def test_a_streamed_signature_passes_ssh_keygen(keys: KeyMaker, workdir: Path) -> None:
    signer = KeyFileSigner.from_file(keys.make("ed25519"))
    digest = hashlib.sha256(b"artifact").hexdigest()
    headers = sign_streamed_request(signer, method="POST", path="/v1/worker/blob",
                                    query=f"sha256={digest}", body_sha256=digest, timestamp=NOW)
    message = canonical_request(method="POST", path="/v1/worker/blob", query=f"sha256={digest}",
                                timestamp=str(NOW), nonce=headers[c.HEADER_NONCE],
                                fingerprint=signer.fingerprint, body=b"artifact")
    done = check_novalidate(c.NS_REQUEST, message,
                            sshsig.decode_b64(headers[c.HEADER_SIGNATURE]), workdir)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("body_sha256", ["", "ab", "A" * 64, "0" * 64 + "\n"])
def test_streamed_signing_refuses_a_hash_that_is_no_hash(body_sha256: str) -> None:
    with pytest.raises(ValueError, match="body_sha256 must be 64 lowercase hex digits"):
        sign_streamed_request(PILOT, method="POST", path="/v1/worker/blob",
                              body_sha256=body_sha256)


# --- the pre-check of a request whose body is not read yet -------------------------------------

def test_precheck_names_the_key_without_checking_the_signature() -> None:
    headers = _signed() | {c.HEADER_SIGNATURE: sshsig.encode_b64(b"not a signature")}
    lookup = Lookup(PILOT.public_key)
    match = precheck_request(headers=headers, lookup=lookup, now=NOW)
    assert isinstance(match, KeyMatch)
    assert (match.public_key, match.principal) == (PILOT.public_key, f"pilot:{PILOT.fingerprint}")
    assert lookup.calls == [(PILOT.fingerprint, SESSION)]


@pytest.mark.parametrize(("change", "now", "code"), [
    ({c.HEADER_NONCE: "x"}, NOW, c.ERR_HEADERS),
    ({c.HEADER_SIGNATURE: "not base64!"}, NOW, c.ERR_HEADERS),
    ({}, NOW + 61, c.ERR_STALE),
])
def test_precheck_makes_checks_one_and_two(change: dict[str, str], now: int, code: str) -> None:
    lookup = Lookup(PILOT.public_key)
    _rejected(precheck_request(headers=_signed() | change, lookup=lookup, now=now), code)
    assert lookup.calls == []


def test_precheck_passes_the_key_lookup_rejection_through() -> None:
    answer = RequestRejected(c.ERR_UNKNOWN_KEY, "no drone or pilot has this key")
    result = precheck_request(headers=_signed(), lookup=Lookup(PILOT.public_key, answer),
                              now=NOW)
    assert result is answer

