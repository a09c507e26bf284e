"""End-to-end encryption of a task (issue 13, piece 3): one task key, and records for its bytes.

The relay carries every byte of a task but must read none of them. The pilot makes a
random 32-byte **task key** per task and wraps it once per recipient (the drone, and
every pilot that may read the task) in a libsodium sealed box to that recipient's
X25519 key: ``wrap_key`` / ``unwrap_key``. Under the task key:

- the **payload** (the task's full spec) is one XChaCha20-Poly1305 message,
  ``seal_payload`` / ``open_payload``; the pilot's signed order carries its SHA-256;
- every **stream** of bytes the task produces or takes (stdout, stderr, their order,
  stdin, an artifact, a fetched file, the inbox) is a sequence of **records** under a
  key of its own, ``stream_key(task_key, kind, name)`` (BLAKE2b keyed by the task key).

A record is ``header || nonce || ciphertext``::

    header   17 bytes, clear: u32 plaintext length, u64 plaintext offset,
             u32 index, u8 flags (bit 0: final), all big-endian
    nonce    24 random bytes
    ciphertext  plaintext length + 16 (the Poly1305 tag)

The associated data is ``dragoon-record-v1`` NUL task id NUL stream kind NUL stream
name NUL header: a record opens only under its own task, stream, index and offset.
A reader (``RecordReader``) demands index 0, 1, 2… and offsets that follow each
other without a gap, and nothing after a ``final`` record, so a relay that cuts,
reorders, duplicates, splices or forges records is caught at the first one it
touched, and a stream that stops without its final record is known unfinished. The
header is in clear so the relay and a resuming drone can walk the records without
the key; what it shows (lengths, offsets) the relay sees anyway as sizes.

Random 24-byte nonces mean a drone that seals the same bytes again after a crash can
never reuse a nonce. All of it is PyNaCl (libsodium): nothing here is built from
lower pieces than a sealed box, an AEAD and a keyed hash.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from dragoon.shared.errors import DragoonError
from nacl import bindings, exceptions, public, utils
from nacl.encoding import RawEncoder
from nacl.hash import blake2b

KEY_BYTES: Final = 32
NONCE_BYTES: Final = bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
TAG_BYTES: Final = bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16
_HEADER: Final = struct.Struct(">IQIB")
HEADER_BYTES: Final = _HEADER.size  # 17
OVERHEAD: Final = HEADER_BYTES + NONCE_BYTES + TAG_BYTES  # 57 bytes a record
FINAL: Final = 0x01
# The largest plaintext a record may hold: what a reader is willing to buffer for one.
MAX_RECORD: Final = 1 << 20
# Fixed-size records for files (artifacts, fetched files): plaintext byte N is in record
# N // BLOB_RECORD, so a byte range maps to a range of records (HTTP Range resumes).
BLOB_RECORD: Final = 64 * 1024
_RECORD_AD: Final = b"dragoon-record-v1\x00"
_PAYLOAD_AD: Final = b"dragoon-payload-v1\x00"
_KEY_PERSON: Final = b"dragoon-key-v1"  # BLAKE2b personalisation, at most 16 bytes
WRAP_BYTES: Final = KEY_BYTES + 48  # a sealed box: 32-byte ephemeral key, 16-byte tag


class E2EError(DragoonError):
    """A wrap, payload or record that does not open, or does not hold where it stands.

    ``detail`` is one line for the pilot; in a record stream it names the record.
    """

    code = "tampered"


def new_task_key() -> bytes:
    return utils.random(KEY_BYTES)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def unb64(text: object, *, what: str) -> bytes:
    if not isinstance(text, str):
        raise E2EError(f"{what} is not base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise E2EError(f"{what} is not base64") from None


# -- the task key, wrapped per recipient ---------------------------------------------------


def wrap_key(task_key: bytes, x25519_public: bytes) -> str:
    """The task key sealed to one recipient's X25519 key (base64, as on the wire)."""
    return b64(public.SealedBox(public.PublicKey(x25519_public)).encrypt(task_key))


def unwrap_key(wrap: object, x25519_secret: bytes) -> bytes:
    """The task key out of a wrap sealed to us; E2EError if it was sealed to another key
    or altered on the way."""
    sealed = unb64(wrap, what="the task key's wrap")
    try:
        key = public.SealedBox(public.PrivateKey(x25519_secret)).decrypt(sealed)
    except exceptions.CryptoError:
        raise E2EError("the task key's wrap does not open with this key (sealed to another "
                       "key, or altered)") from None
    if len(key) != KEY_BYTES:
        raise E2EError("the task key's wrap holds no task key")
    return key


# -- the payload ---------------------------------------------------------------------------


