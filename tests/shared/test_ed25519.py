"""ed25519 on libsodium (shared/ed25519.py), behind shared/keys.py: what OpenSSH makes and
checks, without cryptography.

A drone's key file (made by ``dragoon drone join``) and an ``ssh-keygen`` ed25519 key are
read, signed with and checked without importing cryptography; their signatures are
``ssh-keygen -Y``'s byte for byte and pass ``ssh-keygen -Y verify``. Keys that still need
cryptography to open (passphrase-protected, PKCS#8) sign through libsodium once open.
"""

from __future__ import annotations

import base64
import random
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519 as crypto_ed25519
from dragoon.shared import _wire, ed25519
from dragoon.shared.constants import NS_REQUEST, NS_TASK
from dragoon.shared.errors import KeyLoadError, SignatureError
from dragoon.shared.keys import PrivateKey, PublicKey, load_private_key_bytes, load_private_key_file
from dragoon.shared.signers import KeyFileSigner

from tests.support.keys import (
    KeyMaker,
    public_line,
    sign_with_ssh_keygen,
    ssh_keygen,
    verify_with_ssh_keygen,
)
from tests.support.relay import REPO

MESSAGE = b"RE-V1\nPOST\n/v1/worker/poll\n\n1763900000\nnonce\nSHA256:x\n"
PASSPHRASE = "correct horse"


def _libsodium_backed(key: PrivateKey) -> bool:
    return isinstance(key._key, ed25519.SigningKey)


def test_a_key_made_and_saved_by_dragoon_signs_what_ssh_keygen_verifies(
    tmp_path: Path
) -> None:
    """The drone's own key, as ``drone join`` makes it: saved, read back, signing."""
    path = tmp_path / "drone_key"
    PrivateKey.generate_ed25519("drone@box").save(path)
    loaded = load_private_key_file(path)
    assert _libsodium_backed(loaded)
    blob = KeyFileSigner(loaded).sign(NS_REQUEST, MESSAGE)
    done = verify_with_ssh_keygen(public_line(Path(f"{path}.pub")), NS_REQUEST, MESSAGE, blob,
                                  tmp_path)
    assert done.returncode == 0, done.stderr
    # ed25519 is deterministic: ssh-keygen, reading the same file, makes the same bytes.
    assert blob == sign_with_ssh_keygen(path, NS_REQUEST, MESSAGE)


def test_the_saved_file_is_read_alike_by_cryptography_and_ssh_keygen(tmp_path: Path) -> None:
    private = PrivateKey.generate_ed25519()
    path = tmp_path / "k"
    private.save(path)
    theirs = serialization.load_ssh_private_key(path.read_bytes(), None)
    assert isinstance(theirs, crypto_ed25519.Ed25519PrivateKey)
    assert PublicKey.from_crypto(theirs.public_key()) == private.public_key
    derived = ssh_keygen("-y", "-f", path).stdout.decode().split()[:2]
    assert " ".join(derived) == private.public_key.openssh(with_comment=False)


def test_an_ssh_keygen_key_file_is_read_and_used_without_importing_cryptography(
    keys: KeyMaker, tmp_path: Path
) -> None:
    """In a fresh process (this one has cryptography loaded): load, sign, verify, save."""
    path = keys.make("ed25519")
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "from dragoon.shared import sshsig\n"
        "from dragoon.shared.keys import PrivateKey, load_private_key_file, load_public_key_file\n"
        "from dragoon.shared.signers import KeyFileSigner\n"
        f"key = load_private_key_file({str(path)!r})\n"
        f"blob = KeyFileSigner(key).sign({NS_TASK!r}, {MESSAGE!r})\n"
        f"public = load_public_key_file({str(path) + '.pub'!r})\n"
        f"sshsig.verify(blob, {NS_TASK!r}, {MESSAGE!r}, public)\n"
        f"PrivateKey.generate_ed25519().save(Path({str(tmp_path / 'new')!r}))\n"
        "sys.stdout.write(blob.hex() + '\\n')\n"
        "sys.stdout.write(','.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, cwd=REPO, timeout=60)
    blob_hex, modules = done.stdout.splitlines()
    loaded = modules.split(",")
    assert [m for m in loaded if m.split(".")[0] in ("cryptography", "bcrypt")] == []
    assert "nacl.bindings" in loaded
    assert bytes.fromhex(blob_hex) == sign_with_ssh_keygen(path, NS_TASK, MESSAGE)


def test_a_passphrase_protected_ed25519_key_opens_with_cryptography_and_signs_with_libsodium(
    keys: KeyMaker, tmp_path: Path
) -> None:
    path = keys.make("ed25519", passphrase=PASSPHRASE)
    private = load_private_key_file(path, passphrase=PASSPHRASE)
    assert _libsodium_backed(private)
    blob = KeyFileSigner(private).sign(NS_TASK, MESSAGE)
    done = verify_with_ssh_keygen(public_line(Path(f"{path}.pub")), NS_TASK, MESSAGE, blob,
                                  tmp_path)
    assert done.returncode == 0, done.stderr


