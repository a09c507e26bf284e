"""Real SSH keys and signatures for tests, made by OpenSSH's own ``ssh-keygen``.

Tests that need a key should get it from here rather than from dragoon's own
code, so that what is checked is interoperability with OpenSSH, not the code
agreeing with itself. Everything runs ``ssh-keygen`` from PATH; nothing is
mocked.

Typical use::

    keys = KeyMaker(tmp_path)
    path = keys.make("ed25519")           # private key; public key at path.pub
    blob = sign_with_ssh_keygen(path, "dragoon-request-v1", b"message")
    assert check_novalidate("dragoon-request-v1", b"message", blob, tmp_path).returncode == 0

RSA key generation costs a good fraction of a second, so test suites should
hold one ``KeyMaker`` per session (it caches by name) and copy keys when they
need to modify one.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ARMOR_BEGIN: Final = "-----BEGIN SSH SIGNATURE-----"
ARMOR_END: Final = "-----END SSH SIGNATURE-----"


@dataclass(frozen=True)
class KeySpec:
    """How to ask ssh-keygen for one kind of key."""

    key_type: str  # the -t argument
    bits: int | None = None  # the -b argument, when the type takes one


# The key kinds dragoon accepts (plus a too-small RSA key for the error paths).
KEY_SPECS: Final[dict[str, KeySpec]] = {
    "ed25519": KeySpec("ed25519"),
    "rsa": KeySpec("rsa", 3072),
    "ecdsa-p256": KeySpec("ecdsa", 256),
    "ecdsa-p384": KeySpec("ecdsa", 384),
    "ecdsa-p521": KeySpec("ecdsa", 521),
    "rsa-1024": KeySpec("rsa", 1024),
}
ACCEPTED_KINDS: Final = ("ed25519", "rsa", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521")


def ssh_keygen(*args: str | Path, stdin: bytes | None = None, check: bool = True
               ) -> subprocess.CompletedProcess[bytes]:
    """Run ``ssh-keygen`` with ``args``; on failure the error names the command and its stderr."""
    argv = ["ssh-keygen", *map(str, args)]
    done = subprocess.run(argv, input=stdin, capture_output=True, check=False, timeout=60)
    if check and done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode(errors='replace')}"
        )
    return done


def generate_key(path: Path, kind: str = "ed25519", *, passphrase: str = "",
                 comment: str | None = None, key_format: str | None = None) -> Path:
    """Make a fresh key at ``path`` (and ``path.pub``) with ssh-keygen; return ``path``.

    ``kind`` is a name of KEY_SPECS, or any ``-t`` type ssh-keygen knows (e.g. ``dsa``).
    ``key_format`` is ssh-keygen's ``-m``: ``PEM`` (PKCS#1 RSA / SEC1 EC), ``PKCS8``
    or ``RFC4716``; None leaves OpenSSH's own format.
    """
    spec = KEY_SPECS.get(kind, KeySpec(kind))
    args: list[str | Path] = ["-q", "-t", spec.key_type, "-N", passphrase, "-f", path,
                              "-C", comment if comment is not None else f"{kind}@dragoon-tests"]
    if spec.bits is not None:
        args += ["-b", str(spec.bits)]
    if key_format is not None:
        args += ["-m", key_format]
    ssh_keygen(*args)
    return path


def reformat_key(source: Path, dest: Path, *, key_format: str, passphrase: str = "",
                 old_passphrase: str = "") -> Path:
    """Copy a private key to ``dest`` rewritten by ``ssh-keygen -p -m FORMAT``.

    This gives the PEM/PKCS#8 (and encrypted) variants of one key without
    generating a new one. OpenSSH needs passphrases of five characters or more.
    ed25519 keys have no PEM form in OpenSSH; ssh-keygen then keeps its own format.
    """
    shutil.copyfile(source, dest)
    dest.chmod(0o600)
    shutil.copyfile(f"{source}.pub", f"{dest}.pub")
    ssh_keygen("-q", "-p", "-P", old_passphrase, "-N", passphrase, "-m", key_format, "-f", dest)
    return dest


def sha1_rsa_signature(key_path: Path, data: bytes) -> bytes:
    """An ``ssh-rsa`` (SHA-1) SSH signature blob over ``data``, as pre-2017 clients made them.

    Made with cryptography from the OpenSSH key file, for tests that must show
    SHA-1 is refused even where the local ssh-agent no longer makes it.
    """
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = serialization.load_ssh_private_key(Path(key_path).read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    sha1 = hashes.SHA1()  # noqa: S303 - producing the insecure signature is the point
    raw = key.sign(data, padding.PKCS1v15(), sha1)
    return _ssh_string(b"ssh-rsa") + _ssh_string(raw)


def _ssh_string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def fingerprint_by_ssh_keygen(public_key_path: Path) -> str:
    """The ``SHA256:…`` fingerprint exactly as ``ssh-keygen -lf`` prints it."""
    out = ssh_keygen("-l", "-E", "sha256", "-f", public_key_path).stdout.decode()
    return out.split()[1]


def public_line(public_key_path: Path) -> str:
    """The ``type base64 comment`` line of a ``.pub`` file."""
    return Path(public_key_path).read_text(encoding="ascii").strip()


def dearmor(text: str) -> bytes:
    """The binary SSHSIG blob inside ``ssh-keygen -Y sign`` output."""
    lines = [line.strip() for line in text.strip().splitlines()]
    assert lines[0] == ARMOR_BEGIN and lines[-1] == ARMOR_END, text
    return base64.b64decode("".join(lines[1:-1]))


def armor(blob: bytes) -> str:
    """The armored text ssh-keygen reads back, made independently of shared.sshsig."""
    b64 = base64.b64encode(blob).decode("ascii")
    body = [b64[i : i + 70] for i in range(0, len(b64), 70)]
    return "\n".join([ARMOR_BEGIN, *body, ARMOR_END]) + "\n"


def sign_with_ssh_keygen(key_path: Path, namespace: str, message: bytes, *,
                         env: dict[str, str] | None = None, hash_algorithm: str | None = None
                         ) -> bytes:
    """``ssh-keygen -Y sign`` over ``message``; returns the binary SSHSIG blob.

    Give the ``.pub`` path and an ``env`` holding ``SSH_AUTH_SOCK`` to have
    ssh-keygen sign through the agent instead of with the private key file.
    """
    args = ["ssh-keygen", "-Y", "sign", "-n", namespace, "-f", str(key_path)]
    if hash_algorithm is not None:
        args += ["-O", f"hashalg={hash_algorithm}"]
    done = subprocess.run(args, input=message, capture_output=True, check=False, timeout=60,
                          env=env)
    if done.returncode != 0:
        raise RuntimeError(f"ssh-keygen -Y sign failed: {done.stderr.decode(errors='replace')}")
    return dearmor(done.stdout.decode("ascii"))


def check_novalidate(namespace: str, message: bytes, signature: bytes, workdir: Path
                     ) -> subprocess.CompletedProcess[bytes]:
    """``ssh-keygen -Y check-novalidate``: is ``signature`` (binary SSHSIG) good for ``message``?

    Returns the finished process; returncode 0 means OpenSSH accepts it.
    """
    sig_path = _write_signature(workdir, signature)
    return subprocess.run(
        ["ssh-keygen", "-Y", "check-novalidate", "-n", namespace, "-s", str(sig_path)],
        input=message, capture_output=True, check=False, timeout=60,
    )


def verify_with_ssh_keygen(public_key_line: str, namespace: str, message: bytes,
                           signature: bytes, workdir: Path, *, identity: str = "pilot@dragoon"
                           ) -> subprocess.CompletedProcess[bytes]:
    """``ssh-keygen -Y verify`` against an allowed_signers file that trusts only this key."""
    allowed = workdir / f"allowed_signers-{_unique(workdir)}"
    key_type, b64 = public_key_line.split()[:2]
    allowed.write_text(f'{identity} namespaces="{namespace}" {key_type} {b64}\n', encoding="ascii")
    sig_path = _write_signature(workdir, signature)
    return subprocess.run(
        ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", identity, "-n", namespace,
         "-s", str(sig_path)],
        input=message, capture_output=True, check=False, timeout=60,
    )


def _unique(workdir: Path) -> int:
    return sum(1 for _ in workdir.iterdir())


def _write_signature(workdir: Path, signature: bytes) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"sig-{_unique(workdir)}.sig"
    path.write_text(armor(signature), encoding="ascii")
    return path


class KeyMaker:
    """Makes each named key once in ``directory`` and hands back the same path afterwards.

    Meant to live for a whole test session (RSA keygen is slow). Treat the
    keys as read-only: copy one (``reformat_key``) before changing it.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._made: dict[str, Path] = {}

    def make(self, kind: str, *, passphrase: str = "", name: str | None = None) -> Path:
        """The private key path for ``kind`` (a KEY_SPECS name); the public key is ``path.pub``."""
        label = name or (f"{kind}-locked" if passphrase else kind)
        if label not in self._made:
            path = self.directory / label
            self._made[label] = generate_key(path, kind, passphrase=passphrase)
        return self._made[label]

    def public(self, kind: str) -> Path:
        """The ``.pub`` path of ``make(kind)``."""
        return Path(f"{self.make(kind)}.pub")
