"""shared.sshsig: SSHSIG byte for byte as ``ssh-keygen -Y`` makes and checks it.

Parity with fixtures/signatures.json, live interop with ssh-keygen in both
directions, and every way a signature can be wrong ending as a SignatureError.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import random
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from dragoon.shared import _wire, sshsig
from dragoon.shared.constants import NS_LOGIN, NS_REQUEST, NS_SUBMIT, NS_TASK
from dragoon.shared.errors import SignatureError
from dragoon.shared.keys import PublicKey, load_private_key_file
from dragoon.shared.signers import KeyFileSigner

from tests.shared.conftest import load_vectors
from tests.support.keys import (
    KeyMaker,
    check_novalidate,
    public_line,
    sign_with_ssh_keygen,
    verify_with_ssh_keygen,
)

SIGNATURES = load_vectors("signatures.json")
MESSAGE = "RE-V1\nPOST\n/v1/tasks\n\n1763900000\nnonce\nSHA256:x\nbody ✓".encode()


def _vector_id(vector: dict[str, Any]) -> str:
    return f"{vector['key_type']}-{vector['made_by']}-{vector['hash']}"


def _sshsig(key_blob: bytes, namespace: str, inner: bytes, *, hash_algorithm: str = "sha512",
            magic: bytes = b"SSHSIG", version: int = 1) -> bytes:
    """An SSHSIG blob assembled field by field, to make the damaged ones OpenSSH never would."""
    return (magic + _wire.uint32(version) + _wire.string(key_blob) + _wire.string(namespace)
            + _wire.string(b"") + _wire.string(hash_algorithm) + _wire.string(inner))


# --- parity with the fixtures -------------------------------------------------------------------

@pytest.mark.parametrize("vector", SIGNATURES, ids=_vector_id)
def test_fixture_signature_verifies(vector: dict[str, Any]) -> None:
    key = PublicKey.from_openssh(vector["public_key"])
    message = base64.b64decode(vector["message_b64"])
    signer = sshsig.verify_b64(vector["signature"], vector["namespace"], message, key)
    assert signer.blob == key.blob
    parsed = sshsig.parse(sshsig.decode_b64(vector["signature"]))
    assert (parsed.namespace, parsed.hash_algorithm) == (vector["namespace"], vector["hash"])


@pytest.mark.parametrize("vector", SIGNATURES, ids=_vector_id)
def test_fixture_signature_in_another_namespace_is_rejected(vector: dict[str, Any]) -> None:
    message = base64.b64decode(vector["message_b64"])
    other = NS_LOGIN if vector["namespace"] != NS_LOGIN else NS_REQUEST
    with pytest.raises(SignatureError, match=f"is for namespace '{vector['namespace']}'"):
        sshsig.verify_b64(vector["signature"], other, message)


@pytest.mark.parametrize("vector", SIGNATURES, ids=_vector_id)
def test_fixture_signature_over_other_bytes_is_rejected(vector: dict[str, Any]) -> None:
    message = base64.b64decode(vector["message_b64"]) + b"."
    with pytest.raises(SignatureError, match="does not verify"):
        sshsig.verify_b64(vector["signature"], vector["namespace"], message)


@pytest.mark.parametrize("vector", SIGNATURES, ids=_vector_id)
def test_fixture_signature_passes_ssh_keygen_check_novalidate(
    vector: dict[str, Any], workdir: Path
) -> None:
    done = check_novalidate(vector["namespace"], base64.b64decode(vector["message_b64"]),
                            base64.b64decode(vector["signature"]), workdir)
    assert done.returncode == 0, done.stderr


def test_fixtures_hold_both_makers_for_every_key_type() -> None:
    pairs = {(v["key_type"], v["made_by"]) for v in SIGNATURES}
    kinds = {v["key_type"] for v in SIGNATURES}
    assert pairs == {(k, m) for k in kinds for m in ("ssh-keygen", "dragoon")}
    assert len(kinds) == 5


def test_project_signature_is_deterministic_for_ed25519(keys: KeyMaker) -> None:
    # ed25519 is deterministic, so dragoon must reproduce ssh-keygen's bytes exactly.
    path = keys.make("ed25519")
    ours = KeyFileSigner.from_file(path).sign(NS_TASK, MESSAGE)
    assert ours == sign_with_ssh_keygen(path, NS_TASK, MESSAGE)


# --- live interop with ssh-keygen -------------------------------------------------------------

def test_project_signature_passes_ssh_keygen_check_novalidate(
    key_path: Path, workdir: Path
) -> None:
    blob = KeyFileSigner.from_file(key_path).sign(NS_REQUEST, MESSAGE)
    done = check_novalidate(NS_REQUEST, MESSAGE, blob, workdir)
    assert done.returncode == 0, done.stderr


def test_project_signature_passes_ssh_keygen_verify_with_allowed_signers(
    key_path: Path, workdir: Path
) -> None:
    blob = KeyFileSigner.from_file(key_path).sign(NS_LOGIN, MESSAGE)
    pub = public_line(Path(f"{key_path}.pub"))
    done = verify_with_ssh_keygen(pub, NS_LOGIN, MESSAGE, blob, workdir)
    assert done.returncode == 0, done.stderr
    assert b"Good" in done.stdout + done.stderr


def test_ssh_keygen_refuses_a_project_signature_in_another_namespace(
    key_path: Path, workdir: Path
) -> None:
    blob = KeyFileSigner.from_file(key_path).sign(NS_REQUEST, MESSAGE)
    assert check_novalidate(NS_LOGIN, MESSAGE, blob, workdir).returncode != 0


@pytest.mark.parametrize("hash_algorithm", ["sha512", "sha256"])
def test_ssh_keygen_signature_verifies_in_the_project(
    key_path: Path, public_key: PublicKey, hash_algorithm: str
) -> None:
    blob = sign_with_ssh_keygen(key_path, NS_TASK, MESSAGE, hash_algorithm=hash_algorithm)
    assert sshsig.verify(blob, NS_TASK, MESSAGE, public_key) == public_key


def test_armored_ssh_keygen_output_is_accepted_by_decode_b64(key_path: Path) -> None:
    blob = sign_with_ssh_keygen(key_path, NS_TASK, MESSAGE)
    assert sshsig.decode_b64(sshsig.armor(blob)) == blob
    assert sshsig.decode_b64("  " + sshsig.encode_b64(blob) + "\n") == blob


def test_project_armor_is_read_by_ssh_keygen(keys: KeyMaker, workdir: Path) -> None:
    path = keys.make("ed25519")
    blob = KeyFileSigner.from_file(path).sign(NS_SUBMIT, MESSAGE)
    sig = workdir / "armored.sig"
    sig.write_text(sshsig.armor(blob), encoding="ascii")
    assert sig.read_text().splitlines()[0] == sshsig.ARMOR_BEGIN
    assert all(len(line) <= 70 for line in sig.read_text().splitlines())
    assert check_novalidate(NS_SUBMIT, MESSAGE, blob, workdir).returncode == 0


# --- namespaces --------------------------------------------------------------------------------

@pytest.mark.parametrize(("signed_for", "presented_as"), [
    (NS_REQUEST, NS_LOGIN), (NS_LOGIN, NS_REQUEST), (NS_TASK, NS_REQUEST),
    (NS_REQUEST, NS_TASK), (NS_SUBMIT, NS_TASK), ("file", NS_REQUEST),
])
def test_replayed_namespace_is_rejected(keys: KeyMaker, signed_for: str, presented_as: str
                                        ) -> None:
    blob = sign_with_ssh_keygen(keys.make("ed25519"), signed_for, MESSAGE)
    with pytest.raises(SignatureError, match=f"namespace '{signed_for}', not '{presented_as}'"):
        sshsig.verify(blob, presented_as, MESSAGE)


# --- bad signatures ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good(keys: KeyMaker) -> tuple[bytes, PublicKey]:
    path = keys.make("ed25519")
    signer = KeyFileSigner.from_file(path)
    return signer.sign(NS_REQUEST, MESSAGE), signer.public_key


def test_every_truncation_is_a_signature_error(good: tuple[bytes, PublicKey]) -> None:
    blob, _key = good
    for length in range(len(blob)):
        with pytest.raises(SignatureError, match=r"truncated|wrong magic"):
            sshsig.verify(blob[:length], NS_REQUEST, MESSAGE)


def test_trailing_bytes_are_rejected(good: tuple[bytes, PublicKey]) -> None:
    with pytest.raises(SignatureError, match="1 trailing bytes"):
        sshsig.verify(good[0] + b"\x00", NS_REQUEST, MESSAGE)


def test_wrong_magic_is_rejected(good: tuple[bytes, PublicKey]) -> None:
    with pytest.raises(SignatureError, match=r"not an SSHSIG blob \(wrong magic\)"):
        sshsig.verify(b"SSHSIH" + good[0][6:], NS_REQUEST, MESSAGE)


def test_unknown_version_is_rejected(good: tuple[bytes, PublicKey]) -> None:
    blob, key = good
    parsed = sshsig.parse(blob)
    damaged = _sshsig(key.blob, NS_REQUEST, parsed.signature, version=2)
    with pytest.raises(SignatureError, match="unsupported SSHSIG version 2"):
        sshsig.verify(damaged, NS_REQUEST, MESSAGE)


@pytest.mark.parametrize("hash_algorithm", ["sha1", "md5", "sha384", "SHA512", ""])
def test_unknown_hash_is_rejected(keys: KeyMaker, hash_algorithm: str) -> None:
    private = load_private_key_file(keys.make("ed25519"))
    # A correct signature over the signed-data with that hash name, so only the name is wrong.
    digest = hashlib.sha512(MESSAGE).digest()
    signed = (b"SSHSIG" + _wire.string(NS_REQUEST) + _wire.string(b"")
              + _wire.string(hash_algorithm) + _wire.string(digest))
    blob = _sshsig(private.public_key.blob, NS_REQUEST, private.sign_ssh(signed),
                   hash_algorithm=hash_algorithm)
    with pytest.raises(SignatureError, match=f"unsupported hash algorithm '{hash_algorithm}'"):
        sshsig.verify(blob, NS_REQUEST, MESSAGE)


def test_signature_by_another_key_is_rejected(keys: KeyMaker, good: tuple[bytes, PublicKey]
                                              ) -> None:
    blob, key = good
    other = load_private_key_file(keys.make("ecdsa-p256")).public_key
    with pytest.raises(SignatureError) as caught:
        sshsig.verify(blob, NS_REQUEST, MESSAGE, other)
    assert str(caught.value) == f"signed by {key.fingerprint}, expected {other.fingerprint}"


def test_signature_claiming_another_key_does_not_verify(
    keys: KeyMaker, good: tuple[bytes, PublicKey]
) -> None:
    # The inner signature is by key A, the SSHSIG says key B (same type).
    blob, _key = good
    other = load_private_key_file(keys.make("ed25519", name="ed25519-other")).public_key
    swapped = _sshsig(other.blob, NS_REQUEST, sshsig.parse(blob).signature)
    with pytest.raises(SignatureError, match="does not verify against the key"):
        sshsig.verify(swapped, NS_REQUEST, MESSAGE, other)


def test_inner_algorithm_of_another_key_type_is_rejected(
    keys: KeyMaker, good: tuple[bytes, PublicKey]
) -> None:
    blob, _key = good
    rsa_key = load_private_key_file(keys.make("rsa")).public_key
    mixed = _sshsig(rsa_key.blob, NS_REQUEST, sshsig.parse(blob).signature)
    with pytest.raises(SignatureError, match="ssh-ed25519 signature for an RSA key"):
        sshsig.verify(mixed, NS_REQUEST, MESSAGE)


def test_ssh_rsa_sha1_inner_signature_is_rejected(keys: KeyMaker) -> None:
    private = load_private_key_file(keys.make("rsa"))
    signed = sshsig.signed_data(NS_REQUEST, MESSAGE)
    sha1 = hashes.SHA1()  # noqa: S303 - the SHA-1 signature an old client would make
    raw = private._key.sign(signed, padding.PKCS1v15(), sha1)  # type: ignore[union-attr]
    blob = _sshsig(private.public_key.blob, NS_REQUEST, _wire.string("ssh-rsa") + _wire.string(raw))
    with pytest.raises(SignatureError, match=r"ssh-rsa \(SHA-1\) signatures are not accepted"):
        sshsig.verify(blob, NS_REQUEST, MESSAGE)


def test_signing_key_under_2048_bits_is_rejected(keys: KeyMaker, workdir: Path) -> None:
    small = keys.make("rsa-1024")
    blob = sign_with_ssh_keygen(small, NS_REQUEST, MESSAGE)
    assert check_novalidate(NS_REQUEST, MESSAGE, blob, workdir).returncode == 0  # OpenSSH would
    with pytest.raises(SignatureError, match="RSA key of 1024 bits is too small"):
        sshsig.verify(blob, NS_REQUEST, MESSAGE)


def test_unsupported_signing_key_type_is_rejected(good: tuple[bytes, PublicKey]) -> None:
    ed448 = _wire.string("ssh-ed448") + _wire.string(bytes(57))
    blob = _sshsig(ed448, NS_REQUEST, sshsig.parse(good[0]).signature)
    with pytest.raises(SignatureError, match="unsupported key type 'ssh-ed448'"):
        sshsig.verify(blob, NS_REQUEST, MESSAGE)


@pytest.mark.parametrize(("text", "reason"), [
    ("not base64 at all!", "signature is not valid base64"),
    ("U1NIU0lH=AAA", "signature is not valid base64"),
    ("", "wrong magic"),
    (base64.b64encode(b"hello").decode(), "wrong magic"),
    (f"{sshsig.ARMOR_BEGIN}\nU1NIU0lH\n", "armored signature lacks its BEGIN/END lines"),
    (f"{sshsig.ARMOR_BEGIN}\n!!\n{sshsig.ARMOR_END}", "armored signature body is not valid"),
], ids=["garbage", "inner-padding", "empty", "not-sshsig", "no-end", "armored-garbage"])
def test_garbage_text_is_a_signature_error(text: str, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        sshsig.verify_b64(text, NS_REQUEST, MESSAGE)


def test_expected_key_is_reused_only_when_the_blob_names_it(
    keys: KeyMaker, good: tuple[bytes, PublicKey]
) -> None:
    blob, key = good
    assert sshsig.parse(blob, known_key=key).public_key is key
    other = load_private_key_file(keys.make("ecdsa-p256")).public_key
    parsed = sshsig.parse(blob, known_key=other)
    assert parsed.public_key is not other and parsed.public_key == key


def test_namespace_must_not_be_empty(good: tuple[bytes, PublicKey]) -> None:
    # A programming error, not bad input: an empty namespace would match nothing useful.
    with pytest.raises(ValueError, match="must not be empty"):
        sshsig.verify(good[0], "", MESSAGE)


def test_damaged_signatures_raise_only_signature_errors(key_path: Path) -> None:
    # Found a real escape: a damaged ECDSA point made cryptography raise NotImplementedError.
    blob = KeyFileSigner.from_file(key_path).sign(NS_REQUEST, MESSAGE)
    rng = random.Random(len(blob))
    for _ in range(300):
        damaged = bytearray(blob)
        for _flip in range(rng.randrange(1, 3)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        with contextlib.suppress(SignatureError):
            sshsig.verify(bytes(damaged), NS_REQUEST, MESSAGE)
