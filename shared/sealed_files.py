"""Files sealed end to end (issue 13, piece 4): artifacts and fetched files as records.

The relay stores a file as it stores any blob (by the SHA-256 of what it received), but
what it receives is the file sealed: ``e2e.BLOB_RECORD`` (64 KiB) plaintext records under
the stream key of the file (``e2e.stream_key(key, kind, name)``), the last one final, so
plaintext byte N is in record N // BLOB_RECORD and a download resumes at a record
boundary (``e2e.blob_span``). Beside it travels the file's **metadata**, one final record
of its own stream (``name + ".meta"``) holding canonical JSON: the plaintext ``size`` and
``sha256``, and for an artifact its ``path``. The relay sees an opaque name, the stored
size and the metadata's length; the pilot checks the plaintext against the metadata.

- an **artifact**: key = the task key, ``task_id`` = the task's id, kind ``artifact``,
  name = the artifact's index in the task's selection (``"0"``, ``"1"``…);
- a **fetched file**: key = the fetch's own key (``seal_payload``-sealed path, wrapped to
  the drone and the pilot), ``task_id`` = the fetch order's id, kind ``fetch``, name
  ``data``.

The drone seals a file once, into a spool beside its task (or its fetch), and uploads the
spool: a resend after a crash is the same bytes, which the relay takes as a resend.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from dragoon.shared import e2e
from dragoon.shared.canonical import canonical_json, sha256_hex
from dragoon.shared.orders import MAX_FETCH_PATH

META_SUFFIX: Final = ".meta"
MAX_META: Final = 4096  # bytes of metadata plaintext (an artifact path is at most 1024)
FETCH_DATA: Final = "data"  # the stream name of a fetched file
_START: Final = e2e.Position()


@dataclass(frozen=True)
class FileStream:
    """Where a file's records belong: the key they are sealed under and their stream."""

    key: bytes
    task_id: str
    kind: str
    name: str

    @property
    def meta(self) -> FileStream:
        return FileStream(self.key, self.task_id, self.kind, self.name + META_SUFFIX)

    def writer(self, at: e2e.Position = _START) -> e2e.RecordWriter:
        return e2e.RecordWriter(self.key, task_id=self.task_id, kind=self.kind, name=self.name,
                                at=at)

    def reader(self, at: e2e.Position = _START, consumed: int = 0) -> e2e.RecordReader:
        return e2e.RecordReader(self.key, task_id=self.task_id, kind=self.kind, name=self.name,
                                at=at, consumed=consumed)


@dataclass(frozen=True)
class Sealed:
    """A file sealed into a spool: its plaintext's size and hash, the spool's, and the
    metadata (base64 of its one record) that goes with it."""

    size: int
    sha256: str
    stored_size: int
    stored_sha256: str
    meta: str

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256, "stored_size": self.stored_size,
                "stored_sha256": self.stored_sha256, "meta": self.meta}

    @classmethod
    def from_json(cls, raw: object) -> Sealed | None:
        try:
            assert isinstance(raw, dict)
            return cls(int(raw["size"]), str(raw["sha256"]), int(raw["stored_size"]),
                       str(raw["stored_sha256"]), str(raw["meta"]))
        except (AssertionError, KeyError, TypeError, ValueError):
            return None


def seal_meta(stream: FileStream, fields: dict[str, Any]) -> str:
    """The metadata of the file in ``stream``: one final record, base64."""
    plain = canonical_json(fields)
    if len(plain) > MAX_META:
        raise ValueError(f"a file's metadata holds at most {MAX_META} bytes")
    return e2e.b64(stream.meta.writer().seal(plain, final=True))