def seal_payload(task_key: bytes, plaintext: bytes, *, order_id: str) -> bytes:
    """``nonce || ciphertext`` of the task's spec, bound to the order's id."""
    nonce = utils.random(NONCE_BYTES)
    return nonce + bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, _PAYLOAD_AD + order_id.encode("ascii"), nonce, task_key)


def open_payload(task_key: bytes, sealed: bytes, *, order_id: str) -> bytes:
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise E2EError("the task's payload is too short to be one")
    try:
        return bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            sealed[NONCE_BYTES:], _PAYLOAD_AD + order_id.encode("ascii"),
            sealed[:NONCE_BYTES], task_key)
    except exceptions.CryptoError:
        raise E2EError("the task's payload does not open under its task key") from None


# -- streams of records --------------------------------------------------------------------


def stream_key(task_key: bytes, kind: str, name: str) -> bytes:
    """The key of one stream: ``kind`` is ``out`` (stdout, stderr, order), ``stdin``,
    ``artifact``, ``fetch``, ``inbox`` or ``text`` (``seal_text``); ``name`` tells streams of
    one kind apart."""
    return blake2b(kind.encode() + b"\x00" + name.encode("utf-8"), key=task_key,
                   person=_KEY_PERSON, digest_size=KEY_BYTES, encoder=RawEncoder)


@dataclass(frozen=True)
class Position:
    """Where the next record of a stream goes: its index and its plaintext offset."""

    index: int = 0
    offset: int = 0


@dataclass(frozen=True)
class Header:
    length: int
    offset: int
    index: int
    final: bool

    @property
    def record_size(self) -> int:
        return OVERHEAD + self.length

    @property
    def after(self) -> Position:
        return Position(self.index + 1, self.offset + self.length)


def parse_header(raw: bytes) -> Header:
    length, offset, index, flags = _HEADER.unpack(raw[:HEADER_BYTES])
    if flags & ~FINAL:
        raise E2EError(f"record {index} has unknown flags {flags:#x}")
    if length > MAX_RECORD:
        raise E2EError(f"record {index} claims {length} bytes, more than a record holds")
    return Header(length, offset, index, bool(flags & FINAL))


def _ad(task_id: str, kind: str, name: str, header: bytes) -> bytes:
    return b"".join((_RECORD_AD, task_id.encode("ascii"), b"\x00", kind.encode(), b"\x00",
                     name.encode("utf-8"), b"\x00", header))


class RecordWriter:
    """Seals one stream's plaintext into records, in order, from ``at`` (a resumed stream
    starts where the relay's stored records end)."""

    def __init__(self, task_key: bytes, *, task_id: str, kind: str, name: str,
                 at: Position = Position()) -> None:
        self._key = stream_key(task_key, kind, name)
        self._task_id, self._kind, self._name = task_id, kind, name
        self.position = at
        self.finished = False

    def seal(self, plaintext: bytes, *, final: bool = False) -> bytes:
        if self.finished:
            raise ValueError("the stream's final record is sealed already")
        if len(plaintext) > MAX_RECORD:
            raise ValueError(f"a record holds at most {MAX_RECORD} bytes")
        at = self.position
        header = _HEADER.pack(len(plaintext), at.offset, at.index, FINAL if final else 0)
        nonce = utils.random(NONCE_BYTES)
        sealed = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            plaintext, _ad(self._task_id, self._kind, self._name, header), nonce, self._key)
        self.position = Position(at.index + 1, at.offset + len(plaintext))
        self.finished = final
        return header + nonce + sealed

    def seal_all(self, plaintext: bytes, *, record: int = BLOB_RECORD,
                 final: bool = False) -> Iterator[bytes]:
        """``plaintext`` as records of ``record`` bytes (the last one shorter); with
        ``final``, the last record ends the stream (an empty one if there is no byte)."""
        if not plaintext and final:
            yield self.seal(b"", final=True)
            return
        for start in range(0, len(plaintext), record):
            piece = plaintext[start:start + record]
            yield self.seal(piece, final=final and start + record >= len(plaintext))


