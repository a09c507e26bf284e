"""shared.signers: key-file and ssh-agent signers make SSHSIGs that OpenSSH accepts.

The agent path is the one pilots use most; it is checked end to end with a
real ssh-agent and ``ssh-keygen -Y verify`` for every accepted key type.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from dragoon.shared import _wire, sshsig
from dragoon.shared.agent import (
    SSH_AGENT_IDENTITIES_ANSWER,
    SSH_AGENT_SIGN_RESPONSE,
    SSH_AGENTC_REQUEST_IDENTITIES,
)
from dragoon.shared.constants import NS_LOGIN, NS_REQUEST
from dragoon.shared.errors import AgentError, KeyLoadError
from dragoon.shared.keys import PrivateKey, PublicKey, load_private_key_file
from dragoon.shared.signers import AgentSigner, KeyFileSigner

from tests.support.agent import FakeAgent, SshAgent, frame, running_ssh_agent
from tests.support.keys import (
    KeyMaker,
    check_novalidate,
    public_line,
    sha1_rsa_signature,
    verify_with_ssh_keygen,
)

MESSAGE = b"RE-LOGIN-V1\nchallenge\nSHA256:whatever"


@pytest.fixture
def empty_agent() -> Iterator[SshAgent]:
    with running_ssh_agent() as agent:
        yield agent


def test_agent_signer_signature_passes_ssh_keygen_verify(
    agent: SshAgent, key_path: Path, public_key: PublicKey, workdir: Path
) -> None:
    signer = AgentSigner.for_key(public_key, str(agent.socket_path))
    blob = signer.sign(NS_LOGIN, MESSAGE)
    done = verify_with_ssh_keygen(public_line(Path(f"{key_path}.pub")), NS_LOGIN, MESSAGE, blob,
                                  workdir)
    assert done.returncode == 0, done.stderr
    assert sshsig.verify(blob, NS_LOGIN, MESSAGE, public_key) == public_key
    assert signer.fingerprint == public_key.fingerprint


def test_agent_signer_first_takes_the_agents_first_key(agent: SshAgent, keys: KeyMaker) -> None:
    signer = AgentSigner.first(str(agent.socket_path))
    assert signer.public_key == load_private_key_file(keys.make("ed25519")).public_key
    assert signer.public_key.comment == "ed25519@dragoon-tests"


def test_agent_without_keys_says_to_use_ssh_add(empty_agent: SshAgent) -> None:
    with pytest.raises(AgentError, match=r"holds no ed25519, RSA or ECDSA key \(try ssh-add\)"):
        AgentSigner.first(str(empty_agent.socket_path))


def test_agent_signer_for_a_key_the_agent_lacks_is_refused(agent: SshAgent) -> None:
    stranger = PrivateKey.generate_ed25519().public_key
    refusal = re.escape(f"ssh-agent does not hold {stranger.fingerprint}")
    with pytest.raises(AgentError, match=refusal):
        AgentSigner.for_key(stranger, str(agent.socket_path))


def test_key_removed_from_the_agent_makes_signing_fail_clearly(
    empty_agent: SshAgent, keys: KeyMaker
) -> None:
    empty_agent.add(keys.make("ed25519"))
    signer = AgentSigner.first(str(empty_agent.socket_path))
    empty_agent.remove_all()
    with pytest.raises(AgentError, match="ssh-agent refused to sign with SHA256:"):
        signer.sign(NS_REQUEST, MESSAGE)


def test_agent_gone_after_the_signer_was_made_is_an_agent_error(
    empty_agent: SshAgent, keys: KeyMaker
) -> None:
    empty_agent.add(keys.make("ed25519"))
    signer = AgentSigner.first(str(empty_agent.socket_path))
    empty_agent.stop()
    with pytest.raises(AgentError, match=re.escape(f"ssh-agent at {empty_agent.socket_path}")):
        signer.sign(NS_REQUEST, MESSAGE)


def _agent_answering(key: PublicKey, signature: bytes) -> FakeAgent:
    """An agent that lists ``key`` and answers every signature request with ``signature``."""
    def reply(kind: int, _payload: bytes) -> bytes:
        if kind == SSH_AGENTC_REQUEST_IDENTITIES:
            return frame(bytes([SSH_AGENT_IDENTITIES_ANSWER]) + _wire.uint32(1)
                         + _wire.string(key.blob) + _wire.string("fake"))
        return frame(bytes([SSH_AGENT_SIGN_RESPONSE]) + _wire.string(signature))

    return FakeAgent(reply=reply)


def test_agent_answering_ssh_rsa_sha1_is_refused(keys: KeyMaker) -> None:
    rsa_key = load_private_key_file(keys.make("rsa")).public_key
    sha1_signature = sha1_rsa_signature(keys.make("rsa"), b"anything")
    with _agent_answering(rsa_key, sha1_signature) as fake:
        signer = AgentSigner.first(str(fake.socket_path))
        with pytest.raises(AgentError, match=r"signed with ssh-rsa \(SHA-1\)"):
            signer.sign(NS_REQUEST, MESSAGE)


def test_agent_answering_with_another_keys_signature_is_refused() -> None:
    claimed = PrivateKey.generate_ed25519().public_key
    other = PrivateKey.generate_ed25519()
    with _agent_answering(claimed, other.sign_ssh(b"whatever")) as fake:
        signer = AgentSigner.first(str(fake.socket_path))
        with pytest.raises(AgentError, match="ssh-agent returned an invalid signature"):
            signer.sign(NS_REQUEST, MESSAGE)


def test_key_file_signer_signature_passes_ssh_keygen(key_path: Path, workdir: Path) -> None:
    signer = KeyFileSigner.from_file(key_path)
    blob = signer.sign(NS_REQUEST, MESSAGE)
    assert check_novalidate(NS_REQUEST, MESSAGE, blob, workdir).returncode == 0
    assert signer.fingerprint == signer.public_key.fingerprint


def test_key_file_signer_opens_an_encrypted_key_with_a_callable(keys: KeyMaker) -> None:
    path = keys.make("ed25519", passphrase="correct horse")
    signer = KeyFileSigner.from_file(path, passphrase=lambda: "correct horse")
    sshsig.verify(signer.sign(NS_REQUEST, MESSAGE), NS_REQUEST, MESSAGE, signer.public_key)


def test_key_file_signer_with_wrong_passphrase_names_the_file(keys: KeyMaker) -> None:
    path = keys.make("ed25519", passphrase="correct horse")
    with pytest.raises(KeyLoadError, match=f"^{re.escape(str(path))}: wrong passphrase$"):
        KeyFileSigner.from_file(path, passphrase=b"battery staple")


def test_agent_and_key_file_signers_agree_for_ed25519(agent: SshAgent, keys: KeyMaker) -> None:
    # ed25519 signatures are deterministic: the same key must give the same bytes either way.
    path = keys.make("ed25519")
    from_file = KeyFileSigner.from_file(path)
    via_agent = AgentSigner.for_key(from_file.public_key, str(agent.socket_path))
    assert from_file.sign(NS_REQUEST, MESSAGE) == via_agent.sign(NS_REQUEST, MESSAGE)
