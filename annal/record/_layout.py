"""The RecordBatch v2 header: its byte layout, codec ids, and the header-level operations
the broker's storage runs on every batch (parse, validate, rewrite baseOffset, walk a buffer).

Byte layout of a batch (big-endian; offsets from the start of the batch)::

     0  baseOffset            int64   first offset of the batch, written by the broker
     8  batchLength           int32   bytes that follow this field (total size - 12)
    12  partitionLeaderEpoch  int32
    16  magic                 int8    always 2
    17  crc                   uint32  CRC-32C (Castagnoli) of bytes 21..end
    21  attributes            int16   bits 0-2 codec (0 none, 3 lz4), bit 3 timestamp type,
                                      bit 4 transactional, bit 5 control
    23  lastOffsetDelta       int32   offset delta of the last record
    27  baseTimestamp         int64   ms since the epoch
    35  maxTimestamp          int64
    43  producerId            int64   -1 when not idempotent
    51  producerEpoch         int16   -1
    53  baseSequence          int32   -1
    57  recordsCount          int32
    61  records               (see annal.record._builder for a record's layout)

Because the CRC starts at ``attributes``, the broker assigns offsets by overwriting
``baseOffset`` in place (``set_base_offset``) and never recomputes the CRC. Pure functions over
bytes; thread-safe.
"""

from __future__ import annotations

import mmap
import struct
from typing import NamedTuple, Optional, Sequence, Tuple, TypeVar, Union

from crc32c import crc32c

from annal.errors import (
    CorruptRecordError,
    InvalidRecordError,
    MessageSizeTooLargeError,
    UnsupportedCompressionTypeError,
)

HEADER_STRUCT = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER_STRUCT.size  # 61
LOG_OVERHEAD = 12  # baseOffset + batchLength: the bytes not counted by batchLength
MAGIC = 2
CRC_START = 21
MIN_BATCH_LENGTH = HEADER_SIZE - LOG_OVERHEAD  # 49

CODEC_NONE = 0
CODEC_GZIP = 1
CODEC_SNAPPY = 2
CODEC_LZ4 = 3
CODEC_ZSTD = 4
CODEC_MASK = 0x07
TIMESTAMP_TYPE_MASK = 0x08
CODEC_NAMES = {CODEC_NONE: "none", CODEC_GZIP: "gzip", CODEC_SNAPPY: "snappy", CODEC_LZ4: "lz4", CODEC_ZSTD: "zstd"}
SUPPORTED_CODECS = frozenset((CODEC_NONE, CODEC_LZ4))

_OFFSET_LEN = struct.Struct(">qi")
_Q = struct.Struct(">q")


class BatchHeader(NamedTuple):
    """The 61-byte header of one batch, as parsed from the wire or a segment."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size(self) -> int:
        """Total bytes of the batch, header included."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def codec(self) -> int:
        return self.attributes & CODEC_MASK


def parse_header(buf: bytes | bytearray | memoryview | mmap.mmap, pos: int = 0) -> BatchHeader:
    """Parse the header of the batch at ``pos``; checks only that 61 bytes are there."""
    if len(buf) - pos < HEADER_SIZE:
        raise CorruptRecordError(
            f"batch header needs {HEADER_SIZE} bytes, {len(buf) - pos} available", position=pos
        )
    return BatchHeader._make(HEADER_STRUCT.unpack_from(buf, pos))


def batch_size_at(buf: bytes | bytearray | memoryview | mmap.mmap, pos: int) -> int:
    """Total size of the batch at ``pos`` from its batchLength field, or -1 if fewer than
    12 bytes remain. Does not validate anything else."""
    if len(buf) - pos < LOG_OVERHEAD:
        return -1
    return _OFFSET_LEN.unpack_from(buf, pos)[1] + LOG_OVERHEAD