def open_meta(stream: FileStream, text: object) -> dict[str, Any]:
    """The metadata of the file in ``stream`` with ``size`` and ``sha256`` checked for form;
    E2EError when it does not open there (altered, or another file's)."""
    raw = e2e.unb64(text, what="the file's metadata")
    reader = stream.meta.reader()
    plain = reader.feed(raw)
    if not reader.finished or reader.partial:
        raise e2e.E2EError(f"{reader.where}: the file's metadata is cut")
    try:
        fields = json.loads(plain)
    except ValueError:
        raise e2e.E2EError("the file's metadata is not JSON") from None
    size, sha256 = (fields.get("size"), fields.get("sha256")) if isinstance(
        fields, dict) else (None, None)
    if (not isinstance(size, int) or isinstance(size, bool) or size < 0
            or not isinstance(sha256, str) or len(sha256) != 64):
        raise e2e.E2EError("the file's metadata has no size and sha256")
    return fields


def seal_file(fd: int, size: int, spool: Path, stream: FileStream, **meta: Any) -> Sealed:
    """Seal the first ``size`` bytes of ``fd`` (fewer, if it shrank) into ``spool``.

    Blocking (run it off the event loop). Every record but the last holds exactly
    BLOB_RECORD bytes, the last is final; the plaintext hash is of exactly the bytes
    sealed, so a file that changes while it is read is sent as it was read.
    """
    writer = stream.writer()
    plain, stored = hashlib.sha256(), hashlib.sha256()
    offset, stored_size = 0, 0
    tmp = spool.with_name(spool.name + ".tmp")
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        block = os.pread(fd, min(e2e.BLOB_RECORD, size), 0) if size else b""
        while True:
            offset += len(block)
            more = len(block) == e2e.BLOB_RECORD and offset < size
            following = os.pread(fd, min(e2e.BLOB_RECORD, size - offset), offset) if more \
                else b""
            record = writer.seal(block, final=not following)
            plain.update(block)
            stored.update(record)
            stored_size += len(record)
            _write_all(out, record)
            if not following:
                break
            block = following
        os.fsync(out)
    finally:
        os.close(out)
    os.replace(tmp, spool)
    sha256 = plain.hexdigest()
    return Sealed(offset, sha256, stored_size, stored.hexdigest(),
                  seal_meta(stream, {**meta, "size": offset, "sha256": sha256}))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class FileOpener:
    """Opens a sealed file as it downloads, from any record boundary: ``resume_at(done)``
    says where a Range request for the plaintext after ``done`` bytes starts; ``feed``
    gives the plaintext; ``check`` at the end says whether it is the whole file the
    metadata describes."""

    def __init__(self, stream: FileStream, *, size: int, sha256: str) -> None:
        self.stream, self.size, self.sha256 = stream, size, sha256
        self.reader = stream.reader()
        self.digest = hashlib.sha256()
        self.done = 0

    @property
    def finished(self) -> bool:
        """The final record is opened: nothing more to ask for."""
        return self.reader.finished

    def restart(self) -> None:
        self.reader, self.digest, self.done = self.stream.reader(), hashlib.sha256(), 0

    def resume(self) -> int:
        """The stored offset to ask from, with the reader set there (``done`` is always a
        record boundary: only whole records are ever given out)."""
        if self.done == 0:
            self.reader = self.stream.reader()
            return 0
        start, _end, at = e2e.blob_span(self.done, self.done + 1)
        if at.offset != self.done:  # not a boundary: start again rather than guess
            self.restart()
            return 0
        self.reader = self.stream.reader(at=at, consumed=start)
        return start

    def feed(self, data: bytes) -> bytes:
        plain = self.reader.feed(data)
        if self.done + len(plain) > self.size:
            raise e2e.E2EError(f"{self.reader.where}: more bytes than the file's metadata says "
                               f"({self.size})")
        self.digest.update(plain)
        self.done += len(plain)
        return plain

    def check(self) -> None:
        if not self.reader.finished or self.reader.partial:
            raise e2e.E2EError(f"{self.reader.where}: the file ends without its final record "
                               f"(cut at {self.done} of {self.size} bytes)")
        if self.done != self.size or self.digest.hexdigest() != self.sha256:
            raise e2e.E2EError(f"{self.reader.where}: SHA-256 {self.digest.hexdigest()} is not "
                               f"the sealed metadata's {self.sha256}")


