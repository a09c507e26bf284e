"""OpenSSH public and private keys: loading, fingerprints, raw SSH signatures.

Keys travel in OpenSSH one-line form and are identified by the fingerprint
``ssh-keygen -lf`` prints. Signing here produces the *SSH signature blob*
(``string algorithm, string signature``) that both SSHSIG and the ssh-agent
use; ``shared.sshsig`` wraps it.

ed25519 keys (the only kind a drone meets: its own and the relay's) are parsed
here and signed and checked with libsodium (``shared/ed25519.py``), so that a process
meeting no other kind never imports ``cryptography`` (about 8.5 MiB of RSS on an idle
drone). RSA and ECDSA keys, which a pilot may bring, and every passphrase-protected or
PEM private key file, go through ``cryptography``, imported at the first such key.
"""

from __future__ import annotations

import base64
import binascii
import functools
import getpass
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Final, NamedTuple

from dragoon.shared import _wire
from dragoon.shared import ed25519 as _ed25519
from dragoon.shared.errors import KeyLoadError, SignatureError, WireFormatError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.asymmetric.types import (
        PrivateKeyTypes,
        PublicKeyTypes,
    )

    # An ed25519 key is its 32 raw bytes (public) or a shared.ed25519.SigningKey (private);
    # the other kinds are cryptography's key objects.
    PublicKeyObject = bytes | rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    PrivateKeyObject = _ed25519.SigningKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

ED25519: Final = "ssh-ed25519"
RSA: Final = "ssh-rsa"
# Curve and hash by their class names in cryptography's ``ec`` and ``hashes`` modules,
# looked up there only once an ECDSA key is met.
ECDSA_CURVES: Final[dict[str, tuple[str, str]]] = {
    "ecdsa-sha2-nistp256": ("SECP256R1", "SHA256"),
    "ecdsa-sha2-nistp384": ("SECP384R1", "SHA384"),
    "ecdsa-sha2-nistp521": ("SECP521R1", "SHA512"),
}
KEY_TYPES: Final = (ED25519, RSA, *ECDSA_CURVES)
# ssh-rsa signatures (SHA-1) are never accepted: only the SHA-2 algorithms.
RSA_SIGNATURE_HASHES: Final[dict[str, str]] = {
    "rsa-sha2-512": "SHA512",
    "rsa-sha2-256": "SHA256",
}
MIN_RSA_BITS: Final = 2048

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
    from cryptography.hazmat.primitives.asymmetric import ec

    for key_type, (curve_name, _hash) in ECDSA_CURVES.items():
        if isinstance(curve, getattr(ec, curve_name)):
            return key_type
    return None


class _Cryptography(NamedTuple):
    exceptions: ModuleType
    hashes: ModuleType
    ec: ModuleType
    padding: ModuleType
    rsa: ModuleType
    utils: ModuleType


@functools.cache
def _cryptography() -> _Cryptography:
    """The modules of cryptography that RSA and ECDSA signatures use, imported at the first.

    Looked up once and kept: the five ``from … import`` statements cost about 5 µs a
    call, a tenth of an RSA verification, which the relay does for every such request.
    """
    from cryptography import exceptions
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

    return _Cryptography(exceptions, hashes, ec, padding, rsa, utils)


def _ecdsa_hash(key_type: str) -> object:
    """A fresh instance of cryptography's hash for this ECDSA key type's curve."""
    return getattr(_cryptography().hashes, ECDSA_CURVES[key_type][1])()


def _ed25519_public_bytes(blob: bytes, source: str) -> bytes:
    """The 32 raw bytes of an ``ssh-ed25519`` wire blob (``string type, string key``)."""
    reader = _wire.WireReader(blob, what=source)
    try:
        reader.text()
        raw = reader.string()
        reader.expect_end()
    except WireFormatError as exc:
        raise KeyLoadError(source, f"malformed {ED25519} key ({exc})") from exc
    if len(raw) != _ed25519.PUBLIC_BYTES:
        raise KeyLoadError(source, f"malformed {ED25519} key ({len(raw)} bytes, not 32)")
    return raw