def validate_batch(
    buf: bytes | bytearray | memoryview | mmap.mmap,
    pos: int = 0,
    max_batch_bytes: int | None = None,
) -> BatchHeader:
    """Check one batch starting at ``pos`` and return its header.

    Checks, in order: enough bytes for a header; batchLength consistent with the bytes
    available; size limit; magic 2; supported codec; a positive record count whose
    lastOffsetDelta is ``count - 1``; CRC-32C over attributes..end. Raises
    ``CorruptRecordError`` (lengths, CRC), ``InvalidRecordError`` (magic, counts),
    ``UnsupportedCompressionTypeError`` or ``MessageSizeTooLargeError``. Touches no state.
    """
    h = parse_header(buf, pos)
    size = h.batch_length + LOG_OVERHEAD
    if h.batch_length < MIN_BATCH_LENGTH:
        raise CorruptRecordError(
            f"batchLength {h.batch_length} is smaller than the {MIN_BATCH_LENGTH}-byte minimum",
            position=pos,
        )
    if size > len(buf) - pos:
        raise CorruptRecordError(
            f"batchLength says {size} bytes but only {len(buf) - pos} are present", position=pos
        )
    if max_batch_bytes is not None and size > max_batch_bytes:
        raise MessageSizeTooLargeError(
            f"batch of {size} bytes exceeds max_message_bytes={max_batch_bytes}",
            size=size,
            max_message_bytes=max_batch_bytes,
        )
    if h.magic != MAGIC:
        raise InvalidRecordError(f"magic {h.magic} is not supported; only magic 2 is", magic=h.magic)
    codec = h.attributes & CODEC_MASK
    if codec not in SUPPORTED_CODECS:
        raise UnsupportedCompressionTypeError(
            f"compression codec {CODEC_NAMES.get(codec, codec)} is not supported (none, lz4 are)",
            codec=codec,
        )
    if h.records_count <= 0:
        raise InvalidRecordError(f"recordsCount {h.records_count} must be positive")
    if h.last_offset_delta != h.records_count - 1:
        raise InvalidRecordError(
            f"lastOffsetDelta {h.last_offset_delta} does not match recordsCount {h.records_count}"
        )
    if codec == CODEC_NONE and h.batch_length - MIN_BATCH_LENGTH < 7 * h.records_count:
        # The smallest possible record is 7 bytes; fewer bytes cannot hold recordsCount records.
        raise InvalidRecordError(
            f"recordsCount {h.records_count} cannot fit in {h.batch_length - MIN_BATCH_LENGTH} bytes"
        )
    mv = memoryview(buf)
    actual = crc32c(mv[pos + CRC_START : pos + size])
    if actual != h.crc:
        raise CorruptRecordError(
            f"CRC-32C mismatch: stored {h.crc:#010x}, computed {actual:#010x}", position=pos
        )
    return h


def set_base_offset(buf: bytearray | memoryview | mmap.mmap, base_offset: int, pos: int = 0) -> None:
    """Overwrite baseOffset of the batch at ``pos`` in place; the CRC stays valid."""
    _Q.pack_into(buf, pos, base_offset)


def iter_batch_positions(buf: bytes | bytearray | memoryview | mmap.mmap, pos: int = 0, end: int | None = None):
    """Yield ``(position, size)`` of each complete batch in ``buf[pos:end]`` using only the
    length fields (no validation); stops at the first incomplete batch."""
    end = len(buf) if end is None else end
    while end - pos >= LOG_OVERHEAD:
        size = _OFFSET_LEN.unpack_from(buf, pos)[1] + LOG_OVERHEAD
        if size < HEADER_SIZE or pos + size > end:
            return
        yield pos, size
        pos += size



T = TypeVar("T")
Buffer = Union[bytes, bytearray, memoryview, mmap.mmap]
HeaderList = Sequence[Tuple[str, Optional[bytes]]]

class Record(NamedTuple):
    """One decoded record. ``headers`` is a tuple of ``(key, value)`` pairs, value may be None."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]




