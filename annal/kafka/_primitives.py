"""The Kafka protocol's primitive types, read from and written to bytes. No I/O.

Layouts (big-endian; Kafka's ``clients/.../protocol/types/Type.java``)::

    int8 int16 int32 int64 uint16 uint32 float64   fixed width, two's complement
    bool                                          int8, 0 or 1
    uuid                                          16 bytes
    unsigned varint                               7 bits a byte, low group first, high bit = more
    varint / varlong                              zig-zag, then unsigned varint
    string           int16 length (-1 = null) | UTF-8 bytes
    compact string   unsigned varint length+1 (0 = null) | UTF-8 bytes   (flexible versions)
    bytes            int32 length (-1 = null) | bytes
    compact bytes    unsigned varint length+1 (0 = null) | bytes
    array            int32 count (-1 = null) | items
    compact array    unsigned varint count+1 (0 = null) | items
    tagged fields    unsigned varint count | [tag uvarint | size uvarint | data]*

``Reader`` walks one buffer; it raises ``annal.errors.InvalidRequestError`` when the buffer ends
early or a length is negative where that is not allowed, so a malformed request never reads past
its frame. Not thread-safe (one per request); the ``put_*`` functions are pure.
"""

from __future__ import annotations

import struct
import uuid
from typing import Callable

from annal.errors import InvalidRequestError

__all__ = ["Reader", "put_uvarint", "uvarint_size", "put_varint", "ZERO_UUID"]

ZERO_UUID = uuid.UUID(int=0)

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")

FIXED: dict[str, struct.Struct] = {
    "int8": _I8, "int16": _I16, "uint16": _U16, "int32": _I32, "uint32": _U32, "int64": _I64, "float64": _F64,
}


def put_uvarint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError(f"unsigned varint cannot hold {value}")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def uvarint_size(value: int) -> int:
    n = 1
    while value >= 0x80:
        value >>= 7
        n += 1
    return n


def put_varint(out: bytearray, value: int) -> None:
    put_uvarint(out, (value << 1) ^ (value >> 63))


class Reader:
    """Reads primitives from ``buf`` starting at ``pos``."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf if isinstance(buf, memoryview) else memoryview(buf)
        self.pos = pos
        self.end = len(self.buf) if end is None else end

    def _need(self, n: int) -> int:
        pos = self.pos
        if n < 0 or pos + n > self.end:
            raise InvalidRequestError(
                f"request ends early: {n} more byte(s) needed at byte {pos} of {self.end}"
            )
        self.pos = pos + n
        return pos

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def fixed(self, st: struct.Struct) -> int:
        pos = self._need(st.size)
        return st.unpack_from(self.buf, pos)[0]

    def int8(self) -> int:
        return self.fixed(_I8)

    def int16(self) -> int:
        return self.fixed(_I16)

    def int32(self) -> int:
        return self.fixed(_I32)

    def int64(self) -> int:
        return self.fixed(_I64)

    def boolean(self) -> bool:
        return self.fixed(_I8) != 0

    def uuid(self) -> uuid.UUID:
        pos = self._need(16)
        return uuid.UUID(bytes=bytes(self.buf[pos:pos + 16]))

    def uvarint(self) -> int:
        value = shift = 0
        buf = self.buf
        while True:
            if self.pos >= self.end:
                raise InvalidRequestError("request ends inside a varint")
            b = buf[self.pos]
            self.pos += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise InvalidRequestError("varint longer than 10 bytes")

    def varint(self) -> int:
        v = self.uvarint()
        return (v >> 1) ^ -(v & 1)

    def raw(self, n: int) -> memoryview:
        pos = self._need(n)
        return self.buf[pos:pos + n]

    def _text(self, n: int) -> str:
        try:
            return str(self.raw(n), "utf-8")
        except UnicodeDecodeError:
            raise InvalidRequestError("a string is not valid UTF-8") from None

    def string(self, nullable: bool) -> str | None:
        n = self.int16()
        if n < 0:
            if n == -1 and nullable:
                return None
            raise InvalidRequestError(f"string length {n} where a string is required")
        return self._text(n)

    def compact_string(self, nullable: bool) -> str | None:
        n = self.uvarint() - 1
        if n < 0:
            if nullable:
                return None
            raise InvalidRequestError("null compact string where a string is required")
        return self._text(n)

    def bytes(self, nullable: bool) -> memoryview | None:
        n = self.int32()
        if n < 0:
            if n == -1 and nullable:
                return None
            raise InvalidRequestError(f"bytes length {n} where bytes are required")
        return self.raw(n)

    def compact_bytes(self, nullable: bool) -> memoryview | None:
        n = self.uvarint() - 1
        if n < 0:
            if nullable:
                return None
            raise InvalidRequestError("null compact bytes where bytes are required")
        return self.raw(n)

    def array_len(self, compact: bool) -> int:
        n = self.uvarint() - 1 if compact else self.int32()
        if n < -1:
            raise InvalidRequestError(f"array length {n}")
        if n > self.remaining:  # every item takes at least one byte: refuse absurd counts early
            raise InvalidRequestError(f"array of {n} items in {self.remaining} remaining bytes")
        return n


ReadFn = Callable[[Reader], object]
