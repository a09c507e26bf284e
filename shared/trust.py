"""Trust roots on the ends (issue 13, docs/e2e-design.md): who a drone obeys, whom a pilot
believes, and the enrollment binding that lets a pilot check a drone's keys without the relay.

One parser and one writer for each file, so the drone, the pilot's CLI and the
tests never read them two ways:

- ``authorized_pilots`` (drone data dir): OpenSSH ``authorized_keys`` lines,
  ``TYPE BASE64 [COMMENT]``. Options (``from=…,no-pty ssh-ed25519 …``) are
  refused, not skipped: a line that means more in ``~/.ssh/authorized_keys``
  than it does here would be a trap.
- ``known_drones`` (pilot config dir), like ``known_hosts``:
  ``NAME ssh-ed25519 BASE64 X25519-BASE64``, a name once.

Both are written atomically, mode 0600 whatever the umask. The drone's
encryption key is X25519 from PyNaCl (libsodium); its public half is certified
by the drone's signing key (SSHSIG, namespace ``dragoon-drone-key-v1``), and
the binding is a standard HMAC-SHA256 (stdlib ``hmac``) under the pilot's
binding key: nothing here is home-made crypto.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dragoon.shared import sshsig
from dragoon.shared.constants import BINDING_VERSION, NS_DRONE_KEY
from dragoon.shared.errors import DragoonError, KeyLoadError
from dragoon.shared.keys import ED25519, KEY_TYPES, PublicKey, write_private_file

AUTHORIZED_PILOTS: Final = "authorized_pilots"
KNOWN_DRONES: Final = "known_drones"
# The first line of the bytes the binding MACs; a new layout gets a new tag.
BINDING_TAG: Final = BINDING_VERSION.encode("ascii")
BINDING_KEY_BYTES: Final = 32
X25519_BYTES: Final = 32
# A file of keys is small; the cap keeps a wrong path (a disk image) from being read whole.
MAX_TRUST_FILE_BYTES: Final = 1 << 20


class TrustFileError(DragoonError):
    """A trust file (or one line given for it) can't be used; the text names file and line."""

    code = "bad_trust_file"


# -- authorized_pilots ---------------------------------------------------------------------


def parse_pilot_line(line: str, *, source: str) -> PublicKey:
    """One ``TYPE BASE64 [COMMENT]`` line as a pilot key; ``source`` names it in errors.

    The first field must be a key type this version accepts: anything else (an
    options prefix, a typo, ``ssh-dss``) is refused by name.
    """
    text = line.strip()
    first = text.split(None, 1)[0] if text else ""
    if first not in KEY_TYPES:
        if any(word in KEY_TYPES for word in text.split()[1:]):
            raise TrustFileError(f"{source}: options before the key are not allowed here "
                                 "(give TYPE BASE64 [COMMENT] alone)")
        shown = first[:40] if first else "(nothing)"
        raise TrustFileError(f"{source}: {shown!r} is not a key type dragoon accepts "
                             f"({', '.join(KEY_TYPES)})")
    try:
        return PublicKey.from_openssh(text, source=source)
    except KeyLoadError as exc:
        raise TrustFileError(str(exc)) from None


def parse_authorized_pilots(text: str, *, source: str) -> list[PublicKey]:
    """Every key of an ``authorized_pilots`` text; blank lines and ``#`` comments skipped.

    A key given twice is kept once (the first line's comment wins).
    """
    keys: list[PublicKey] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key = parse_pilot_line(line, source=f"{source}, line {number}")
        if key not in keys:
            keys.append(key)
    return keys


