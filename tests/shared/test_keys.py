"""shared.keys: public keys and fingerprints as OpenSSH has them, private keys in every format.

Every bad input must end as a KeyLoadError (or SignatureError) naming the
source and the reason, never as an exception from cryptography or the stdlib.
"""

from __future__ import annotations

import base64
import contextlib
import random
import re
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from dragoon.shared import _wire
from dragoon.shared.errors import DragoonError, KeyLoadError, SignatureError
from dragoon.shared.keys import (
    PrivateKey,
    PublicKey,
    fingerprint_of_blob,
    load_private_key_bytes,
    load_private_key_file,
    load_public_key_file,
    public_half_of_private_file,
)

from tests.shared.conftest import load_vectors
from tests.support.keys import (
    KeyMaker,
    fingerprint_by_ssh_keygen,
    generate_key,
    public_line,
    reformat_key,
    ssh_keygen,
)

PASSPHRASE = "correct horse"


# --- fingerprints: fixtures and ssh-keygen -lf ---------------------------------------------

@pytest.mark.parametrize("vector", load_vectors("fingerprints.json"), ids=lambda v: v["key_type"])
def test_fingerprint_matches_the_fixture(vector: dict[str, str]) -> None:
    key = PublicKey.from_openssh(vector["public_key"])
    assert key.fingerprint == vector["fingerprint"]
    assert fingerprint_of_blob(key.blob) == vector["fingerprint"]


@pytest.mark.parametrize("vector", load_vectors("fingerprints.json"), ids=lambda v: v["key_type"])
def test_public_key_line_round_trips_with_its_comment(vector: dict[str, str]) -> None:
    key = PublicKey.from_openssh(vector["public_key"])
    assert key.openssh() == vector["public_key"]
    assert key.comment == vector["public_key"].split(None, 2)[2]
    assert key.openssh(with_comment=False) == " ".join(vector["public_key"].split()[:2])


