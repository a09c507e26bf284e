"""SSH wire encoding (RFC 4251 §5): the few primitives SSHSIG and the agent need."""

from __future__ import annotations

import struct

from dragoon.shared.errors import WireFormatError


def uint32(value: int) -> bytes:
    return struct.pack(">I", value)


def string(value: bytes | str) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else value
    return struct.pack(">I", len(data)) + data


def mpint(value: int) -> bytes:
    """Two's-complement big-endian, minimal length; a leading zero keeps positives positive."""
    if value == 0:
        return string(b"")
    if value < 0:
        raise ValueError("negative mpint values are never used by dragoon")
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big")
    return string(raw)


class WireReader:
    """Reads SSH wire values from a buffer, raising WireFormatError on truncation."""

    def __init__(self, data: bytes, *, what: str = "data") -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._what = what

    def _take(self, count: int) -> bytes:
        end = self._pos + count
        if count < 0 or end > len(self._data):
            raise WireFormatError(f"{self._what} is truncated")
        chunk = self._data[self._pos : end].tobytes()
        self._pos = end
        return chunk

    def raw(self, count: int) -> bytes:
        return self._take(count)

    def byte(self) -> int:
        return self._take(1)[0]

    def uint32(self) -> int:
        return int(struct.unpack(">I", self._take(4))[0])

    def string(self) -> bytes:
        return self._take(self.uint32())

    def text(self) -> str:
        raw = self.string()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WireFormatError(f"{self._what} holds a name that is not UTF-8") from exc

    def mpint(self) -> int:
        raw = self.string()
        if raw and raw[0] & 0x80:
            raise WireFormatError(f"{self._what} holds a negative integer")
        return int.from_bytes(raw, "big")

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def expect_end(self) -> None:
        if self.remaining:
            raise WireFormatError(f"{self._what} has {self.remaining} trailing bytes")
