"""Record batches for broker tests: valid ones from the codec, and damaged ones on purpose.

``make_batch`` encodes a RecordBatch v2 with ``annal.record.encode_batch``;
``damage`` rewrites header fields of a copy (optionally recomputing the CRC so that only the
intended rule is broken). Pure functions.
"""

from __future__ import annotations

import struct
import time

from crc32c import crc32c

from annal.record import CRC_START, HEADER_STRUCT, encode_batch, iter_records

__all__ = ["make_batch", "damage", "values_of", "FIELD_OFFSETS"]

# field -> (byte offset, struct format)
FIELD_OFFSETS = {
    "base_offset": (0, ">q"),
    "batch_length": (8, ">i"),
    "magic": (16, ">b"),
    "crc": (17, ">I"),
    "attributes": (21, ">h"),
    "last_offset_delta": (23, ">i"),
    "records_count": (57, ">i"),
}


def make_batch(count: int = 3, value_size: int = 10, prefix: bytes = b"v", timestamp_ms: int | None = None) -> bytes:
    """``count`` records with values ``prefix + i`` padded to ``value_size`` bytes."""
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    return encode_batch(
        [(ts, None, (prefix + str(i).encode()).ljust(value_size, b"."), None) for i in range(count)]
    )


def damage(batch: bytes, *, fix_crc: bool = True, flip_byte_at: int | None = None, **fields: int) -> bytes:
    """A copy of ``batch`` with header ``fields`` overwritten (see FIELD_OFFSETS) and/or one byte
    flipped; the CRC is recomputed unless ``fix_crc`` is False or ``crc`` is given."""
    buf = bytearray(batch)
    for name, value in fields.items():
        pos, fmt = FIELD_OFFSETS[name]
        struct.pack_into(fmt, buf, pos, value)
    if flip_byte_at is not None:
        buf[flip_byte_at] ^= 0xFF
    if fix_crc and "crc" not in fields:
        struct.pack_into(">I", buf, 17, crc32c(bytes(buf[CRC_START:])))
    return bytes(buf)


def values_of(records: bytes | memoryview, start_offset: int = 0) -> list[tuple[int, bytes | None]]:
    """``(offset, value)`` of every record at or after ``start_offset``."""
    return [(r.offset, r.value) for r in iter_records(records, start_offset)]