class RecordReader:
    """Opens one stream's records as they arrive, in any slicing, and checks each holds
    where it stands: index and offset in sequence, nothing after the final record.

    ``feed`` returns the plaintext of every whole record so far; a partial record waits
    for the rest. ``consumed`` is how many stored bytes have been opened (always a record
    boundary, where a follower may resume), ``position`` what comes next.
    """

    def __init__(self, task_key: bytes, *, task_id: str, kind: str, name: str,
                 at: Position = Position(), consumed: int = 0) -> None:
        self._key = stream_key(task_key, kind, name)
        self._task_id, self._kind, self._name = task_id, kind, name
        self.position = at
        self.consumed = consumed
        self.finished = False
        self._pending = bytearray()

    @property
    def where(self) -> str:
        return f"task {self._task_id} {self._name}"

    def feed(self, data: bytes) -> bytes:
        buffer = bytes(self._pending) + data if self._pending else data
        view = memoryview(buffer)
        out: list[bytes] = []
        used = 0
        try:
            while len(view) - used >= HEADER_BYTES:
                header = parse_header(bytes(view[used:used + HEADER_BYTES]))
                if len(view) - used < header.record_size:
                    break
                out.append(self._open(header, view[used:used + header.record_size]))
                used += header.record_size
                self.consumed += header.record_size
        except E2EError as exc:
            raise E2EError(f"{self.where}: {exc.detail}; the relay altered the stream, "
                           "nothing after this point is shown") from None
        self._pending = bytearray(view[used:])
        return b"".join(out)

    def _open(self, header: Header, record: memoryview) -> bytes:
        if self.finished:
            raise E2EError(f"a record after the final one (record {header.index})")
        at = self.position
        if header.index != at.index:
            raise E2EError(f"record {header.index} stands where record {at.index} belongs "
                           "(a record cut, repeated or moved)")
        if header.offset != at.offset:
            raise E2EError(f"record {header.index} claims offset {header.offset}, "
                           f"not {at.offset}")
        raw_header = bytes(record[:HEADER_BYTES])
        nonce = bytes(record[HEADER_BYTES:HEADER_BYTES + NONCE_BYTES])
        try:
            plaintext = bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                bytes(record[HEADER_BYTES + NONCE_BYTES:]),
                _ad(self._task_id, self._kind, self._name, raw_header), nonce, self._key)
        except exceptions.CryptoError:
            raise E2EError(f"record {header.index} does not open (forged or "
                           "altered)") from None
        self.position = header.after
        self.finished = header.final
        return plaintext

    @property
    def partial(self) -> int:
        """Bytes of a record begun but not yet whole."""
        return len(self._pending)


def walk_headers(data: bytes, *, start: Position = Position()) -> tuple[int, Position, bool]:
    """Walk whole records in ``data`` by their clear headers, without the key: how many
    bytes they span, the position after them, and whether the last was final. What a
    resuming drone reads from its own sealed spool (positions are checked, tags are not:
    the drone trusts its own disk)."""
    used, at, final = 0, start, False
    while len(data) - used >= HEADER_BYTES:
        header = parse_header(data[used:used + HEADER_BYTES])
        if len(data) - used < header.record_size:
            break
        used += header.record_size
        at, final = header.after, header.final
    return used, at, final


def blob_size(plaintext_size: int) -> int:
    """The stored size of a file of ``plaintext_size`` bytes in BLOB_RECORD records, the
    last one final (an empty file is one empty final record)."""
    records = max(1, -(-plaintext_size // BLOB_RECORD))
    return plaintext_size + records * OVERHEAD


def blob_span(start: int, end: int) -> tuple[int, int, Position]:
    """The stored byte range holding plaintext ``[start, end)`` of a file in BLOB_RECORD
    records, and the position of its first record: a Range request of the plaintext
    becomes one of the stored records."""
    first, last = start // BLOB_RECORD, max(start, end - 1) // BLOB_RECORD
    record = BLOB_RECORD + OVERHEAD
    return first * record, (last + 1) * record, Position(first, first * BLOB_RECORD)


# -- short texts the drone says about a task ---------------------------------------------------

SEALED_TEXT: Final = "sealed:"  # the prefix of a sealed text field on the wire
MAX_TEXT_BYTES: Final = 1000  # of UTF-8, before sealing: the relay's field limits hold it


def seal_text(task_key: bytes, text: str, *, task_id: str, name: str) -> str:
    """A text the drone reports about a task it opened (its error, a note, a refusal), as
    one final record of kind ``text`` under ``name`` (``error``, ``note-3``):
    ``sealed:`` + base64. Cut to MAX_TEXT_BYTES first, on a character boundary."""
    raw = text.encode("utf-8")[:MAX_TEXT_BYTES].decode("utf-8", "ignore").encode("utf-8")
    writer = RecordWriter(task_key, task_id=task_id, kind="text", name=name)
    return SEALED_TEXT + b64(writer.seal(raw, final=True))


def is_sealed_text(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SEALED_TEXT)


def open_text(task_key: bytes, value: str, *, task_id: str, name: str) -> str:
    """The text of ``seal_text``; E2EError when it was altered, or moved from another task,
    name or position (a note swapped with another)."""
    reader = RecordReader(task_key, task_id=task_id, kind="text", name=name)
    plain = reader.feed(unb64(value[len(SEALED_TEXT):], what="a sealed text"))
    if not reader.finished or reader.partial:
        raise E2EError(f"task {task_id} {name}: the sealed text is cut")
    return plain.decode("utf-8", "replace")