def _read_text(path: Path) -> str | None:
    """The file's text, None when it does not exist; unreadable or not text is an error."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_TRUST_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TrustFileError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > MAX_TRUST_FILE_BYTES:
        raise TrustFileError(f"{path}: larger than {MAX_TRUST_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise TrustFileError(f"{path}: not a text file") from None


def read_authorized_pilots(path: Path) -> list[PublicKey]:
    """The pilots a drone obeys; a missing file is none (a drone no pilot was given yet)."""
    text = _read_text(path)
    return [] if text is None else parse_authorized_pilots(text, source=str(path))


def pilot_keys_from(given: str) -> list[PublicKey]:
    """The keys named on a command line: a file (a ``.pub``, or ``authorized_keys`` lines),
    or one key line itself (``'ssh-ed25519 AAAA… alice'``); at least one key.

    The one reading of ``--authorize FILE`` and ``dragoon drone authorize``.
    """
    path = Path(given).expanduser()
    if path.is_file():
        text = _read_text(path) or ""
        if text.lstrip().startswith("-----BEGIN "):
            raise TrustFileError(f"{path}: this is a private key; give its public half "
                                 "(the .pub file)")
        keys = parse_authorized_pilots(text, source=str(path))
        if not keys:
            raise TrustFileError(f"{path}: holds no public key")
        return keys
    if len(given.split()) >= 2:
        return [parse_pilot_line(given, source="the key line given")]
    raise TrustFileError(f"{given}: no such file (give a public key file or a quoted key line "
                         "'TYPE BASE64 [COMMENT]')")


def render_authorized_pilots(keys: Iterable[PublicKey]) -> str:
    lines = ["# dragoon authorized_pilots: the pilot keys this drone obeys, one per line.",
             "# Edit with `dragoon drone authorize` / `dragoon drone revoke` (docs/drone.md).",
             *(key.openssh() for key in keys)]
    return "\n".join(lines) + "\n"


def write_authorized_pilots(path: Path, keys: Iterable[PublicKey]) -> None:
    write_private_file(path, render_authorized_pilots(keys).encode("utf-8"))


# -- X25519: the drone's encryption key ------------------------------------------------------


def x25519_text(public: bytes) -> str:
    """The text form of an X25519 public key: standard base64 of its 32 bytes."""
    return base64.b64encode(public).decode("ascii")


def parse_x25519(text: str, *, source: str = "X25519 key") -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise TrustFileError(f"{source}: not base64") from None
    if len(raw) != X25519_BYTES:
        raise TrustFileError(f"{source}: an X25519 key is {X25519_BYTES} bytes, not {len(raw)}")
    return raw


def x25519_fingerprint(public: bytes) -> str:
    """``SHA256:`` + unpadded base64 of the key's SHA-256, the form of SSH fingerprints."""
    digest = hashlib.sha256(public).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class X25519Key:
    """A private X25519 key (PyNaCl's ``PrivateKey``, kept as its 32 secret bytes)."""

    secret: bytes

    @classmethod
    def generate(cls) -> X25519Key:
        from nacl.public import PrivateKey as NaclPrivateKey

        return cls(bytes(NaclPrivateKey.generate()))

    @property
    def public(self) -> bytes:
        from nacl.public import PrivateKey as NaclPrivateKey

        return bytes(NaclPrivateKey(self.secret).public_key)

    def save(self, path: Path) -> None:
        """Mode 0600, atomically: one line, ``x25519-private BASE64``."""
        write_private_file(path, f"x25519-private {x25519_text(self.secret)}\n".encode("ascii"))

    @classmethod
    def load(cls, path: Path) -> X25519Key:
        text = _read_text(path)
        if text is None:
            raise TrustFileError(f"{path}: no such file")
        parts = text.split()
        if len(parts) != 2 or parts[0] != "x25519-private":
            raise TrustFileError(f"{path}: not a dragoon X25519 private key")
        return cls(parse_x25519(parts[1], source=str(path)))

    def __repr__(self) -> str:  # never the secret, in a log or a traceback
        return f"X25519Key(public={x25519_text(self.public)})"


def certify_x25519(signer: sshsig.RawSigner, public: bytes) -> str:
    """The drone's signing key's SSHSIG over its X25519 public key (base64, as on the wire).

    What lets a pilot who trusts the drone's ed25519 fingerprint (``dragoon drones
    trust``) trust its encryption key too, without the relay's word.
    """
    return sshsig.sign_b64(signer, NS_DRONE_KEY, x25519_text(public).encode("ascii"))