def _crypto_public_key(key_type: str, blob: bytes, source: str) -> PublicKeyTypes:
    """An RSA or ECDSA blob as cryptography's key object (cryptography imported here)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    line = f"{key_type} {base64.b64encode(blob).decode('ascii')}".encode("ascii")
    try:
        key = serialization.load_ssh_public_key(line)
    except (ValueError, UnsupportedAlgorithm, NotImplementedError) as exc:
        # cryptography raises NotImplementedError for a compressed EC point.
        raise KeyLoadError(source, f"malformed {key_type} key ({exc})") from exc
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise KeyLoadError(source, f"RSA key of {key.key_size} bits is too small")
    return key


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
        key: object
        if key_type == ED25519:
            key = _ed25519_public_bytes(blob, source)
        else:
            key = _crypto_public_key(key_type, blob, source)
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
    def from_crypto(cls, key: PublicKeyTypes, comment: str = "") -> PublicKey:
        """From a key object of cryptography's (ed25519 ones included; kept as raw bytes)."""
        from cryptography.hazmat.primitives import serialization

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
        if self.key_type == ED25519:
            if algorithm != ED25519:
                raise SignatureError(f"{algorithm} signature for an ed25519 key")
            assert isinstance(self._key, bytes)
            try:
                _ed25519.verify(self._key, raw, data)
            except _ed25519.InvalidSignature as exc:
                raise SignatureError("signature does not verify against the key") from exc
            return
        try:
            self._verify_with_cryptography(algorithm, raw, data)
        except _cryptography().exceptions.InvalidSignature as exc:
            raise SignatureError("signature does not verify against the key") from exc
        except (ValueError, WireFormatError) as exc:
            raise SignatureError(f"malformed {algorithm} signature ({exc})") from exc

    def _verify_with_cryptography(self, algorithm: str, raw: bytes, data: bytes) -> None:
        c = _cryptography()
        key = self._key
        if self.key_type == RSA:
            if algorithm == "ssh-rsa":
                raise SignatureError("ssh-rsa (SHA-1) signatures are not accepted")
            hash_name = RSA_SIGNATURE_HASHES.get(algorithm)
            if hash_name is None:
                raise SignatureError(f"{algorithm} signature for an RSA key")
            assert isinstance(key, c.rsa.RSAPublicKey)
            key.verify(raw, data, c.padding.PKCS1v15(), getattr(c.hashes, hash_name)())
        else:
            if algorithm != self.key_type:
                raise SignatureError(f"{algorithm} signature for an {self.key_type} key")
            inner = _wire.WireReader(raw, what="ECDSA signature")
            r, s = inner.mpint(), inner.mpint()
            inner.expect_end()
            assert isinstance(key, c.ec.EllipticCurvePublicKey)
            key.verify(c.utils.encode_dss_signature(r, s), data,
                       c.ec.ECDSA(_ecdsa_hash(self.key_type)))


@dataclass(frozen=True)
class PrivateKey:
    """A private key loaded from a file (or made here), able to make SSH signatures."""

    public_key: PublicKey
    _key: PrivateKeyObject = field(repr=False)

    @classmethod
    def generate_ed25519(cls, comment: str = "") -> PrivateKey:
        return cls.from_ed25519(_ed25519.SigningKey.generate(), comment)

    @classmethod
    def from_ed25519(cls, key: _ed25519.SigningKey, comment: str = "") -> PrivateKey:
        blob = _wire.string(ED25519) + _wire.string(key.public)
        return cls(PublicKey(ED25519, blob, comment, key.public), key)

    @classmethod
    def from_crypto(cls, key: PrivateKeyTypes, comment: str = "") -> PrivateKey:
        """From a key object of cryptography's; an ed25519 one is moved to shared.ed25519."""
        from cryptography.hazmat.primitives.asymmetric import ed25519

        if isinstance(key, ed25519.Ed25519PrivateKey):
            return cls.from_ed25519(_ed25519.SigningKey(key.private_bytes_raw()), comment)
        return cls(PublicKey.from_crypto(key.public_key(), comment), key)  # type: ignore[arg-type]

    def sign_ssh(self, data: bytes) -> bytes:
        """An SSH signature blob over ``data``.

        ed25519, rsa-sha2-512 (never SHA-1), or ECDSA with its curve's hash, as OpenSSH signs.
        """
        key = self._key
        if isinstance(key, _ed25519.SigningKey):
            return _wire.string(ED25519) + _wire.string(key.sign(data))
        c = _cryptography()
        if isinstance(key, c.rsa.RSAPrivateKey):
            raw = key.sign(data, c.padding.PKCS1v15(), c.hashes.SHA512())
            return _wire.string("rsa-sha2-512") + _wire.string(raw)
        key_type = self.public_key.key_type
        r, s = c.utils.decode_dss_signature(key.sign(data, c.ec.ECDSA(_ecdsa_hash(key_type))))
        return _wire.string(key_type) + _wire.string(_wire.mpint(r) + _wire.mpint(s))

    def openssh_private_bytes(self) -> bytes:
        """The unencrypted OpenSSH private key file (``BEGIN OPENSSH PRIVATE KEY``)."""
        if isinstance(self._key, _ed25519.SigningKey):
            return _openssh_ed25519_file(self._key)
        from cryptography.hazmat.primitives import serialization

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
_OPENSSH_MAGIC: Final = b"openssh-key-v1\x00"
_OPENSSH_BLOCK: Final = 8  # the private section's padding unit when it is not encrypted


@dataclass(frozen=True)
class _OpensshContainer:
    """The clear part of an OpenSSH private key file (OpenSSH's PROTOCOL.key)."""

    cipher: bytes
    kdf: bytes
    kdf_options: bytes
    public_blobs: tuple[bytes, ...]
    private_section: bytes  # encrypted unless cipher is "none"


