"""fixtures/recipients.json: pilots' certificates of their X25519 keys and a drone's signed
pilots list (docs/protocol.md, "Recipients"), made by fixtures/make_fixtures.py with
``ssh-keygen -Y sign`` from the documented text, and read back here by shared/; and the
other way, what dragoon signs ``ssh-keygen -Y verify`` accepts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from dragoon.shared.constants import NS_DRONE_PILOTS, NS_PILOT_KEY
from dragoon.shared.errors import SignatureError
from dragoon.shared.keys import PrivateKey, PublicKey
from dragoon.shared.pilots_list import (
    certify_pilot_x25519,
    check_pilot_x25519_certificate,
    check_pilots_list,
    make_pilots_list,
    parse_pilots_list,
    sign_pilots_list,
)
from dragoon.shared.signers import KeyFileSigner
from dragoon.shared.sshsig import armor, decode_b64
from dragoon.shared.trust import parse_x25519

from tests.shared.conftest import load_vectors

VECTORS = load_vectors("recipients.json")
CERTS = [v for v in VECTORS if v["kind"] == "pilot_certificate"]
LISTS = [v for v in VECTORS if v["kind"] == "pilots_list"]


@pytest.mark.parametrize("vector", CERTS, ids=lambda v: v["case"])
def test_a_pilot_certificate_is_checked_as_the_vector_says(vector: dict[str, Any]) -> None:
    key = PublicKey.from_openssh(vector["public_key"])
    x25519 = parse_x25519(vector["x25519_public_key"])
    if vector["accepted"]:
        check_pilot_x25519_certificate(key, x25519, vector["x25519_signature"])
    else:
        with pytest.raises(SignatureError):
            check_pilot_x25519_certificate(key, x25519, vector["x25519_signature"])


@pytest.mark.parametrize("vector", LISTS, ids=lambda v: v["case"])
def test_a_pilots_list_is_the_vectors_text_and_checked_as_it_says(
        vector: dict[str, Any]) -> None:
    drone = PublicKey.from_openssh(vector["public_key"])
    pilots = [PublicKey.from_openssh(line) for line in vector["pilots"]]
    built = make_pilots_list(vector["drone"], vector["version"], pilots)
    assert built.text() == vector["list"]
    assert parse_pilots_list(vector["list"]) == built
    if vector["accepted"]:
        assert check_pilots_list(drone, vector["list"], vector["signature"]) == built
    else:
        with pytest.raises(SignatureError):
            check_pilots_list(drone, vector["list"], vector["signature"])


def _ssh_verify(tmp_path: Path, key: PublicKey, namespace: str, signature: str,
                message: bytes) -> subprocess.CompletedProcess[bytes]:
    sig = tmp_path / "check.sig"
    sig.write_text(armor(decode_b64(signature)))
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"signer@dragoon {key.openssh(with_comment=False)}\n")
    return subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I",
                           "signer@dragoon", "-n", namespace, "-s", str(sig)],
                          input=message, capture_output=True, timeout=60, check=False)


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
def test_ssh_keygen_verifies_what_dragoon_signs(tmp_path: Path) -> None:
    signer = KeyFileSigner(PrivateKey.generate_ed25519())
    x25519 = CERTS[0]["x25519_public_key"]
    done = _ssh_verify(tmp_path, signer.public_key, NS_PILOT_KEY,
                       certify_pilot_x25519(signer, parse_x25519(x25519)), x25519.encode())
    assert done.returncode == 0, done.stderr
    listing = make_pilots_list("box-1", 42, [PublicKey.from_openssh(LISTS[0]["pilots"][0])])
    done = _ssh_verify(tmp_path, signer.public_key, NS_DRONE_PILOTS,
                       sign_pilots_list(signer, listing), listing.text().encode())
    assert done.returncode == 0, done.stderr