def check_x25519_certificate(key: PublicKey, public: bytes, signature: str) -> None:
    """Raise SignatureError unless ``signature`` is ``key``'s certificate of ``public``."""
    sshsig.verify_b64(signature, NS_DRONE_KEY, x25519_text(public).encode("ascii"), key)


# -- the enrollment binding ------------------------------------------------------------------


def binding_message(name: str, ed25519: PublicKey, x25519: bytes) -> bytes:
    """The bytes the binding MACs: the tag, the drone's name and both its public keys.

    ``dragoon-enroll-v1 \\n NAME \\n ssh-ed25519 BASE64 \\n X25519-BASE64`` (no
    trailing newline; the ed25519 key without its comment, which is not part of it).
    """
    return b"\n".join([BINDING_TAG, name.encode("utf-8"),
                       ed25519.openssh(with_comment=False).encode("ascii"),
                       x25519_text(x25519).encode("ascii")])


def make_binding(binding_key: bytes, name: str, ed25519: PublicKey, x25519: bytes) -> str:
    """HMAC-SHA256 under the pilot's binding key, standard base64."""
    mac = hmac.new(binding_key, binding_message(name, ed25519, x25519), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def binding_holds(binding_key: bytes, name: str, ed25519: PublicKey, x25519: bytes,
                  binding: str) -> bool:
    """Whether ``binding`` is the MAC of these keys; compared in constant time."""
    return hmac.compare_digest(make_binding(binding_key, name, ed25519, x25519),
                               binding.strip())


# -- known_drones ----------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownDrone:
    """A drone a pilot believes: its name and both its public keys."""

    name: str
    ed25519: PublicKey
    x25519: bytes

    @property
    def fingerprint(self) -> str:
        return self.ed25519.fingerprint

    def line(self) -> str:
        return (f"{self.name} {self.ed25519.openssh(with_comment=False)} "
                f"{x25519_text(self.x25519)}")


def parse_known_drones(text: str, *, source: str) -> dict[str, KnownDrone]:
    """``NAME ssh-ed25519 BASE64 X25519-BASE64`` lines; blank and ``#`` lines skipped."""
    # Here, not at the top: a drone reads its trust files at start, and the spec rules are
    # the task path's (tests/drone/test_imports.py); only a pilot reads known_drones.
    from dragoon.shared.spec import SpecError, check_drone_name

    found: dict[str, KnownDrone] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{source}, line {number}"
        parts = line.split()
        if len(parts) != 4:
            raise TrustFileError(f"{where}: expected NAME ssh-ed25519 BASE64 X25519-BASE64")
        name, key_type, blob, x_text = parts
        try:
            check_drone_name(name)
        except SpecError as exc:
            raise TrustFileError(f"{where}: {exc}") from None
        if key_type != ED25519:
            raise TrustFileError(f"{where}: a drone key is ssh-ed25519, not {key_type!r}")
        try:
            key = PublicKey.from_openssh(f"{key_type} {blob}", source=where)
        except KeyLoadError as exc:
            raise TrustFileError(str(exc)) from None
        if name in found:
            raise TrustFileError(f"{where}: drone {name} is listed twice")
        found[name] = KnownDrone(name, key, parse_x25519(x_text, source=where))
    return found


def read_known_drones(path: Path) -> dict[str, KnownDrone]:
    text = _read_text(path)
    return {} if text is None else parse_known_drones(text, source=str(path))


def write_known_drones(path: Path, drones: Iterable[KnownDrone]) -> None:
    lines = ["# dragoon known_drones: the drones this pilot believes (NAME ED25519 X25519).",
             *(drone.line() for drone in sorted(drones, key=lambda d: d.name))]
    write_private_file(path, ("\n".join(lines) + "\n").encode("utf-8"))