def test_a_pkcs8_ed25519_key_signs_as_cryptography_does() -> None:
    theirs = crypto_ed25519.Ed25519PrivateKey.generate()
    pem = theirs.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    ours = load_private_key_bytes(pem)
    assert _libsodium_backed(ours)
    signature = ours.sign_ssh(MESSAGE)
    assert signature == _wire.string("ssh-ed25519") + _wire.string(theirs.sign(MESSAGE))
    assert PublicKey.from_crypto(theirs.public_key()) == ours.public_key


def test_libsodium_and_cryptography_agree_on_every_damaged_signature() -> None:
    theirs = crypto_ed25519.Ed25519PrivateKey.generate()
    public = PublicKey.from_crypto(theirs.public_key())
    raw = theirs.sign(MESSAGE)
    for index in range(len(raw)):
        damaged = bytearray(raw)
        damaged[index] ^= 0x01
        with pytest.raises(SignatureError, match="does not verify"):
            public.verify_ssh_signature(_wire.string("ssh-ed25519") + _wire.string(bytes(damaged)),
                                        MESSAGE)
    for wrong_length in (raw[:63], raw + b"\x00", b""):
        with pytest.raises(SignatureError, match="does not verify"):
            public.verify_ssh_signature(_wire.string("ssh-ed25519") + _wire.string(wrong_length),
                                        MESSAGE)
    public.verify_ssh_signature(_wire.string("ssh-ed25519") + _wire.string(raw), MESSAGE)


def test_an_ed25519_public_blob_of_the_wrong_length_is_refused() -> None:
    for length in (31, 33):
        blob = _wire.string("ssh-ed25519") + _wire.string(bytes(length))
        with pytest.raises(KeyLoadError, match=rf"malformed ssh-ed25519 key \({length} bytes"):
            PublicKey.from_blob(blob)
    with pytest.raises(KeyLoadError, match=r"malformed ssh-ed25519 key.*trailing"):
        PublicKey.from_blob(_wire.string("ssh-ed25519") + _wire.string(bytes(32)) + b"x")


def _damaged(key_file: bytes, change: int) -> bytes:
    """The file with one byte of its private section flipped, ``change`` bytes from its end
    (the armor is decoded, changed and encoded again, so the base64 stays valid)."""
    lines = key_file.strip().splitlines()
    raw = bytearray(base64.b64decode(b"".join(lines[1:-1])))
    raw[len(raw) - change] ^= 0x01
    b64 = base64.b64encode(bytes(raw))
    return b"\n".join([lines[0], *(b64[i:i + 70] for i in range(0, len(b64), 70)),
                       lines[-1]]) + b"\n"


@pytest.mark.parametrize("change", [1, 20, 60, 90, 120], ids=lambda c: f"byte-{c}-from-end")
def test_a_damaged_unencrypted_ed25519_file_is_malformed_or_refused(change: int) -> None:
    """Padding, comment, secret, public copy or check bytes: never a key that is not the one
    the file names, and never an exception other than KeyLoadError."""
    private = PrivateKey.generate_ed25519()
    data = _damaged(private.openssh_private_bytes(), change)
    try:
        loaded = load_private_key_bytes(data, source="damaged")
    except KeyLoadError as exc:
        assert str(exc).startswith("damaged: malformed private key")
        return
    # Only the comment (empty here, so: its length field) or padding could be harmless.
    assert loaded.public_key == private.public_key
    assert loaded.sign_ssh(MESSAGE) == private.sign_ssh(MESSAGE)


def test_random_damage_to_an_ed25519_container_ends_as_key_load_error_or_the_same_key() -> None:
    """Truncations, flipped bytes and appended bytes of the decoded container (what a
    re-armored damaged file holds): only KeyLoadError escapes, and whatever loads is the key."""
    private = PrivateKey.generate_ed25519()
    lines = private.openssh_private_bytes().strip().splitlines()
    raw = base64.b64decode(b"".join(lines[1:-1]))
    rng = random.Random(12)
    for _ in range(400):
        mutated = bytearray(raw)
        choice = rng.randrange(3)
        if choice == 0:
            mutated = mutated[: rng.randrange(len(mutated))]
        elif choice == 1:
            for _flip in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        else:
            mutated += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        b64 = base64.b64encode(bytes(mutated))
        data = b"\n".join([lines[0], *(b64[i:i + 70] for i in range(0, len(b64), 70)),
                           lines[-1]]) + b"\n"
        try:
            loaded = load_private_key_bytes(data)
        except KeyLoadError:
            continue
        assert loaded.public_key == private.public_key
        assert loaded.sign_ssh(MESSAGE) == private.sign_ssh(MESSAGE)
