"""shared/sealed_files.py: a file sealed into BLOB_RECORD records with its metadata, opened
from any record boundary; a fetch's sealed path and sealed refusal."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from dragoon.shared import e2e, orders
from dragoon.shared.sealed_files import (
    FileOpener,
    FileStream,
    fetch_stream,
    open_error,
    open_fetch,
    open_meta,
    seal_error,
    seal_fetch,
    seal_file,
    seal_meta,
)
from dragoon.shared.trust import X25519Key

KEY = bytes(range(32))
STREAM = FileStream(KEY, "t-abcdefghij", "artifact", "0")


def sealed(tmp_path: Path, data: bytes, stream: FileStream = STREAM, **meta: object) -> tuple[
        bytes, dict]:
    source = tmp_path / "source"
    source.write_bytes(data)
    fd = os.open(source, os.O_RDONLY)
    try:
        result = seal_file(fd, len(data), tmp_path / "spool", stream, **meta)
    finally:
        os.close(fd)
    stored = (tmp_path / "spool").read_bytes()
    assert (result.stored_size, result.stored_sha256) == (
        len(stored), hashlib.sha256(stored).hexdigest())
    assert not (tmp_path / "spool.tmp").exists()
    return stored, open_meta(stream, result.meta)


def opened(stored: bytes, meta: dict, stream: FileStream = STREAM) -> bytes:
    opener = FileOpener(stream, size=meta["size"], sha256=meta["sha256"])
    plain = opener.feed(stored)
    opener.check()
    return plain


@pytest.mark.parametrize("size", [0, 1, e2e.BLOB_RECORD - 1, e2e.BLOB_RECORD,
                                  e2e.BLOB_RECORD + 1, 3 * e2e.BLOB_RECORD])
def test_a_file_seals_to_fixed_records_the_last_one_final(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    stored, meta = sealed(tmp_path, data, path="out/m.pt")
    assert len(stored) == e2e.blob_size(size)
    assert meta == {"path": "out/m.pt", "size": size, "sha256": hashlib.sha256(data).hexdigest()}
    assert opened(stored, meta) == data
    used, at, final = e2e.walk_headers(stored)
    assert (used, at.offset, final) == (len(stored), size, True)


def test_a_file_that_shrank_is_sealed_as_read(tmp_path: Path) -> None:
    data = os.urandom(100)
    source = tmp_path / "source"
    source.write_bytes(data)
    fd = os.open(source, os.O_RDONLY)
    try:
        result = seal_file(fd, 5 * e2e.BLOB_RECORD, tmp_path / "spool", STREAM)
    finally:
        os.close(fd)
    meta = open_meta(STREAM, result.meta)
    assert meta["size"] == 100 and opened((tmp_path / "spool").read_bytes(), meta) == data


def test_a_download_resumes_at_a_record_boundary(tmp_path: Path) -> None:
    data = os.urandom(3 * e2e.BLOB_RECORD + 10)
    stored, meta = sealed(tmp_path, data)
    opener = FileOpener(STREAM, size=meta["size"], sha256=meta["sha256"])
    first = opener.feed(stored[:e2e.BLOB_RECORD + e2e.OVERHEAD + e2e.BLOB_RECORD])
    assert first == data[:e2e.BLOB_RECORD]  # the second record is not whole yet
    start = opener.resume()
    assert start == e2e.BLOB_RECORD + e2e.OVERHEAD
    rest = opener.feed(stored[start:])
    opener.check()
    assert first + rest == data


def test_metadata_of_another_artifact_or_task_does_not_open(tmp_path: Path) -> None:
    meta = seal_meta(STREAM, {"path": "a", "size": 0, "sha256": "0" * 64})
    for other in (FileStream(KEY, STREAM.task_id, "artifact", "1"),
                  FileStream(KEY, "t-other00000", "artifact", "0"),
                  FileStream(bytes(32), STREAM.task_id, "artifact", "0")):
        with pytest.raises(e2e.E2EError):
            open_meta(other, meta)


def test_records_of_another_artifact_do_not_open_as_this_one(tmp_path: Path) -> None:
    data = b"weights"
    stored, meta = sealed(tmp_path, data)
    with pytest.raises(e2e.E2EError):
        opened(stored, meta, FileStream(KEY, STREAM.task_id, "artifact", "1"))


def test_a_file_other_than_its_metadata_says_fails_the_check(tmp_path: Path) -> None:
    stored, meta = sealed(tmp_path, b"weights")
    with pytest.raises(e2e.E2EError, match="SHA-256"):
        opened(stored, {**meta, "sha256": "0" * 64})
    with pytest.raises(e2e.E2EError, match="more bytes"):
        opened(stored, {**meta, "size": 3})


def test_a_fetch_opens_for_its_recipients_only_and_only_with_its_own_payload() -> None:
    drone, pilot, stranger = X25519Key.generate(), X25519Key.generate(), X25519Key.generate()
    order_id = orders.new_order_id()
    fetch = seal_fetch("/data/m.csv", order_id=order_id,
                       recipients=[("SHA256:drone", drone.public), ("SHA256:pilot", pilot.public)])
    order = orders.fetch_order(drone="box-1", payload_sha256=fetch.payload_sha256,
                               order_id=order_id)
    for who, fingerprint in ((drone, "SHA256:drone"), (pilot, "SHA256:pilot")):
        path, key = open_fetch(order, payload=fetch.payload, wrap=fetch.wraps[fingerprint],
                               x25519_secret=who.secret)
        assert (path, key) == ("/data/m.csv", fetch.key)
    with pytest.raises(e2e.E2EError, match="does not open"):
        open_fetch(order, payload=fetch.payload, wrap=fetch.wraps["SHA256:drone"],
                   x25519_secret=stranger.secret)
    other = seal_fetch("/etc/shadow", order_id=order_id,
                       recipients=[("SHA256:drone", drone.public)])
    with pytest.raises(e2e.E2EError, match="not the one its pilot signed"):
        open_fetch(order, payload=other.payload, wrap=other.wraps["SHA256:drone"],
                   x25519_secret=drone.secret)
    # The same payload under another order (a relay moving it) does not open.
    moved = orders.fetch_order(drone="box-1", payload_sha256=fetch.payload_sha256)
    with pytest.raises(e2e.E2EError, match="does not open"):
        open_fetch(moved, payload=fetch.payload, wrap=fetch.wraps["SHA256:drone"],
                   x25519_secret=drone.secret)


def test_a_sealed_refusal_opens_under_its_fetch_only() -> None:
    order_id = orders.new_order_id()
    error = seal_error(KEY, order_id, "/home/me is outside the fetch roots (/data)")
    assert error.startswith("sealed:") and "/home" not in error
    assert open_error(KEY, order_id, error) == "/home/me is outside the fetch roots (/data)"
    assert open_error(KEY, order_id, "refused by drone d: a replay") == (
        "refused by drone d: a replay")
    with pytest.raises(e2e.E2EError):
        open_error(KEY, orders.new_order_id(), error)
    assert fetch_stream(KEY, order_id) == FileStream(KEY, order_id, "fetch", "data")
