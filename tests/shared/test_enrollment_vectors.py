"""fixtures/enrollments.json: the join-v2 token, the relay's v1 half, the drone's certificate of
its X25519 key and the enrollment binding, as docs/protocol.md writes them, made by
fixtures/make_fixtures.py from ssh-keygen and the stdlib, and read back here by shared/."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from dragoon.shared.enrollment import JoinToken
from dragoon.shared.keys import PrivateKey, PublicKey
from dragoon.shared.sshsig import armor, decode_b64
from dragoon.shared.trust import (
    NS_DRONE_KEY,
    binding_holds,
    binding_message,
    certify_x25519,
    check_x25519_certificate,
    make_binding,
    parse_x25519,
)

from tests.shared.conftest import load_vectors

VECTORS = load_vectors("enrollments.json")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["case"])
def test_the_token_decodes_and_encodes_to_the_vector(vector: dict[str, Any]) -> None:
    fields = vector["token_json"]
    token = JoinToken.decode(vector["token"])
    assert (token.relay, token.drone, token.secret, token.relay_key) == (
        fields["relay"], fields["drone"], fields["secret"], fields["relay_key"])
    assert list(token.pilots) == fields["pilots"]
    expected_key = _unb64url(fields["binding_key"]) if "binding_key" in fields else None
    assert token.binding_key == expected_key
    assert token.encode() == vector["token"]
    assert token.relay_half() == vector["relay_half"]
    half = JoinToken.decode(vector["relay_half"])
    assert half.pilots == () and half.binding_key is None


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["case"])
def test_the_x25519_certificate_verifies(vector: dict[str, Any]) -> None:
    key = PublicKey.from_openssh(vector["public_key"])
    x25519 = parse_x25519(vector["x25519_public_key"])
    check_x25519_certificate(key, x25519, vector["x25519_signature"])


@pytest.mark.parametrize("vector", [v for v in VECTORS if "binding" in v],
                         ids=lambda v: v["case"])
def test_the_binding_is_the_vectors(vector: dict[str, Any]) -> None:
    key = PublicKey.from_openssh(vector["public_key"])
    x25519 = parse_x25519(vector["x25519_public_key"])
    binding_key = _unb64url(vector["binding_key_b64url"])
    assert binding_message(vector["drone"], key, x25519) == base64.b64decode(
        vector["binding_message_b64"])
    assert make_binding(binding_key, vector["drone"], key, x25519) == vector["binding"]
    assert binding_holds(binding_key, vector["drone"], key, x25519, vector["binding"])


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
def test_ssh_keygen_verifies_a_certificate_dragoon_makes(tmp_path: Path) -> None:
    drone = PrivateKey.generate_ed25519()
    x25519 = parse_x25519(VECTORS[0]["x25519_public_key"])
    signature = tmp_path / "cert.sig"
    signature.write_text(armor(decode_b64(certify_x25519(drone, x25519))))
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"drone@dragoon {drone.public_key.openssh(with_comment=False)}\n")
    done = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I",
                           "drone@dragoon", "-n", NS_DRONE_KEY, "-s", str(signature)],
                          input=VECTORS[0]["x25519_public_key"].encode(), capture_output=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
