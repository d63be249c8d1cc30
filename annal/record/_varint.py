"""Kafka's signed zig-zag varints, and the lookup tables the encoder and decoder use instead
of computing small varints per field (a record's lengths and deltas are almost always below
16 KiB). Pure; thread-safe.

A varint is 1-10 bytes, 7 value bits each, low bits first, high bit set on every byte but the
last; the value is zig-zag mapped first so that small negative numbers stay short
(``(n << 1) ^ (n >> 63)``).
"""

from __future__ import annotations

from annal.errors import CorruptRecordError
from annal.record._layout import Buffer

_VARINT_TABLE_SIZE = 1 << 14  # covers record lengths, offset deltas and sizes up to 16 KiB


def encode_varint(value: int) -> bytes:
    """Signed zig-zag varint (Kafka's ``ByteUtils.writeVarlong``); any 64-bit value."""
    if not -(1 << 63) <= value < (1 << 63):
        raise ValueError(f"varint {value} is outside the signed 64-bit range")
    v = (value << 1) ^ (value >> 63)
    out = bytearray()
    while v > 0x7F:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


# _ZV[n] is the encoded varint of the non-negative int n (n < _VARINT_TABLE_SIZE).
_ZV: tuple[bytes, ...] = (
    tuple(bytes((n << 1,)) for n in range(64))
    + tuple(bytes((((n << 1) & 0x7F) | 0x80, n >> 6)) for n in range(64, 8192))
    + tuple(encode_varint(n) for n in range(8192, _VARINT_TABLE_SIZE))
)
# _ZV_ATTR[n] = attributes byte (always 0) + varint(n): the start of every record body.
_ZV_ATTR: tuple[bytes, ...] = tuple(b"\x00" + v for v in _ZV)
_NULL = b"\x01"  # varint(-1): a null key, value or header value
# _ZV_NULLKEY[n] = varint(n) + a null key: offsetDelta and key of a record without a key.
_ZV_NULLKEY: tuple[bytes, ...] = tuple(v + _NULL for v in _ZV)
# _ZZ[b] decodes a one-byte varint b (b < 0x80).
_ZZ: tuple[int, ...] = tuple((b >> 1) ^ -(b & 1) for b in range(128))


def _varint(n: int, _zv: tuple[bytes, ...] = _ZV, _size: int = _VARINT_TABLE_SIZE) -> bytes:
    return _zv[n] if 0 <= n < _size else encode_varint(n)


def decode_varint(buf: Buffer, pos: int) -> tuple[int, int]:
    """Read a signed zig-zag varint at ``pos``; returns ``(value, next_pos)``.

    Raises CorruptRecordError if the buffer ends inside the varint or it is longer than the 10
    bytes a 64-bit value needs."""
    result = 0
    shift = 0
    n = len(buf)
    while True:
        if pos >= n:
            raise CorruptRecordError("record data ends inside a varint", position=pos)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise CorruptRecordError("varint longer than 10 bytes", position=pos)


# _H[b] for the first byte b of a varint: for b < 0x80 (a one-byte varint) its value; for
# b >= 0x80 of a two-byte varint, _H[b] + (second_byte << 6) is the value when it is
# non-negative (bit 0 clear). Two-byte varints cover record and value lengths up to 8 KiB,
# so the decoder reads them inline instead of calling decode_varint.
_H: tuple[int, ...] = _ZZ + tuple((b & 127) >> 1 for b in range(128, 256))

# Offset-delta columns of a uniform run of records, by offsetDelta n:
_OD1 = bytes(range(0, 128, 2))  # _OD1[n]: the one-byte varint of offsetDelta n < 64
_OD2_LO = bytes(((n << 1) & 0x7F) | 0x80 for n in range(8192))  # first byte of varint(n), 64 <= n
_OD2_HI = bytes(n >> 6 for n in range(8192))  # its second byte