def test_fixture_covers_every_accepted_key_type() -> None:
    types = {v["public_key"].split()[0] for v in load_vectors("fingerprints.json")}
    assert types == {"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                     "ecdsa-sha2-nistp521"}


def test_fingerprint_equals_ssh_keygen_lf(key_path: Path, public_key: PublicKey) -> None:
    assert public_key.fingerprint == fingerprint_by_ssh_keygen(Path(f"{key_path}.pub"))


def test_private_key_file_yields_the_public_key_and_comment(key_path: Path) -> None:
    private = load_private_key_file(key_path)
    assert private.public_key.openssh() == public_line(Path(f"{key_path}.pub"))


def test_key_without_comment_prints_two_fields(public_key: PublicKey) -> None:
    bare = PublicKey.from_openssh(public_key.openssh(with_comment=False))
    assert bare.comment == ""
    assert bare.openssh() == public_key.openssh(with_comment=False)
    assert bare == PublicKey.from_blob(public_key.blob)


def test_comment_with_spaces_is_kept_whole() -> None:
    key = PrivateKey.generate_ed25519().public_key
    line = f"{key.openssh(with_comment=False)}  pilot laptop (work) ✓ "
    assert PublicKey.from_openssh(line).comment == "pilot laptop (work) ✓"


@pytest.mark.parametrize("options", [
    "restrict",
    'from="10.0.0.*,192.168.1.1",no-pty',
    'command="echo \\"hi there\\" && true",no-agent-forwarding',
])
def test_authorized_keys_options_are_skipped(options: str) -> None:
    key = PrivateKey.generate_ed25519().public_key
    parsed = PublicKey.from_openssh(f"{options} {key.openssh(with_comment=False)} pilot@laptop")
    assert parsed == key
    assert parsed.comment == "pilot@laptop"


def test_unknown_first_field_is_still_named_when_no_key_follows() -> None:
    with pytest.raises(KeyLoadError, match="unsupported key type 'ssh-dss'"):
        PublicKey.from_openssh("ssh-dss AAAAB3NzaC1kc3M= old key")


def test_public_key_file_skips_comment_lines_and_blank_lines(tmp_path: Path) -> None:
    key = PrivateKey.generate_ed25519("me").public_key
    path = tmp_path / "k.pub"
    path.write_text(f"# a note\n\n{key.openssh()}\n", encoding="utf-8")
    assert load_public_key_file(path) == key


def test_saved_key_is_read_by_ssh_keygen(tmp_path: Path) -> None:
    private = PrivateKey.generate_ed25519("drone@box")
    path = tmp_path / "drone_key"
    private.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    derived = ssh_keygen("-y", "-f", path).stdout.decode().split()[:2]
    assert " ".join(derived) == private.public_key.openssh(with_comment=False)
    assert fingerprint_by_ssh_keygen(Path(f"{path}.pub")) == private.public_key.fingerprint
    assert load_private_key_file(path).public_key.comment == "drone@box"


# --- private keys: OpenSSH, PEM, PKCS#8, passphrases ------------------------------------------

@pytest.mark.parametrize(("kind", "key_format", "locked"), [
    ("rsa", "PEM", False),        # PKCS#1 "BEGIN RSA PRIVATE KEY"
    ("rsa", "PEM", True),         # PKCS#1 with the legacy Proc-Type/DEK-Info encryption
    ("rsa", "PKCS8", False),
    ("rsa", "PKCS8", True),       # "BEGIN ENCRYPTED PRIVATE KEY"
    ("ecdsa-p256", "PEM", False),  # SEC1 "BEGIN EC PRIVATE KEY"
    ("ecdsa-p384", "PKCS8", True),
    ("ecdsa-p521", "PEM", True),
])
def test_pem_and_pkcs8_keys_made_by_ssh_keygen_load(
    keys: KeyMaker, tmp_path: Path, kind: str, key_format: str, locked: bool
) -> None:
    source = keys.make(kind)
    dest = reformat_key(source, tmp_path / "converted", key_format=key_format,
                        passphrase=PASSPHRASE if locked else "")
    assert not dest.read_text().startswith("-----BEGIN OPENSSH")
    private = load_private_key_file(dest, passphrase=PASSPHRASE if locked else None)
    assert private.public_key.fingerprint == fingerprint_by_ssh_keygen(Path(f"{source}.pub"))


def test_ed25519_pkcs8_pem_loads(tmp_path: Path) -> None:
    # OpenSSH has no PEM form for ed25519; OpenSSL (and cryptography) write PKCS#8.
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(b"secret"))
    loaded = load_private_key_bytes(pem, passphrase=b"secret")
    assert loaded.public_key == PublicKey.from_crypto(key.public_key())


@pytest.fixture(scope="module")
def locked_ed25519(keys: KeyMaker) -> Path:
    return keys.make("ed25519", passphrase=PASSPHRASE)


@pytest.mark.parametrize("passphrase", [PASSPHRASE, PASSPHRASE.encode(), lambda: PASSPHRASE,
                                        lambda: PASSPHRASE.encode()],
                         ids=["str", "bytes", "callable-str", "callable-bytes"])
def test_encrypted_openssh_key_opens_with_passphrase_as_str_bytes_or_callable(
    locked_ed25519: Path, passphrase: object
) -> None:
    private = load_private_key_file(locked_ed25519, passphrase=passphrase)  # type: ignore[arg-type]
    assert private.public_key.fingerprint == fingerprint_by_ssh_keygen(
        Path(f"{locked_ed25519}.pub"))


def test_passphrase_callable_is_not_called_for_an_unencrypted_key(keys: KeyMaker) -> None:
    calls: list[int] = []

    def ask() -> str:
        calls.append(1)
        return "unused"

    load_private_key_file(keys.make("ed25519"), passphrase=ask)
    assert calls == []


def test_passphrase_callable_is_called_once_for_an_encrypted_key(locked_ed25519: Path) -> None:
    calls: list[int] = []

    def ask() -> str:
        calls.append(1)
        return PASSPHRASE

    load_private_key_file(locked_ed25519, passphrase=ask)
    assert calls == [1]


@pytest.mark.parametrize("key_format", [None, "PEM", "PKCS8"])
def test_wrong_passphrase_is_reported_as_such(
    keys: KeyMaker, locked_ed25519: Path, tmp_path: Path, key_format: str | None
) -> None:
    if key_format is None:
        path = locked_ed25519
    else:
        path = reformat_key(keys.make("ecdsa-p256"), tmp_path / "k", key_format=key_format,
                            passphrase=PASSPHRASE)
    with pytest.raises(KeyLoadError) as caught:
        load_private_key_file(path, passphrase="not the passphrase")
    assert str(caught.value) == f"{path}: wrong passphrase"


