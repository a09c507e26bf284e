"""OpenSSH public and private keys: loading, fingerprints, raw SSH signatures.

Keys travel in OpenSSH one-line form and are identified by the fingerprint
``ssh-keygen -lf`` prints. Signing here produces the *SSH signature blob*
(``string algorithm, string signature``) that both SSHSIG and the ssh-agent
use; ``shared.sshsig`` wraps it.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from dragoon.shared import _wire
from dragoon.shared.errors import KeyLoadError, SignatureError, WireFormatError

ED25519: Final = "ssh-ed25519"
RSA: Final = "ssh-rsa"
ECDSA_CURVES: Final[dict[str, tuple[type[ec.EllipticCurve], type[hashes.HashAlgorithm]]]] = {
    "ecdsa-sha2-nistp256": (ec.SECP256R1, hashes.SHA256),
    "ecdsa-sha2-nistp384": (ec.SECP384R1, hashes.SHA384),
    "ecdsa-sha2-nistp521": (ec.SECP521R1, hashes.SHA512),
}
KEY_TYPES: Final = (ED25519, RSA, *ECDSA_CURVES)
# ssh-rsa signatures (SHA-1) are never accepted: only the SHA-2 algorithms.
RSA_SIGNATURE_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "rsa-sha2-512": hashes.SHA512,
    "rsa-sha2-256": hashes.SHA256,
}
MIN_RSA_BITS: Final = 2048

PublicKeyObject = ed25519.Ed25519PublicKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey
PrivateKeyObject = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PassphraseSource = bytes | str | Callable[[], bytes | str] | None


def fingerprint_of_blob(blob: bytes) -> str:
    """``SHA256:`` + unpadded base64 of the blob's SHA-256, as ``ssh-keygen -lf`` prints it."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _without_options(line: str) -> str:
    """The line minus a leading authorized_keys options field, when it has one.

    Options end at the first blank outside double quotes (a quoted value may hold
    blanks and ``\\"``). Only when a known key type follows is the first field
    taken for options, so an unsupported type is still reported by its name.
    """
    if not line or line.split(None, 1)[0] in KEY_TYPES:
        return line
    in_quotes, escaped = False, False
    for index, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and in_quotes:
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif char.isspace() and not in_quotes:
            rest = line[index:].lstrip()
            return rest if rest.split(None, 1)[0] in KEY_TYPES else line
    return line


def _ecdsa_key_type(curve: ec.EllipticCurve) -> str | None:
    for key_type, (curve_class, _hash) in ECDSA_CURVES.items():
        if isinstance(curve, curve_class):
            return key_type
    return None