# -- a sealed fetch: the path under a fetch key of its own ---------------------------------


@dataclass(frozen=True)
class SealedFetch:
    payload: str  # base64 of nonce || ciphertext of {"path": PATH}
    wraps: dict[str, str]  # recipient id -> the fetch key sealed to it
    key: bytes
    payload_sha256: str


def seal_fetch(path: str, *, order_id: str, recipients: Iterable[tuple[str, bytes]]
               ) -> SealedFetch:
    """The path a pilot fetches, sealed under a fresh fetch key bound to the order's id, the
    key wrapped to each ``(fingerprint, x25519)`` recipient (the drone, the pilot)."""
    if not path or len(path) > MAX_FETCH_PATH:
        raise ValueError(f"a fetched path is 1 to {MAX_FETCH_PATH} characters")
    key = e2e.new_task_key()
    sealed = e2e.seal_payload(key, canonical_json({"path": path}), order_id=order_id)
    wraps = {fingerprint: e2e.wrap_key(key, x25519) for fingerprint, x25519 in recipients}
    return SealedFetch(e2e.b64(sealed), wraps, key, sha256_hex(sealed))


def open_fetch(order: Any, *, payload: object, wrap: object, x25519_secret: bytes
               ) -> tuple[str, bytes]:
    """The path and fetch key of a fetch order, once the payload is the one the order signs
    and opens under the key from our wrap; E2EError says which check failed."""
    if order.kind != "fetch":
        raise e2e.E2EError(f"a {order.kind} order is not a fetch's")
    if wrap is None:
        raise e2e.E2EError("the fetch key is not wrapped for this key")
    sealed = e2e.unb64(payload, what="the fetch's payload")
    if sha256_hex(sealed) != order.fields["fetch"]["payload_sha256"]:
        raise e2e.E2EError("the fetch's payload is not the one its pilot signed")
    key = e2e.unwrap_key(wrap, x25519_secret)
    try:
        fields = json.loads(e2e.open_payload(key, sealed, order_id=order.id))
    except ValueError:
        raise e2e.E2EError("the fetch's sealed path is not JSON") from None
    path = fields.get("path") if isinstance(fields, dict) else None
    if not isinstance(path, str) or not path or len(path) > MAX_FETCH_PATH:
        raise e2e.E2EError("the fetch's payload holds no path")
    return path, key


def fetch_stream(key: bytes, order_id: str) -> FileStream:
    return FileStream(key, order_id, "fetch", FETCH_DATA)


SEALED_ERROR: Final = "sealed:"  # a fetch's refusal, sealed under its fetch key
_MAX_ERROR: Final = 1000  # bytes of a refusal's text (the relay keeps 2000 characters)


def seal_error(key: bytes, order_id: str, reason: str) -> str:
    """A drone's refusal of a fetch, sealed under the fetch key: it may name the path or the
    drone's folders. Bound to the order apart from the payload (``/error``)."""
    text = reason.encode("utf-8")[:_MAX_ERROR]
    return SEALED_ERROR + e2e.b64(e2e.seal_payload(key, text, order_id=order_id + "/error"))


def open_error(key: bytes, order_id: str, error: object) -> str:
    """The refusal's text: opened when sealed, as the relay holds it otherwise (a refusal
    made before the drone had the key names no path: a bad order, a wrap for another key)."""
    text = str(error or "failed")
    if not text.startswith(SEALED_ERROR):
        return text
    sealed = e2e.unb64(text[len(SEALED_ERROR):], what="the fetch's sealed error")
    return e2e.open_payload(key, sealed, order_id=order_id + "/error").decode(
        "utf-8", "replace")
