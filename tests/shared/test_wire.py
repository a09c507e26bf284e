"""shared._wire: SSH wire values, read strictly."""

from __future__ import annotations

import pytest
from dragoon.shared import _wire
from dragoon.shared.errors import WireFormatError


@pytest.mark.parametrize(("value", "encoded"), [
    (0, b"\x00\x00\x00\x00"),
    (0x7F, b"\x00\x00\x00\x01\x7f"),
    (0x80, b"\x00\x00\x00\x02\x00\x80"),  # RFC 4251: a leading zero keeps it positive
    (0x9A378F9B2E332A7, b"\x00\x00\x00\x08\x09\xa3\x78\xf9\xb2\xe3\x32\xa7"),
])
def test_mpint_matches_rfc_4251_examples(value: int, encoded: bytes) -> None:
    assert _wire.mpint(value) == encoded
    assert _wire.WireReader(encoded).mpint() == value


def test_negative_mpint_is_refused_both_ways() -> None:
    with pytest.raises(ValueError, match="negative"):
        _wire.mpint(-1)
    with pytest.raises(WireFormatError, match="negative integer"):
        _wire.WireReader(b"\x00\x00\x00\x01\xff", what="sig").mpint()


def test_string_round_trips_and_reader_reports_the_rest() -> None:
    data = _wire.string("héllo") + _wire.uint32(7) + b"\x01"
    reader = _wire.WireReader(data)
    assert reader.text() == "héllo"
    assert reader.uint32() == 7
    assert reader.remaining == 1
    with pytest.raises(WireFormatError, match="1 trailing bytes"):
        reader.expect_end()
    assert reader.byte() == 1
    reader.expect_end()


@pytest.mark.parametrize("data", [b"", b"\x00\x00\x00", b"\x00\x00\x00\x05abc",
                                  b"\xff\xff\xff\xffx"])
def test_truncated_string_names_what_was_read(data: bytes) -> None:
    with pytest.raises(WireFormatError, match=r"^agent answer is truncated$"):
        _wire.WireReader(data, what="agent answer").string()


def test_non_utf8_name_is_refused() -> None:
    with pytest.raises(WireFormatError, match="not UTF-8"):
        _wire.WireReader(_wire.string(b"\xff")).text()
