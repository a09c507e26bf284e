"""Who to encrypt for (issue 13, docs/protocol.md "Recipients"): a pilot's certificate of its
X25519 key, and a drone's signed list of the pilots it obeys.

- **Pilot certificate**: SSHSIG by the pilot's SSH key (file or ssh-agent), namespace
  ``dragoon-pilot-key-v1``, over the base64 text of its X25519 public key: the same
  construction as the drone's certificate of its own X25519 key (``dragoon-drone-key-v1``,
  shared/trust.py), so an agent key, which can sign but not decrypt, still speaks for one
  encryption key.
- **Pilots list**: the drone's ``authorized_pilots`` in one canonical text, signed by the
  drone's ed25519 key in namespace ``dragoon-drone-pilots-v1``::

      dragoon-drone-pilots-v1
      drone NAME
      version N
      ssh-ed25519 BASE64
      …

  one key a line, without its comment, in the file's order, each once; a final newline.
  ``version`` is the drone's signing time in milliseconds, always above the last one it
  signed (drone/pilots_publish.py keeps it across restarts). The name stops a list of
  one drone standing for another's; the version lets a pilot refuse a list older than
  one it has seen (a relay replaying the list from before a ``dragoon drone revoke``).
  Parsing is strict: a text that does not render back byte for byte is refused, so there
  is one reading of a signed list.

One parser and one renderer for each, shared by the drone, the relay and the pilot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from dragoon.shared import sshsig
from dragoon.shared.constants import NS_DRONE_PILOTS, NS_PILOT_KEY
from dragoon.shared.errors import DragoonError, KeyLoadError
from dragoon.shared.keys import KEY_TYPES, PublicKey
from dragoon.shared.trust import x25519_text

LIST_TAG: Final = NS_DRONE_PILOTS  # the list's first line names its layout
MAX_LIST_PILOTS: Final = 1000  # a drone obeys a handful; the cap bounds what a relay stores
MAX_LIST_BYTES: Final = 1 << 20


class PilotsListError(DragoonError):
    """A pilots list that can't be read; the text says why in one line."""

    code = "bad_pilots_list"


# -- the pilot's certificate ---------------------------------------------------------------


def certify_pilot_x25519(signer: sshsig.RawSigner, public: bytes) -> str:
    """The pilot's SSH key's SSHSIG over its X25519 public key (base64, as on the wire)."""
    return sshsig.sign_b64(signer, NS_PILOT_KEY, x25519_text(public).encode("ascii"))


def check_pilot_x25519_certificate(key: PublicKey, public: bytes, signature: str) -> None:
    """Raise SignatureError unless ``signature`` is ``key``'s certificate of ``public``."""
    sshsig.verify_b64(signature, NS_PILOT_KEY, x25519_text(public).encode("ascii"), key)


# -- the drone's signed pilots list --------------------------------------------------------


@dataclass(frozen=True)
class PilotsList:
    """The pilots a drone obeys, as it signed them."""

    drone: str
    version: int
    pilots: tuple[PublicKey, ...]

    def text(self) -> str:
        """The canonical text (module docstring): what the drone signs."""
        lines = [LIST_TAG, f"drone {self.drone}", f"version {self.version}",
                 *(key.openssh(with_comment=False) for key in self.pilots)]
        return "\n".join(lines) + "\n"


def make_pilots_list(drone: str, version: int, pilots: Iterable[PublicKey]) -> PilotsList:
    """A list from keys (each once, first place kept).

    The name is not checked here: the drone's own was at join, and the spec rules are the
    task path's, not loaded by an idle drone (tests/drone/test_imports.py); a parsed list's
    name is (``parse_pilots_list``)."""
    keys: list[PublicKey] = []
    for key in pilots:
        if key not in keys:
            keys.append(key)
    if len(keys) > MAX_LIST_PILOTS:
        raise PilotsListError(f"more than {MAX_LIST_PILOTS} pilots in one list")
    if version < 0:
        raise PilotsListError("a pilots list's version is not negative")
    return PilotsList(drone, version, tuple(keys))


def parse_pilots_list(text: str) -> PilotsList:
    """The list a canonical text holds; PilotsListError for anything else."""
    if len(text) > MAX_LIST_BYTES:
        raise PilotsListError("pilots list: too large")
    if not text.endswith("\n"):
        raise PilotsListError("pilots list: does not end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or lines[0] != LIST_TAG:
        raise PilotsListError(f"pilots list: does not start with {LIST_TAG!r}")
    name = lines[1].removeprefix("drone ")
    version = lines[2].removeprefix("version ")
    if name == lines[1] or version == lines[2] or not version.isascii() or not version.isdigit():
        raise PilotsListError("pilots list: expected 'drone NAME' and 'version N' lines")
    keys: list[PublicKey] = []
    for number, line in enumerate(lines[3:], 4):
        if line.split(" ", 1)[0] not in KEY_TYPES:
            raise PilotsListError(f"pilots list, line {number}: not a key line")
        try:
            keys.append(PublicKey.from_openssh(line, source=f"pilots list, line {number}"))
        except KeyLoadError as exc:
            raise PilotsListError(str(exc)) from None
    from dragoon.shared.spec import SpecError, check_drone_name

    try:
        check_drone_name(name)
    except SpecError as exc:
        raise PilotsListError(f"pilots list: {exc}") from None
    parsed = make_pilots_list(name, int(version), keys)
    if parsed.text() != text:
        raise PilotsListError("pilots list: not in its canonical form (a comment, a key "
                              "twice, or extra spaces)")
    return parsed


def sign_pilots_list(signer: sshsig.RawSigner, pilots: PilotsList) -> str:
    """The drone's SSHSIG over the list's canonical text (base64)."""
    return sshsig.sign_b64(signer, NS_DRONE_PILOTS, pilots.text().encode("utf-8"))


def check_pilots_list(key: PublicKey, text: str, signature: str) -> PilotsList:
    """The list, once ``key`` is shown to have signed exactly ``text``.

    SignatureError when it did not, PilotsListError when the text is no list."""
    sshsig.verify_b64(signature, NS_DRONE_PILOTS, text.encode("utf-8"), key)
    return parse_pilots_list(text)
