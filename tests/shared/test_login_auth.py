"""shared.login_auth: the pilot's login signature and the relay's check of it.

``logins.json`` holds logins signed by ``ssh-keygen -Y sign`` (and one by
dragoon, checked by OpenSSH before it was written), each naming the reason
the check must refuse it, if any. The live tests sign with dragoon and check
with ``ssh-keygen -Y verify`` in the login namespace, and the other way round.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from dragoon.shared import sshsig
from dragoon.shared.canonical import login_string
from dragoon.shared.constants import NS_LOGIN, NS_REQUEST
from dragoon.shared.errors import SignatureError
from dragoon.shared.keys import PrivateKey, PublicKey
from dragoon.shared.login_auth import sign_login, verify_login
from dragoon.shared.signers import AgentSigner, KeyFileSigner

from tests.shared.conftest import load_vectors
from tests.support.agent import SshAgent
from tests.support.keys import (
    KeyMaker,
    check_novalidate,
    public_line,
    sign_with_ssh_keygen,
    verify_with_ssh_keygen,
)

LOGINS = load_vectors("logins.json")
PILOT = KeyFileSigner(PrivateKey.generate_ed25519("pilot"))
OTHER = KeyFileSigner(PrivateKey.generate_ed25519("other"))
CHALLENGE = "hFs-2cEPxc1BJZ-OYx93GNV713VV7h1S3ran_Hmw28M"
# What verify_login says for each reason a fixture names (SSHSIG's own texts).
REASONS = {"namespace": "signature is for namespace 'dragoon-request-v1'",
           "challenge": "signature does not verify against the key",
           "key": "signed by SHA256:"}


def _verify(vector: dict[str, Any]) -> None:
    verify_login(PublicKey.from_openssh(vector["public_key"]), challenge=vector["challenge"],
                 fingerprint=vector["fingerprint"], signature=vector["signature"])


def _refused(public_key: PublicKey, *, challenge: str = CHALLENGE,
             fingerprint: str | None = None, signature: str) -> str:
    with pytest.raises(SignatureError) as caught:
        verify_login(public_key, challenge=challenge,
                     fingerprint=public_key.fingerprint if fingerprint is None else fingerprint,
                     signature=signature)
    assert caught.value.code == "bad_signature"
    return caught.value.detail


# --- the fixtures ------------------------------------------------------------------------------

@pytest.mark.parametrize("vector", LOGINS, ids=lambda v: v["case"])
def test_the_login_string_matches_the_fixture(vector: dict[str, Any]) -> None:
    built = login_string(vector["challenge"], vector["fingerprint"])
    assert built == base64.b64decode(vector["canonical_b64"])
    assert built.split(b"\n") == [b"RE-LOGIN-V1", vector["challenge"].encode(),
                                  vector["fingerprint"].encode()]


@pytest.mark.parametrize("vector", LOGINS, ids=lambda v: v["case"])
def test_fixture_login_is_accepted_or_refused_for_the_named_reason(vector: dict[str, Any]
                                                                   ) -> None:
    if vector["rejected"] is None:
        _verify(vector)
    else:
        with pytest.raises(SignatureError) as caught:
            _verify(vector)
        assert caught.value.detail.startswith(REASONS[vector["rejected"]]), caught.value.detail


@pytest.mark.parametrize("vector", [v for v in LOGINS if v["rejected"] is None],
                         ids=lambda v: v["case"])
def test_fixture_login_shown_another_challenge_is_refused(vector: dict[str, Any]) -> None:
    with pytest.raises(SignatureError):
        verify_login(PublicKey.from_openssh(vector["public_key"]), challenge=CHALLENGE[::-1],
                     fingerprint=vector["fingerprint"], signature=vector["signature"])


@pytest.mark.parametrize("vector", [v for v in LOGINS if v["rejected"] is None],
                         ids=lambda v: v["case"])
def test_fixture_login_passes_ssh_keygen_verify(vector: dict[str, Any], workdir: Path) -> None:
    message = base64.b64decode(vector["canonical_b64"])
    blob = base64.b64decode(vector["signature"])
    done = verify_with_ssh_keygen(vector["public_key"], NS_LOGIN, message, blob, workdir)
    assert done.returncode == 0, done.stderr


def test_fixture_logins_cover_every_key_kind_both_makers_and_every_reason() -> None:
    accepted = [v for v in LOGINS if v["rejected"] is None]
    kinds = {PublicKey.from_openssh(v["public_key"]).key_type for v in accepted}
    assert kinds == {"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                     "ecdsa-sha2-nistp521"}
    assert {v["made_by"] for v in accepted} == {"ssh-keygen", "dragoon"}
    assert {v["hash"] for v in accepted} == {"sha512", "sha256"}
    assert {v["rejected"] for v in LOGINS} == {None, *REASONS}


# --- live parity with OpenSSH ------------------------------------------------------------------

def test_sign_login_passes_ssh_keygen_verify_in_the_login_namespace(
        key_path: Path, workdir: Path) -> None:
    signer = KeyFileSigner.from_file(key_path)
    signature = sign_login(signer, challenge=CHALLENGE, fingerprint=signer.fingerprint)
    message = login_string(CHALLENGE, signer.fingerprint)
    blob = sshsig.decode_b64(signature)
    line = public_line(Path(f"{key_path}.pub"))
    done = verify_with_ssh_keygen(line, NS_LOGIN, message, blob, workdir)
    assert done.returncode == 0, done.stderr
    assert check_novalidate(NS_LOGIN, message, blob, workdir).returncode == 0


def test_ssh_keygen_refuses_sign_login_in_the_request_namespace(key_path: Path, workdir: Path
                                                                ) -> None:
    signer = KeyFileSigner.from_file(key_path)
    signature = sign_login(signer, challenge=CHALLENGE, fingerprint=signer.fingerprint)
    line = public_line(Path(f"{key_path}.pub"))
    done = verify_with_ssh_keygen(line, NS_REQUEST, login_string(CHALLENGE, signer.fingerprint),
                                  sshsig.decode_b64(signature), workdir)
    assert done.returncode != 0


def test_an_ssh_keygen_login_verifies(key_path: Path, public_key: PublicKey) -> None:
    message = login_string(CHALLENGE, public_key.fingerprint)
    blob = sign_with_ssh_keygen(key_path, NS_LOGIN, message)
    verify_login(public_key, challenge=CHALLENGE, fingerprint=public_key.fingerprint,
                 signature=sshsig.encode_b64(blob))
    armored = sshsig.armor(blob)  # what `ssh-keygen -Y sign` prints, pasted as is
    verify_login(public_key, challenge=CHALLENGE, fingerprint=public_key.fingerprint,
                 signature=armored)


def test_an_ssh_keygen_signature_in_the_request_namespace_is_refused(
        key_path: Path, public_key: PublicKey) -> None:
    blob = sign_with_ssh_keygen(key_path, NS_REQUEST,
                                login_string(CHALLENGE, public_key.fingerprint))
    detail = _refused(public_key, signature=sshsig.encode_b64(blob))
    assert detail == f"signature is for namespace {NS_REQUEST!r}, not {NS_LOGIN!r}"


def test_sign_login_is_ssh_keygens_bytes_for_ed25519(keys: KeyMaker) -> None:
    path = keys.make("ed25519")  # ed25519 is deterministic: the same bytes, or a bug
    signer = KeyFileSigner.from_file(path)
    ours = sign_login(signer, challenge=CHALLENGE, fingerprint=signer.fingerprint)
    theirs = sign_with_ssh_keygen(path, NS_LOGIN, login_string(CHALLENGE, signer.fingerprint))
    assert sshsig.decode_b64(ours) == theirs


def test_a_login_signed_through_the_ssh_agent_verifies(agent: SshAgent, public_key: PublicKey
                                                       ) -> None:
    signer = AgentSigner.for_key(public_key, str(agent.socket_path))
    signature = sign_login(signer, challenge=CHALLENGE, fingerprint=signer.fingerprint)
    verify_login(public_key, challenge=CHALLENGE, fingerprint=public_key.fingerprint,
                 signature=signature)


# --- the relay's side: a hostile client --------------------------------------------------------

def _signed(challenge: str = CHALLENGE, signer: KeyFileSigner = PILOT) -> str:
    return sign_login(signer, challenge=challenge, fingerprint=signer.fingerprint)


def test_a_login_round_trips() -> None:
    verify_login(PILOT.public_key, challenge=CHALLENGE, fingerprint=PILOT.fingerprint,
                 signature=_signed())


def test_a_login_for_another_challenge_is_refused() -> None:
    detail = _refused(PILOT.public_key, challenge=CHALLENGE[1:], signature=_signed())
    assert detail == "signature does not verify against the key"


def test_a_login_signed_by_another_key_is_refused() -> None:
    detail = _refused(PILOT.public_key, signature=_signed(signer=OTHER))
    assert detail == f"signed by {OTHER.fingerprint}, expected {PILOT.fingerprint}"


def test_a_fingerprint_that_is_not_the_keys_is_refused_before_the_signature() -> None:
    signature = sign_login(PILOT, challenge=CHALLENGE, fingerprint=OTHER.fingerprint)
    detail = _refused(PILOT.public_key, fingerprint=OTHER.fingerprint, signature=signature)
    assert detail == f"login names {OTHER.fingerprint}, the key is {PILOT.fingerprint}"


@pytest.mark.parametrize("challenge", [CHALLENGE + "\nSHA256:x", "a\rb", "\n"])
def test_a_challenge_with_a_line_break_is_refused_not_raised(challenge: str) -> None:
    detail = _refused(PILOT.public_key, challenge=challenge, signature=_signed())
    assert detail.startswith("login cannot be checked as sent: challenge must not contain")


@pytest.mark.parametrize("signature", ["", "not base64!", "AAAA",
                                       base64.b64encode(b"SSHSIG").decode()])
def test_a_signature_that_is_no_sshsig_is_refused_not_raised(signature: str) -> None:
    assert _refused(PILOT.public_key, signature=signature)


@pytest.mark.parametrize("challenge", ["a\nb", "c\r"])
def test_sign_login_refuses_a_challenge_with_a_line_break(challenge: str) -> None:
    with pytest.raises(ValueError, match="challenge must not contain a line break"):
        sign_login(PILOT, challenge=challenge, fingerprint=PILOT.fingerprint)