def _openssh_container(data: bytes) -> _OpensshContainer | None:
    """The container between the armor lines; None when ``data`` is not one, or is damaged."""
    begin, end = _OPENSSH_ARMOR
    start, stop = data.find(begin), data.find(end)
    if start < 0 or stop < start:
        return None
    try:
        raw = base64.b64decode(b"".join(data[start + len(begin):stop].split()), validate=True)
        if not raw.startswith(_OPENSSH_MAGIC):
            return None
        reader = _wire.WireReader(raw[len(_OPENSSH_MAGIC):], what="OpenSSH private key")
        cipher, kdf, kdf_options = reader.string(), reader.string(), reader.string()
        count = reader.uint32()
        if not 1 <= count <= 16:
            return None
        blobs = tuple(reader.string() for _ in range(count))
        private_section = reader.string()
        reader.expect_end()
    except (binascii.Error, WireFormatError):
        return None
    return _OpensshContainer(cipher, kdf, kdf_options, blobs, private_section)


def _unencrypted_openssh_ed25519(data: bytes, source: str) -> _ed25519.SigningKey | None:
    """The key of an unencrypted one-key ed25519 OpenSSH file; None for any other file.

    A drone's own key (and the relay's) is such a file, so reading one needs no
    ``cryptography``; any other file is left to ``cryptography``'s loader. Such a file
    whose private part is inconsistent (a seed that does not give the public key the file
    names, check bytes that differ, bad padding) is refused as malformed: a key other than
    the one the file names would sign in vain.
    """
    container = _openssh_container(data)
    if (container is None or container.cipher != b"none" or container.kdf != b"none"
            or container.kdf_options or len(container.public_blobs) != 1):
        return None
    try:
        if _wire.WireReader(container.public_blobs[0]).text() != ED25519:
            return None
        public = _ed25519_public_bytes(container.public_blobs[0], source)
    except (WireFormatError, KeyLoadError):
        return None

    def malformed(reason: str) -> KeyLoadError:
        return KeyLoadError(source, f"malformed private key ({reason})")

    reader = _wire.WireReader(container.private_section, what="private section")
    try:
        check1, check2 = reader.uint32(), reader.uint32()
        key_type = reader.string()
        public_again, secret = reader.string(), reader.string()
        reader.string()  # comment; the .pub beside the file is where dragoon takes it from
        padding = reader.raw(reader.remaining)
    except WireFormatError as exc:
        raise malformed(str(exc)) from exc
    if check1 != check2:
        raise malformed("check bytes differ")
    if key_type != ED25519.encode() or public_again != public:
        raise malformed("private part is not of the public key the file names")
    if len(secret) != 2 * _ed25519.SEED_BYTES or secret[_ed25519.SEED_BYTES:] != public:
        raise malformed("ed25519 secret of the wrong length or for another key")
    if len(padding) >= _OPENSSH_BLOCK or padding != bytes(range(1, len(padding) + 1)):
        raise malformed("bad padding")
    key = _ed25519.SigningKey(secret[:_ed25519.SEED_BYTES])
    if key.public != public:
        raise malformed("ed25519 seed does not give the public key the file names")
    return key


def _openssh_ed25519_file(key: _ed25519.SigningKey) -> bytes:
    """An unencrypted OpenSSH private key file for ``key``, as ``ssh-keygen -N ''`` writes it
    (with an empty comment, as cryptography wrote it before)."""
    check = os.urandom(4)
    section = (check + check + _wire.string(ED25519) + _wire.string(key.public)
               + _wire.string(key.seed + key.public) + _wire.string(b""))
    section += bytes(range(1, -len(section) % _OPENSSH_BLOCK + 1))
    raw = (_OPENSSH_MAGIC + _wire.string("none") + _wire.string("none") + _wire.string(b"")
           + _wire.uint32(1) + _wire.string(_wire.string(ED25519) + _wire.string(key.public))
           + _wire.string(section))
    b64 = base64.b64encode(raw)
    begin, end = _OPENSSH_ARMOR
    return b"\n".join([begin, *(b64[i:i + 70] for i in range(0, len(b64), 70)), end]) + b"\n"


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
    container = _openssh_container(data)
    if container is None:
        return None
    try:
        return PublicKey.from_blob(container.public_blobs[0], source=str(path))
    except KeyLoadError:
        return None


def _wrap_private(key: object, source: str, comment: str) -> PrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

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
    key turns out to be encrypted, so unencrypted keys never prompt. An unencrypted
    ed25519 OpenSSH file is read here; any other goes through ``cryptography``
    (and ``bcrypt``, for an encrypted OpenSSH file), imported only then.
    """
    stripped = data.lstrip()
    is_openssh = stripped.startswith(_OPENSSH_ARMOR[0])
    if not is_openssh and not stripped.startswith(b"-----BEGIN "):
        raise KeyLoadError(source, "not a private key file (no OpenSSH or PEM header)")
    if is_openssh and (ed25519_key := _unencrypted_openssh_ed25519(stripped, source)):
        return PrivateKey.from_ed25519(ed25519_key)
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

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
    from cryptography.hazmat.primitives import serialization

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