@dataclass(frozen=True)
class PublicKey:
    """An accepted SSH public key: its type, wire blob and the comment it came with.

    Two keys are equal when their blobs are: the comment is a label, not part
    of the key (OpenSSH ignores it too), so it takes no part in ``==``/hash.
    """

    key_type: str
    blob: bytes
    comment: str = field(default="", compare=False)
    _key: PublicKeyObject = field(repr=False, compare=False, default=None)  # type: ignore[assignment]

    @classmethod
    def from_blob(cls, blob: bytes, comment: str = "", *, source: str = "public key") -> PublicKey:
        try:
            key_type = _wire.WireReader(blob, what=source).text()
        except WireFormatError as exc:
            raise KeyLoadError(source, f"malformed key blob ({exc})") from exc
        if key_type not in KEY_TYPES:
            raise KeyLoadError(source, f"unsupported key type {key_type!r}")
        line = f"{key_type} {base64.b64encode(blob).decode('ascii')}".encode("ascii")
        try:
            key = serialization.load_ssh_public_key(line)
        except (ValueError, UnsupportedAlgorithm, NotImplementedError) as exc:
            # cryptography raises NotImplementedError for a compressed EC point.
            raise KeyLoadError(source, f"malformed {key_type} key ({exc})") from exc
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
            raise KeyLoadError(source, f"RSA key of {key.key_size} bits is too small")
        return cls(key_type=key_type, blob=blob, comment=comment, _key=key)  # type: ignore[arg-type]

    @classmethod
    def from_openssh(cls, line: str, *, source: str = "public key") -> PublicKey:
        """Parse ``type base64 [comment]``, the form of ``*.pub`` files and authorized_keys.

        An authorized_keys line may start with options (``from="10.0.0.*",no-pty``);
        they are skipped, not interpreted: the caller gets the key alone.
        """
        parts = _without_options(line.strip()).split(None, 2)
        if len(parts) < 2:
            raise KeyLoadError(source, "not an OpenSSH public key line ('TYPE BASE64 [COMMENT]')")
        key_type, b64 = parts[0], parts[1]
        if key_type not in KEY_TYPES:
            raise KeyLoadError(source, f"unsupported key type {key_type!r}")
        try:
            blob = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise KeyLoadError(source, "key body is not valid base64") from exc
        key = cls.from_blob(blob, parts[2] if len(parts) > 2 else "", source=source)
        if key.key_type != key_type:
            raise KeyLoadError(source, f"line says {key_type} but the key is {key.key_type}")
        return key

    @classmethod
    def from_crypto(cls, key: PublicKeyObject, comment: str = "") -> PublicKey:
        line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        blob = base64.b64decode(line.split()[1])
        return cls.from_blob(blob, comment)

    @property
    def fingerprint(self) -> str:
        return fingerprint_of_blob(self.blob)

    def openssh(self, *, with_comment: bool = True) -> str:
        line = f"{self.key_type} {base64.b64encode(self.blob).decode('ascii')}"
        return f"{line} {self.comment}" if with_comment and self.comment else line

    def verify_ssh_signature(self, ssh_signature: bytes, data: bytes) -> None:
        """Check an SSH signature blob over ``data``; raise SignatureError when it does not hold."""
        reader = _wire.WireReader(ssh_signature, what="signature")
        try:
            algorithm = reader.text()
            raw = reader.string()
            reader.expect_end()
        except WireFormatError as exc:
            raise SignatureError(str(exc)) from exc
        try:
            self._verify(algorithm, raw, data)
        except InvalidSignature as exc:
            raise SignatureError("signature does not verify against the key") from exc
        except (ValueError, WireFormatError) as exc:
            raise SignatureError(f"malformed {algorithm} signature ({exc})") from exc

    def _verify(self, algorithm: str, raw: bytes, data: bytes) -> None:
        key = self._key
        if self.key_type == ED25519:
            if algorithm != ED25519:
                raise SignatureError(f"{algorithm} signature for an ed25519 key")
            assert isinstance(key, ed25519.Ed25519PublicKey)
            key.verify(raw, data)
        elif self.key_type == RSA:
            if algorithm == "ssh-rsa":
                raise SignatureError("ssh-rsa (SHA-1) signatures are not accepted")
            hash_class = RSA_SIGNATURE_HASHES.get(algorithm)
            if hash_class is None:
                raise SignatureError(f"{algorithm} signature for an RSA key")
            assert isinstance(key, rsa.RSAPublicKey)
            key.verify(raw, data, padding.PKCS1v15(), hash_class())
        else:
            if algorithm != self.key_type:
                raise SignatureError(f"{algorithm} signature for an {self.key_type} key")
            _curve, hash_class = ECDSA_CURVES[self.key_type]
            inner = _wire.WireReader(raw, what="ECDSA signature")
            r, s = inner.mpint(), inner.mpint()
            inner.expect_end()
            assert isinstance(key, ec.EllipticCurvePublicKey)
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hash_class()))


@dataclass(frozen=True)
class PrivateKey:
    """A private key loaded from a file (or made here), able to make SSH signatures."""

    public_key: PublicKey
    _key: PrivateKeyObject = field(repr=False)

    @classmethod
    def generate_ed25519(cls, comment: str = "") -> PrivateKey:
        key = ed25519.Ed25519PrivateKey.generate()
        return cls(PublicKey.from_crypto(key.public_key(), comment), key)

    @classmethod
    def from_crypto(cls, key: PrivateKeyObject, comment: str = "") -> PrivateKey:
        return cls(PublicKey.from_crypto(key.public_key(), comment), key)

    def sign_ssh(self, data: bytes) -> bytes:
        """An SSH signature blob over ``data``.

        ed25519, rsa-sha2-512 (never SHA-1), or ECDSA with its curve's hash, as OpenSSH signs.
        """
        key = self._key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return _wire.string(ED25519) + _wire.string(key.sign(data))
        if isinstance(key, rsa.RSAPrivateKey):
            raw = key.sign(data, padding.PKCS1v15(), hashes.SHA512())
            return _wire.string("rsa-sha2-512") + _wire.string(raw)
        key_type = self.public_key.key_type
        _curve, hash_class = ECDSA_CURVES[key_type]
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hash_class())))
        return _wire.string(key_type) + _wire.string(_wire.mpint(r) + _wire.mpint(s))

    def openssh_private_bytes(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )

    def save(self, path: Path) -> None:
        """Write the key (mode 0600, created so) and its ``.pub`` beside it."""
        write_private_file(path, self.openssh_private_bytes())
        Path(f"{path}.pub").write_text(self.public_key.openssh() + "\n", encoding="ascii")