def test_encrypted_key_without_passphrase_says_so(locked_ed25519: Path) -> None:
    for passphrase in (None, lambda: None):
        with pytest.raises(KeyLoadError, match="passphrase-protected and no passphrase"):
            load_private_key_file(locked_ed25519, passphrase=passphrase)  # type: ignore[arg-type]


# --- bad key files -----------------------------------------------------------------------------

def _cut_openssh_key(path: Path) -> bytes:
    lines = path.read_bytes().splitlines()
    return b"\n".join(lines[: len(lines) // 2] + lines[-1:]) + b"\n"


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "not a private key file"),
    (b"hello\n", "not a private key file"),
    (b"\x00\xff\xfe binary", "not a private key file"),
    (b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
     "malformed private key"),
    (b"-----BEGIN RSA PRIVATE KEY-----\nnot base64 !!\n-----END RSA PRIVATE KEY-----\n",
     "malformed private key"),
    (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "malformed private key"),
], ids=["empty", "text", "binary", "openssh-garbage", "pem-garbage", "certificate"])
def test_malformed_private_key_file_names_the_file_and_reason(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "id_bad"
    path.write_bytes(content)
    with pytest.raises(KeyLoadError) as caught:
        load_private_key_file(path)
    assert caught.value.source == str(path)
    assert str(caught.value).startswith(f"{path}: {reason}")


def test_truncated_openssh_private_key_is_malformed(keys: KeyMaker, tmp_path: Path) -> None:
    path = tmp_path / "cut"
    path.write_bytes(_cut_openssh_key(keys.make("rsa")))
    with pytest.raises(KeyLoadError, match=r"cut: malformed private key"):
        load_private_key_file(path)


def test_public_key_given_as_private_key_is_refused(keys: KeyMaker) -> None:
    pub = Path(f"{keys.make('ed25519')}.pub")
    with pytest.raises(KeyLoadError, match="not a private key file"):
        load_private_key_file(pub)


def test_missing_key_file_names_the_file(tmp_path: Path) -> None:
    for loader in (load_private_key_file, load_public_key_file):
        with pytest.raises(KeyLoadError) as caught:
            loader(tmp_path / "nope")
        assert str(caught.value) == f"{tmp_path / 'nope'}: No such file or directory"


def test_directory_instead_of_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError, match=re.escape(str(tmp_path))):
        load_private_key_file(tmp_path)


@pytest.mark.parametrize(("text", "reason"), [
    ("", "file is empty"),
    ("# only a comment\n", "file is empty"),
    ("ssh-ed25519\n", "not an OpenSSH public key line"),
    ("ssh-ed25519 not*base64\n", "key body is not valid base64"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE\n", "key body is not valid base64"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==\n", "malformed ssh-ed25519 key"),
    ("ssh-ed448 AAAACXNzaC1lZDQ0OA==\n", "unsupported key type 'ssh-ed448'"),
], ids=["empty", "comment-only", "no-body", "garbage-b64", "bad-padding", "truncated",
        "ed448"])
