"""shared.agent: the ssh-agent client against a real OpenSSH agent, and agents that misbehave.

A real ``ssh-agent`` (started by the test on its own socket) covers the
normal path; ``FakeAgent``, a real socket server, covers refusals and
nonsense that a real agent cannot be made to produce on demand.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dragoon.shared import _wire, sshsig
from dragoon.shared.agent import (
    SSH_AGENT_FAILURE,
    SSH_AGENT_IDENTITIES_ANSWER,
    SSH_AGENT_SIGN_RESPONSE,
    SSH_AGENTC_REQUEST_IDENTITIES,
    SSH_AGENTC_SIGN_REQUEST,
    AgentClient,
)
from dragoon.shared.constants import NS_REQUEST
from dragoon.shared.errors import AgentError, SignatureError
from dragoon.shared.keys import PrivateKey, PublicKey, load_public_key_file

from tests.support.agent import FakeAgent, SshAgent, agent_sign_raw, frame
from tests.support.keys import ACCEPTED_KINDS, KeyMaker, sha1_rsa_signature, sign_with_ssh_keygen


def _identities_answer(*entries: tuple[bytes, str]) -> bytes:
    body = bytes([SSH_AGENT_IDENTITIES_ANSWER]) + _wire.uint32(len(entries))
    for blob, comment in entries:
        body += _wire.string(blob) + _wire.string(comment)
    return frame(body)


def test_agent_lists_every_loaded_key_with_its_comment(agent: SshAgent, keys: KeyMaker) -> None:
    listed = AgentClient(str(agent.socket_path)).identities()
    expected = [load_public_key_file(keys.public(kind)) for kind in ACCEPTED_KINDS]
    assert listed == expected
    assert [k.comment for k in listed] == [k.comment for k in expected]


def test_agent_signature_verifies_against_the_key(agent: SshAgent, public_key: PublicKey) -> None:
    signature = AgentClient(str(agent.socket_path)).sign(public_key, b"data")
    public_key.verify_ssh_signature(signature, b"data")


def test_rsa_keys_are_asked_for_rsa_sha2_512(agent: SshAgent, keys: KeyMaker) -> None:
    rsa_key = load_public_key_file(keys.public("rsa"))
    signature = AgentClient(str(agent.socket_path)).sign(rsa_key, b"data")
    assert _wire.WireReader(signature).text() == "rsa-sha2-512"


def test_ssh_rsa_sha1_signature_from_the_agent_is_refused(agent: SshAgent, keys: KeyMaker
                                                          ) -> None:
    # Flags 0 is what a pre-SHA-2 client sends; OpenSSH's agent then signs with ssh-rsa.
    # Should a future agent refuse, the same signature is made with cryptography instead.
    rsa_key = load_public_key_file(keys.public("rsa"))
    signed = sshsig.signed_data(NS_REQUEST, b"message")
    try:
        signature = agent_sign_raw(agent.socket_path, rsa_key.blob, signed, flags=0)
    except RuntimeError:
        signature = sha1_rsa_signature(keys.make("rsa"), signed)
    assert _wire.WireReader(signature).text() == "ssh-rsa"
    with pytest.raises(SignatureError, match=r"ssh-rsa \(SHA-1\) signatures are not accepted"):
        rsa_key.verify_ssh_signature(signature, signed)
    blob = (sshsig.MAGIC + _wire.uint32(1) + _wire.string(rsa_key.blob) + _wire.string(NS_REQUEST)
            + _wire.string(b"") + _wire.string("sha512") + _wire.string(signature))
    with pytest.raises(SignatureError, match="SHA-1"):
        sshsig.verify(blob, NS_REQUEST, b"message", rsa_key)


def test_ssh_keygen_signing_through_the_agent_verifies_in_the_project(
    agent: SshAgent, key_path: Path, public_key: PublicKey, tmp_path: Path
) -> None:
    # Only the public key is given: ssh-keygen has to use the agent.
    pub_only = tmp_path / "agent-only.pub"
    pub_only.write_text(public_key.openssh() + "\n", encoding="ascii")
    blob = sign_with_ssh_keygen(pub_only, NS_REQUEST, b"message", env=agent.env)
    assert sshsig.verify(blob, NS_REQUEST, b"message", public_key) == public_key


def test_key_not_in_the_agent_is_refused(agent: SshAgent) -> None:
    stranger = PrivateKey.generate_ed25519().public_key
    with pytest.raises(AgentError) as caught:
        AgentClient(str(agent.socket_path)).sign(stranger, b"data")
    assert str(caught.value) == f"ssh-agent refused to sign with {stranger.fingerprint}"


def test_missing_ssh_auth_sock_is_an_agent_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(AgentError, match="no ssh-agent: SSH_AUTH_SOCK is not set"):
        AgentClient()


def test_ssh_auth_sock_is_used_when_no_path_is_given(
    agent: SshAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSH_AUTH_SOCK", str(agent.socket_path))
    assert len(AgentClient().identities()) == len(ACCEPTED_KINDS)


@pytest.mark.parametrize("target", ["missing", "regular-file"])
def test_socket_pointing_nowhere_is_an_agent_error(tmp_path: Path, target: str) -> None:
    path = tmp_path / "agent.sock"
    if target == "regular-file":
        path.write_text("not a socket")
    with pytest.raises(AgentError, match=f"^ssh-agent at {re.escape(str(path))}: "):
        AgentClient(str(path)).identities()


def test_agent_refusing_to_list_keys_is_an_agent_error() -> None:
    refused = r"refused to list keys \(answer type 5\)"
    with FakeAgent() as fake, pytest.raises(AgentError, match=refused):
        AgentClient(str(fake.socket_path)).identities()


def test_agent_refusing_to_sign_is_an_agent_error() -> None:
    key = PrivateKey.generate_ed25519().public_key
    with FakeAgent() as fake, pytest.raises(AgentError, match="refused to sign with SHA256:"):
        AgentClient(str(fake.socket_path)).sign(key, b"data")
    assert [kind for kind, _payload in fake.requests] == [SSH_AGENTC_SIGN_REQUEST]
    reader = _wire.WireReader(fake.requests[0][1])
    assert (reader.string(), reader.string(), reader.uint32()) == (key.blob, b"data", 0)


@pytest.mark.parametrize(("reply", "reason"), [
    (lambda _k, _p: None, "closed the connection mid-reply"),
    (lambda _k, _p: b"\x00\x00", "closed the connection mid-reply"),
    (lambda _k, _p: frame(b"\x0c\x00\x00"), "truncated"),
    (lambda _k, _p: b"\x00\x00\x00\x00", "reply of 0 bytes"),
    (lambda _k, _p: b"\xff\xff\xff\xff", "reply of 4294967295 bytes"),
    (lambda _k, _p: frame(bytes([SSH_AGENT_IDENTITIES_ANSWER]) + _wire.uint32(2)
                          + _wire.string(b"x") + _wire.string(b"c")), "truncated"),
    (lambda _k, _p: frame(bytes([SSH_AGENT_IDENTITIES_ANSWER]) + _wire.uint32(1)
                          + _wire.string(b"x") + _wire.string(b"\xff")), "not UTF-8"),
], ids=["closed", "short-length", "short-count", "empty", "huge", "count-too-high", "bad-comment"])
def test_agent_talking_nonsense_is_an_agent_error(reply: object, reason: str) -> None:
    with FakeAgent(reply=reply) as fake, pytest.raises(AgentError, match=reason):  # type: ignore[arg-type]
        AgentClient(str(fake.socket_path)).identities()


def test_keys_dragoon_cannot_use_are_skipped_in_the_listing() -> None:
    good = PrivateKey.generate_ed25519("good").public_key
    ed448 = _wire.string("ssh-ed448") + _wire.string(bytes(57))
    answer = _identities_answer((ed448, "unusable"), (good.blob, "good"))
    with FakeAgent(reply=lambda _k, _p: answer) as fake:
        assert AgentClient(str(fake.socket_path)).identities() == [good]
    assert fake.requests == [(SSH_AGENTC_REQUEST_IDENTITIES, b"")]


@pytest.mark.parametrize(("answer", "reason"), [
    (frame(bytes([6])), r"unexpected answer \(type 6\)"),
    (frame(bytes([SSH_AGENT_SIGN_RESPONSE]) + b"\x00\x00\x00\x09abc"), "truncated"),
    (frame(bytes([SSH_AGENT_SIGN_RESPONSE]) + _wire.string(b"sig") + b"!"), "trailing bytes"),
    (frame(bytes([SSH_AGENT_FAILURE])), "refused to sign"),
])
def test_agent_answering_a_sign_request_wrongly_is_an_agent_error(answer: bytes, reason: str
                                                                  ) -> None:
    key = PrivateKey.generate_ed25519().public_key
    with FakeAgent(reply=lambda _k, _p: answer) as fake, pytest.raises(AgentError, match=reason):
        AgentClient(str(fake.socket_path)).sign(key, b"data")
