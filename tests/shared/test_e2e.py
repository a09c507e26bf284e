"""The task key's wraps, the payload and the record streams (shared/e2e.py), from the
relay's side: every edit a relay could make to what it stores is caught."""

from __future__ import annotations

import struct

import pytest
from dragoon.shared import e2e
from nacl.public import PrivateKey

TASK = "t0123456789abcdef"


def records(key: bytes, pieces: list[bytes], *, final: bool = True,
            name: str = "stdout") -> list[bytes]:
    writer = e2e.RecordWriter(key, task_id=TASK, kind="out", name=name)
    out = [writer.seal(piece) for piece in pieces]
    if final:
        out.append(writer.seal(b"", final=True))
    return out


def read_all(key: bytes, stored: bytes, *, name: str = "stdout") -> tuple[bytes, bool]:
    reader = e2e.RecordReader(key, task_id=TASK, kind="out", name=name)
    return reader.feed(stored), reader.finished


def test_a_wrap_opens_only_with_its_recipients_key() -> None:
    key, drone, other = e2e.new_task_key(), PrivateKey.generate(), PrivateKey.generate()
    wrap = e2e.wrap_key(key, bytes(drone.public_key))
    assert len(e2e.unb64(wrap, what="wrap")) == e2e.WRAP_BYTES
    assert e2e.unwrap_key(wrap, bytes(drone)) == key
    with pytest.raises(e2e.E2EError, match="does not open"):
        e2e.unwrap_key(wrap, bytes(other))


def test_the_payload_is_bound_to_its_order() -> None:
    key = e2e.new_task_key()
    sealed = e2e.seal_payload(key, b'{"command":"id"}', order_id="a" * 26)
    assert b"command" not in sealed
    assert e2e.open_payload(key, sealed, order_id="a" * 26) == b'{"command":"id"}'
    with pytest.raises(e2e.E2EError):
        e2e.open_payload(key, sealed, order_id="b" * 26)  # moved under another order
    with pytest.raises(e2e.E2EError):
        e2e.open_payload(e2e.new_task_key(), sealed, order_id="a" * 26)


def test_records_read_back_whatever_the_slicing() -> None:
    key = e2e.new_task_key()
    stored = b"".join(records(key, [b"line one\n", b"", b"x" * 70000, b"tail"]))
    expected = b"line one\n" + b"x" * 70000 + b"tail"
    for step in (1, 7, 57, 4096, len(stored)):
        reader = e2e.RecordReader(key, task_id=TASK, kind="out", name="stdout")
        got = b"".join(reader.feed(stored[i:i + step]) for i in range(0, len(stored), step))
        assert got == expected and reader.finished and reader.consumed == len(stored)
        assert reader.partial == 0


@pytest.mark.parametrize("attack", ["cut", "reorder", "duplicate", "drop_final", "forge",
                                    "flip", "splice", "other_stream", "after_final"])
def test_every_edit_of_the_stored_records_is_caught(attack: str) -> None:
    key = e2e.new_task_key()
    good = records(key, [b"a\n", b"b\n", b"c\n"])
    if attack == "cut":
        stored = good[0] + good[2] + good[3]
    elif attack == "reorder":
        stored = good[1] + good[0] + good[2] + good[3]
    elif attack == "duplicate":
        stored = good[0] + good[0] + good[1] + good[2] + good[3]
    elif attack == "drop_final":
        plain, finished = read_all(key, b"".join(good[:3]))
        assert plain == b"a\nb\nc\n" and not finished  # all there, but known unfinished
        return
    elif attack == "forge":
        forged = e2e.RecordWriter(e2e.new_task_key(), task_id=TASK, kind="out",
                                  name="stdout").seal(b"rm -rf\n")
        stored = forged + b"".join(good[1:])
    elif attack == "flip":
        tampered = bytearray(good[1])
        tampered[-1] ^= 1
        stored = good[0] + bytes(tampered) + good[2] + good[3]
    elif attack == "splice":  # a record of another task under the same key stays out
        other = e2e.RecordWriter(key, task_id="t-other", kind="out", name="stdout")
        stored = other.seal(b"a\n") + b"".join(good[1:])
    elif attack == "other_stream":
        stored = b"".join(records(key, [b"a\n"], name="stderr"))
    else:
        extra = e2e.RecordWriter(key, task_id=TASK, kind="out", name="stdout",
                                 at=e2e.Position(4, 6)).seal(b"more\n")
        stored = b"".join(good) + extra
    with pytest.raises(e2e.E2EError) as caught:
        read_all(key, stored)
    assert f"task {TASK} stdout" in caught.value.detail


def test_a_header_edited_to_claim_another_offset_is_caught() -> None:
    key = e2e.new_task_key()
    first, second, _final = records(key, [b"a", b"b"])
    length, offset, index, _flags = struct.unpack(">IQIB", second[:e2e.HEADER_BYTES])
    edited = struct.pack(">IQIB", length, offset, index, 1) + second[e2e.HEADER_BYTES:]
    with pytest.raises(e2e.E2EError, match="does not open"):
        read_all(key, first + edited)  # marked final by the relay: the tag says no


def test_a_resumed_writer_continues_where_the_stored_records_end() -> None:
    key = e2e.new_task_key()
    stored = b"".join(records(key, [b"one\n", b"two\n"], final=False))
    used, at, final = e2e.walk_headers(stored + b"\x00\x00")  # a torn tail is not counted
    assert used == len(stored) and at == e2e.Position(2, 8) and not final
    rest = e2e.RecordWriter(key, task_id=TASK, kind="out", name="stdout", at=at)
    plain, finished = read_all(key, stored + rest.seal(b"three\n", final=True))
    assert plain == b"one\ntwo\nthree\n" and finished


def test_a_blob_byte_range_maps_to_its_records() -> None:
    key = e2e.new_task_key()
    data = bytes(range(256)) * 1000  # 256,000 bytes: four records, the last short
    writer = e2e.RecordWriter(key, task_id=TASK, kind="artifact", name="a1")
    stored = b"".join(writer.seal_all(data, final=True))
    assert len(stored) == e2e.blob_size(len(data))
    start, end, at = e2e.blob_span(100_000, 200_000)
    reader = e2e.RecordReader(key, task_id=TASK, kind="artifact", name="a1", at=at)
    plain = reader.feed(stored[start:end])
    assert plain[100_000 - at.offset:][:100_000] == data[100_000:200_000]
    assert e2e.blob_size(0) == e2e.OVERHEAD
    assert list(writer.seal_all(b"")) == []


def test_a_sealed_text_opens_only_under_its_own_task_and_name() -> None:
    key = e2e.new_task_key()
    error = e2e.seal_text(key, "cwd /srv/secret-project: no such directory", task_id=TASK,
                          name="error")
    assert e2e.is_sealed_text(error) and "secret" not in error
    assert e2e.open_text(key, error, task_id=TASK, name="error").startswith("cwd /srv/")
    notes = [e2e.seal_text(key, f"note {i}", task_id=TASK, name=f"note-{i}") for i in (0, 1)]
    with pytest.raises(e2e.E2EError):  # the relay swaps two notes
        e2e.open_text(key, notes[1], task_id=TASK, name="note-0")
    with pytest.raises(e2e.E2EError):  # or moves a text to another task
        e2e.open_text(key, error, task_id="t-other", name="error")
    long = e2e.seal_text(key, "é" * 2000, task_id=TASK, name="error")
    assert len(long) < 2000  # within the relay's field limits
    assert e2e.open_text(key, long, task_id=TASK, name="error") == "é" * 500