def test_malformed_public_key_file_names_the_file_and_reason(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = tmp_path / "bad.pub"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(KeyLoadError) as caught:
        load_public_key_file(path)
    assert str(caught.value).startswith(f"{path}: {reason}")


def test_line_type_that_disagrees_with_the_blob_is_refused(public_key: PublicKey) -> None:
    other = "ssh-ed25519" if public_key.key_type != "ssh-ed25519" else "ssh-rsa"
    b64 = base64.b64encode(public_key.blob).decode()
    with pytest.raises(KeyLoadError, match=f"line says {other} but the key is"):
        PublicKey.from_openssh(f"{other} {b64}")


# --- unsupported and too-small keys -----------------------------------------------------------

def _blob(key_type: str, *fields: bytes) -> bytes:
    return _wire.string(key_type) + b"".join(_wire.string(f) for f in fields)


@pytest.fixture(scope="module")
def dsa_public_line(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A DSA key from ssh-keygen when it still makes them (OpenSSH < 9.8), else built by hand."""
    path = tmp_path_factory.mktemp("dsa") / "id_dsa"
    try:
        generate_key(path, "dsa")
        return public_line(Path(f"{path}.pub"))
    except RuntimeError:
        numbers = dsa.generate_private_key(1024).public_key()  # noqa: S505 - refused anyway.public_numbers()
        params = numbers.parameter_numbers
        blob = _blob("ssh-dss", *(_wire.mpint(v)[4:] for v in
                                   (params.p, params.q, params.g, numbers.y)))
        return f"ssh-dss {base64.b64encode(blob).decode()} handmade"


@pytest.mark.parametrize("blob", [
    _blob("ssh-ed448", bytes(57)),
    _blob("sk-ssh-ed25519@openssh.com", bytes(32), b"ssh:"),
    _blob("ssh-ed25519-cert-v01@openssh.com", bytes(32), bytes(32)),
    _blob("ssh-dss", b"\x01", b"\x01", b"\x01", b"\x01"),
], ids=["ed448", "sk-ed25519", "certificate", "dss"])
def test_unsupported_key_type_blob_is_refused(blob: bytes) -> None:
    with pytest.raises(KeyLoadError, match="unsupported key type"):
        PublicKey.from_blob(blob)


def test_dsa_key_from_ssh_keygen_is_refused(dsa_public_line: str) -> None:
    with pytest.raises(KeyLoadError, match="unsupported key type 'ssh-dss'"):
        PublicKey.from_openssh(dsa_public_line)


@pytest.mark.parametrize("make", [
    lambda: dsa.generate_private_key(2048),
    lambda: ed448.Ed448PrivateKey.generate(),
    lambda: ec.generate_private_key(ec.SECP256K1()),
], ids=["dsa", "ed448", "secp256k1"])
def test_unsupported_private_key_is_refused(make: object) -> None:
    key = make()  # type: ignore[operator]
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    with pytest.raises(KeyLoadError, match=r"^odd: unsupported key"):
        load_private_key_bytes(pem, source="odd")


def test_rsa_key_under_2048_bits_is_refused(keys: KeyMaker) -> None:
    small = keys.make("rsa-1024")
    with pytest.raises(KeyLoadError, match="RSA key of 1024 bits is too small"):
        load_public_key_file(f"{small}.pub")
    with pytest.raises(KeyLoadError, match="RSA key of 1024 bits is too small"):
        load_private_key_file(small)


# --- raw SSH signatures ------------------------------------------------------------------------

def test_ssh_rsa_sha1_signature_is_refused(keys: KeyMaker) -> None:
    private = load_private_key_file(keys.make("rsa"))
    sha1 = hashes.SHA1()  # noqa: S303 - the SHA-1 signature an old client would make
    raw = private._key.sign(b"data", padding.PKCS1v15(), sha1)  # type: ignore[union-attr]
    with pytest.raises(SignatureError, match=r"ssh-rsa \(SHA-1\) signatures are not accepted"):
        private.public_key.verify_ssh_signature(_blob("ssh-rsa", raw), b"data")


def test_rsa_sha2_256_signature_is_accepted(keys: KeyMaker) -> None:
    private = load_private_key_file(keys.make("rsa"))
    raw = private._key.sign(b"data", padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr]
    private.public_key.verify_ssh_signature(_blob("rsa-sha2-256", raw), b"data")


@pytest.mark.parametrize(("signature", "reason"), [
    (b"", "signature is truncated"),
    (_wire.string("ssh-ed25519"), "signature is truncated"),
    (_blob("ssh-ed25519", bytes(64)) + b"x", "signature has 1 trailing bytes"),
    (_blob("ecdsa-sha2-nistp256", b"\x00"), "signature for an|malformed"),
    (_blob("rsa-sha2-1024", b"\x00"), "rsa-sha2-1024 signature for an"),
])
def test_malformed_ssh_signature_is_a_signature_error(
    public_key: PublicKey, signature: bytes, reason: str
) -> None:
    with pytest.raises(SignatureError, match=reason):
        public_key.verify_ssh_signature(signature, b"data")


def test_signature_by_another_key_does_not_verify(keys: KeyMaker, key_path: Path) -> None:
    mine = load_private_key_file(key_path)
    other = load_private_key_file(keys.make("ecdsa-p256" if "ecdsa-p256" not in key_path.name
                                            else "ecdsa-p384"))
    signature = mine.sign_ssh(b"data")
    mine.public_key.verify_ssh_signature(signature, b"data")
    with pytest.raises(SignatureError):
        other.public_key.verify_ssh_signature(signature, b"data")
    with pytest.raises(SignatureError, match="does not verify"):
        mine.public_key.verify_ssh_signature(signature, b"other data")


def test_rsa_private_key_made_by_cryptography_signs_with_sha2_512() -> None:
    private = PrivateKey.from_crypto(rsa.generate_private_key(65537, 2048))
    signature = private.sign_ssh(b"x")
    assert _wire.WireReader(signature).text() == "rsa-sha2-512"


# --- fuzz: no foreign exception escapes -------------------------------------------------------

def _mutations(data: bytes, seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        mutated = bytearray(data)
        choice = rng.randrange(3)
        if choice == 0:
            mutated = mutated[: rng.randrange(len(mutated))]
        elif choice == 1:
            for _flip in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        else:
            mutated += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5)))
        out.append(bytes(mutated))
    return out


def test_damaged_public_key_blobs_raise_only_key_load_errors(public_key: PublicKey) -> None:
    # Found a real escape: cryptography raises NotImplementedError for a compressed EC point.
    for blob in _mutations(public_key.blob, seed=len(public_key.blob), count=400):
        with contextlib.suppress(KeyLoadError):
            PublicKey.from_blob(blob)


def test_damaged_private_key_files_raise_only_key_load_errors(key_path: Path) -> None:
    data = key_path.read_bytes()
    for damaged in _mutations(data, seed=7, count=60):
        with contextlib.suppress(DragoonError):
            load_private_key_bytes(damaged)


def test_errors_carry_a_stable_code(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError) as caught:
        load_public_key_file(tmp_path / "missing.pub")
    assert caught.value.code == "bad_key"
    assert caught.value.reason == "No such file or directory"


def test_ssh_keygen_fingerprint_helper_agrees_with_subprocess_directly(key_path: Path) -> None:
    # Guards the helper every other test leans on.
    out = subprocess.run(["ssh-keygen", "-lf", f"{key_path}.pub"], capture_output=True,
                         check=True, text=True).stdout
    assert out.split()[1] == fingerprint_by_ssh_keygen(Path(f"{key_path}.pub"))


# --- the public half of a private key file, without its passphrase ----------------------------

def test_public_half_of_an_encrypted_openssh_key_needs_no_passphrase(
        keys: KeyMaker, kind: str, tmp_path: Path) -> None:
    """Read from the OpenSSH container (made by ssh-keygen), where it is stored in the clear."""
    made = keys.make(kind, passphrase=PASSPHRASE)
    alone = tmp_path / "no-pub-beside"
    alone.write_bytes(made.read_bytes())
    assert public_half_of_private_file(alone) == load_public_key_file(f"{made}.pub")


def test_public_half_comes_from_the_pub_file_first_and_is_none_when_unknown(
        keys: KeyMaker, tmp_path: Path) -> None:
    made = keys.make("ed25519")
    assert public_half_of_private_file(made) == load_public_key_file(f"{made}.pub")
    pem = reformat_key(keys.make("ecdsa-p256"), tmp_path / "pem", key_format="PEM",
                       passphrase=PASSPHRASE)
    Path(f"{pem}.pub").unlink(missing_ok=True)
    assert public_half_of_private_file(pem) is None  # encrypted PEM: nothing in the clear
    assert public_half_of_private_file(tmp_path / "missing") is None
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----\n!!!\n"
                        b"-----END OPENSSH PRIVATE KEY-----\n")
    assert public_half_of_private_file(garbage) is None


def test_a_private_key_where_a_public_one_belongs_says_so_and_quotes_none_of_it(
        keys: KeyMaker) -> None:
    made = keys.make("ed25519")
    with pytest.raises(KeyLoadError) as caught:
        load_public_key_file(made)
    assert str(caught.value) == (f"{made}: this is a private key; give its public half "
                                 f"({made}.pub)")
    body = [line for line in made.read_text().splitlines() if "-----" not in line]
    assert not any(line in str(caught.value) for line in body)