def write_private_file(path: Path, data: bytes) -> None:
    """Create or replace a secret file atomically, never readable by others even briefly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_public_key_file(path: str | Path) -> PublicKey:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyLoadError(source, exc.strerror or str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise KeyLoadError(source, "not a text file") from exc
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not lines:
        raise KeyLoadError(source, "file is empty")
    if lines[0].startswith("-----BEGIN ") and "PRIVATE KEY" in lines[0]:
        # Said without a word of the file: it is a secret, and this line may reach a log.
        hint = f"{source}.pub" if not source.endswith(".pub") else "the .pub file"
        raise KeyLoadError(source, f"this is a private key; give its public half ({hint})")
    return PublicKey.from_openssh(lines[0], source=source)


_OPENSSH_ARMOR: Final = (b"-----BEGIN OPENSSH PRIVATE KEY-----",
                         b"-----END OPENSSH PRIVATE KEY-----")


def public_half_of_private_file(path: str | Path) -> PublicKey | None:
    """The public key of a private key file, read without its passphrase; None if unknown.

    From ``PATH.pub`` when there is one, else from the OpenSSH container, which
    stores the public key in the clear even when the private part is encrypted.
    This is how a key file's key is looked for in the ssh-agent before any
    passphrase is asked, as ssh does.
    """
    pub = Path(f"{path}.pub")
    if pub.is_file():
        try:
            return load_public_key_file(pub)
        except KeyLoadError:
            pass
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    begin, end = _OPENSSH_ARMOR
    start, stop = data.find(begin), data.find(end)
    if start < 0 or stop < start:
        return None
    try:
        raw = base64.b64decode(b"".join(data[start + len(begin):stop].split()), validate=True)
        magic = b"openssh-key-v1\x00"
        if not raw.startswith(magic):
            return None
        reader = _wire.WireReader(raw[len(magic):], what="OpenSSH private key")
        for _ in range(3):  # cipher name, KDF name, KDF options
            reader.string()
        if reader.uint32() < 1:
            return None
        return PublicKey.from_blob(reader.string(), source=str(path))
    except (binascii.Error, WireFormatError, KeyLoadError):
        return None


def _wrap_private(key: object, source: str, comment: str) -> PrivateKey:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return PrivateKey.from_crypto(key, comment)
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyLoadError(source, f"RSA key of {key.key_size} bits is too small")
        return PrivateKey.from_crypto(key, comment)
    if isinstance(key, ec.EllipticCurvePrivateKey) and _ecdsa_key_type(key.curve):
        return PrivateKey.from_crypto(key, comment)
    raise KeyLoadError(source, f"unsupported key type {type(key).__name__}")


def _resolve_passphrase(passphrase: PassphraseSource) -> bytes | None:
    if callable(passphrase):
        passphrase = passphrase()
    if isinstance(passphrase, str):
        return passphrase.encode("utf-8")
    return passphrase


def terminal_passphrase(path: str | Path) -> Callable[[], str]:
    """A passphrase source that asks on the terminal, without echo, only when needed."""
    return lambda: getpass.getpass(f"Passphrase for {path}: ")


def load_private_key_bytes(
    data: bytes, *, source: str = "private key", passphrase: PassphraseSource = None
) -> PrivateKey:
    """Load an OpenSSH (``BEGIN OPENSSH PRIVATE KEY``) or PEM private key.

    A passphrase is only asked for (when ``passphrase`` is callable) once the
    key turns out to be encrypted, so unencrypted keys never prompt.
    """
    stripped = data.lstrip()
    is_openssh = stripped.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    if not is_openssh and not stripped.startswith(b"-----BEGIN "):
        raise KeyLoadError(source, "not a private key file (no OpenSSH or PEM header)")
    loader = serialization.load_ssh_private_key if is_openssh else _load_pem
    secret_was_used = False
    try:
        try:
            key = loader(data, None)
        except TypeError:
            # The key is encrypted; only now is a passphrase worth asking for.
            secret = _resolve_passphrase(passphrase)
            if secret is None:
                raise KeyLoadError(
                    source, "key is passphrase-protected and no passphrase was given"
                ) from None
            secret_was_used = True
            key = loader(data, secret)
    except KeyLoadError:
        raise
    except (UnsupportedAlgorithm, NotImplementedError) as exc:
        raise KeyLoadError(source, f"unsupported key ({exc})") from exc
    except (ValueError, TypeError) as exc:
        reason = str(exc)
        wrong_secret = any(w in reason.lower() for w in ("checksum", "decrypt", "password"))
        if secret_was_used and wrong_secret:
            raise KeyLoadError(source, "wrong passphrase") from exc
        raise KeyLoadError(source, f"malformed private key ({reason})") from exc
    return _wrap_private(key, source, "")


def _load_pem(data: bytes, password: bytes | None) -> object:
    return serialization.load_pem_private_key(data, password)


def load_private_key_file(path: str | Path, *, passphrase: PassphraseSource = None) -> PrivateKey:
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyLoadError(source, exc.strerror or str(exc)) from exc
    key = load_private_key_bytes(data, source=source, passphrase=passphrase)
    pub_path = Path(f"{path}.pub")
    if pub_path.is_file():
        try:
            comment = load_public_key_file(pub_path).comment
        except KeyLoadError:
            comment = ""
        if comment:
            key = PrivateKey(PublicKey(key.public_key.key_type, key.public_key.blob, comment,
                                       key.public_key._key), key._key)
    return key
