"""Apache Kafka RecordBatch v2 (magic 2): the bytes a producer sends, a segment stores and a
consumer receives. Pure functions over bytes: no I/O happens in this module.

Batch layout (big-endian; offsets in bytes from the start of the batch)::

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
    61  records               recordsCount records, lz4-frame compressed as one block when the
                                      codec is lz4

Each record (signed zig-zag varints)::

    length varint | attributes int8 | timestampDelta varlong | offsetDelta varint |
    keyLength varint (-1 = null) | key | valueLength varint (-1 = null) | value |
    headerCount varint | headers: (keyLength varint, key utf-8, valueLength varint, value)

Because the CRC starts at ``attributes``, the broker assigns offsets by overwriting
``baseOffset`` in place (``set_base_offset``) and never recomputes the CRC.

Header level (the broker's storage and server): ``parse_header``, ``validate_batch``,
``set_base_offset``, ``batch_size_at``, ``iter_batch_positions``. Record level (shared with the
client SDK): ``BatchBuilder`` and ``encode_batch`` write batches; ``decode_batch``,
``iter_records`` and ``decode_records_into`` read them; ``validate_records`` is the deep check
of every record. Every function is pure and thread-safe; a ``BatchBuilder`` is not.
"""

from __future__ import annotations

import mmap
import struct
from itertools import repeat as _repeat
from itertools import starmap as _starmap
from operator import add as _add
from operator import itemgetter as _itemgetter
from operator import sub as _sub
from typing import Callable, Iterable, Iterator, NamedTuple, Optional, Sequence, Tuple, TypeVar, Union

from crc32c import crc32c
from lz4.frame import LZ4FrameDecompressor as _LZ4FrameDecompressor
from lz4.frame import compress as _lz4_compress
from lz4.frame import decompress as _lz4_decompress

from broker.errors import (
    CorruptRecordError,
    InvalidRecordError,
    MessageTooLargeError,
    UnsupportedCompressionTypeError,
)

__all__ = [
    "HEADER_SIZE",
    "LOG_OVERHEAD",
    "MAGIC",
    "CODEC_NONE",
    "CODEC_LZ4",
    "CODEC_MASK",
    "CODEC_NAMES",
    "BatchHeader",
    "parse_header",
    "validate_batch",
    "set_base_offset",
    "batch_size_at",
    "iter_batch_positions",
    "Record",
    "BatchBuilder",
    "encode_batch",
    "decode_batch",
    "iter_records",
    "decode_records_into",
    "validate_records",
    "check_records",
    "compression_from_name",
    "encode_varint",
    "decode_varint",
]

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
    ``UnsupportedCompressionTypeError`` or ``MessageTooLargeError``. Touches no state.
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
        raise MessageTooLargeError(
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


# --------------------------------------------------------------------------------------------
# Record-level codec: shared by the broker (deep validation) and the client SDK (the producer's
# accumulator builds batches with BatchBuilder; the consumer decodes with decode_records_into).
#
# This is the SDK's hot path, so the code below trades some elegance for speed: varints of
# small non-negative values come from precomputed tables, each record is encoded as a few bytes
# objects added to one list (joined once per batch), and the decoder reads one- and two-byte
# varints inline instead of calling a function per field. On top of that general code (kept as
# the reference), the common shape (null key, no headers, values of one length) has bulk paths
# that run no bytecode per record: _encode_nokey_run writes such records with one join and
# stepped slice assignments, _decode_uniform verifies and slices them with stepped slices and
# map(); both are tested equal to the general code on random and adversarial input. Figures
# and what was tried: docs/benchmarks/codec.md (bench: python -m bench.codec).
# --------------------------------------------------------------------------------------------

T = TypeVar("T")
Buffer = Union[bytes, bytearray, memoryview, mmap.mmap]
HeaderList = Sequence[Tuple[str, Optional[bytes]]]

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


def _encode_headers(headers: HeaderList) -> bytes:
    """headerCount varint followed by each (key, value) header, as in a record body."""
    parts = [_varint(len(headers))]
    for hkey, hval in headers:
        if type(hkey) is not str:
            raise TypeError(f"header key must be str, not {type(hkey).__name__}: {hkey!r}")
        kb = hkey.encode("utf-8")
        parts.append(_varint(len(kb)))
        parts.append(kb)
        if hval is None:
            parts.append(_NULL)
        else:
            parts.append(_varint(len(hval)))
            parts.append(hval)
    return b"".join(parts)


def _encode_record(
    offset_delta: int,
    timestamp_delta: int,
    key: bytes | None,
    value: bytes | None,
    headers: HeaderList | None,
) -> bytes:
    """One record, length prefix included (the general path: any sizes, any headers)."""
    body = b"".join(
        (
            b"\x00",
            _varint(timestamp_delta),
            _varint(offset_delta),
            _NULL if key is None else _varint(len(key)) + key,
            _NULL if value is None else _varint(len(value)) + value,
            _encode_headers(headers) if headers else b"\x00",
        )
    )
    return _varint(len(body)) + body


class Record(NamedTuple):
    """One decoded record. ``headers`` is a tuple of ``(key, value)`` pairs, value may be None."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]




def compression_from_name(name: str | None) -> int:
    """Codec id for a ``compression_type`` setting: None/"none" -> CODEC_NONE, "lz4" -> CODEC_LZ4.

    Any other name (gzip, snappy, zstd or unknown) raises UnsupportedCompressionTypeError."""
    if name is None:
        return CODEC_NONE
    lowered = name.lower() if isinstance(name, str) else name
    if lowered == "none":
        return CODEC_NONE
    if lowered == "lz4":
        return CODEC_LZ4
    raise UnsupportedCompressionTypeError(
        f"compression_type {name!r} is not supported; use 'none' or 'lz4'", codec=name
    )


def _check_codec(compression: int) -> None:
    if compression not in SUPPORTED_CODECS:
        raise UnsupportedCompressionTypeError(
            f"compression codec {CODEC_NAMES.get(compression, compression)} is not supported "
            "(none, lz4 are)",
            codec=compression,
        )


def _compress(records: bytes | bytearray, compression: int) -> bytes | bytearray:
    if compression == CODEC_LZ4:
        # Independent blocks, as Kafka's KafkaLZ4BlockOutputStream and kafka-python write them.
        return _lz4_compress(records, block_linked=False)
    return records


# A batch is at most max_message_bytes on the wire (1 MiB by default) but lz4 can expand a
# crafted frame ~255x; refuse to inflate one past this rather than let a producer exhaust the
# broker's memory through validate_records.
MAX_DECOMPRESSED_BYTES = 1 << 27  # 128 MiB


def _decompress(data: Buffer, codec: int, position: int) -> bytes:
    """The records area of a compressed batch. Raises CorruptRecordError on a malformed,
    truncated or oversized frame, UnsupportedCompressionTypeError on a codec other than lz4."""
    if codec != CODEC_LZ4:
        raise UnsupportedCompressionTypeError(
            f"compression codec {CODEC_NAMES.get(codec, codec)} is not supported (none, lz4 are)",
            codec=codec,
        )
    try:
        if len(data) >= 14 and data[4] & 0x08:
            # The frame declares its content size (Kafka's and python-lz4's writers do):
            # check it before inflating; LZ4F itself then verifies the frame matches it.
            declared = int.from_bytes(data[6:14], "little")
            if declared > MAX_DECOMPRESSED_BYTES:
                raise CorruptRecordError(
                    f"lz4 frame declares {declared} bytes, over the {MAX_DECOMPRESSED_BYTES}-byte limit",
                    position=position,
                )
            return _lz4_decompress(data)
        # No declared size: inflate through a bounded decompressor (slower, so not the default).
        decompressor = _LZ4FrameDecompressor()
        out = decompressor.decompress(data, max_length=MAX_DECOMPRESSED_BYTES)
        if not decompressor.eof:
            raise CorruptRecordError(
                "lz4 frame is truncated or inflates past the "
                f"{MAX_DECOMPRESSED_BYTES}-byte limit",
                position=position,
            )
        return out
    except RuntimeError as exc:  # python-lz4 reports every malformed frame as RuntimeError
        raise CorruptRecordError(f"lz4 frame cannot be decompressed: {exc}", position=position) from None


def _pack_batch(
    records: bytes | bytearray,
    compression: int,
    base_offset: int,
    count: int,
    base_timestamp: int,
    max_timestamp: int,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    partition_leader_epoch: int,
) -> tuple[bytes, bytes | bytearray]:
    """The batch as (header with CRC-32C filled in, (compressed) records), not concatenated:
    a writer that sends a list of buffers needs no copy of the records."""
    payload = _compress(records, compression)
    fields = [
        base_offset,
        HEADER_SIZE - LOG_OVERHEAD + len(payload),
        partition_leader_epoch,
        MAGIC,
        0,
        compression,
        count - 1,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        count,
    ]
    header = HEADER_STRUCT.pack(*fields)
    fields[4] = crc32c(payload, crc32c(header[CRC_START:]))
    return HEADER_STRUCT.pack(*fields), payload


# --------------------------------------------- encoding: records without key or headers
#
# _W[n] is the width of varint(n); _NKB[vlen] the body of a record with a null key, no headers
# and a value of vlen bytes, without its timestampDelta and offsetDelta (attributes, key,
# value length, value, header count); _SZ[body] the whole record with its length varint.
# BatchBuilder.append sizes such a record with three lookups and defers its bytes to build().
_W: tuple[int, ...] = tuple(len(v) for v in _ZV)
_NKB_LIMIT = 16000  # bodies stay below _VARINT_TABLE_SIZE
_NKB: tuple[int, ...] = tuple(3 + _W[n] + n for n in range(_NKB_LIMIT))
_SZ: tuple[int, ...] = tuple(n + _W[n] for n in range(_VARINT_TABLE_SIZE))
_DOUBLE = bytes((2 * b) & 0xFF for b in range(256))  # b -> zig-zag byte of b, for b < 64
_BELOW_64 = bytes(range(64))  # deleted by translate: what is left is >= 64


def _encode_nokey_run(
    first_delta: int,
    tsds: Sequence[int],
    values: Sequence[bytes],
    lens: list[int] | None = None,
) -> bytes | bytearray:
    """The records ``first_delta``, ``first_delta + 1``, ... with a null key, no headers,
    ``values`` and timestamp deltas ``tsds``: the bytes ``_encode_record`` writes for each,
    concatenated. ``lens``: the values' lengths, when the caller has them already.

    When the values have one length and every delta is below 64 (one-byte varints), the
    records differ only in their timestampDelta and offsetDelta bytes, and the stride changes
    only where offsetDelta gets wider (64, 8192). Each such segment is written in C: one
    ``join`` of the values with the bytes between two values as the separator (header count
    0, then the next record's length, attributes, placeholder deltas, null key, value
    length), then the two delta columns set by stepped slice assignment. Other lengths and
    deltas within the varint tables are encoded from table lookups, record by record;
    anything else by ``_encode_record``."""
    n = len(values)
    tsd_bytes = None
    if n and first_delta + n <= 8192:
        try:
            tsd_bytes = bytes(tsds)  # ValueError unless every delta is 0..255 (C, unlike min/max)
        except (ValueError, TypeError):
            pass
    if tsd_bytes is not None and not tsd_bytes.translate(None, _BELOW_64):  # every delta < 64
        if lens is None:
            lens = list(map(len, values))
        vlen = lens[0]
        uniform = vlen < _NKB_LIMIT and lens.count(vlen) == n
    else:
        uniform = False
    if uniform:
        tsd_col = tsd_bytes.translate(_DOUBLE)  # type: ignore[union-attr]  # set when uniform
        vhead = _ZV[vlen]
        pieces = []
        i = 0
        for seg_end, ow in ((64, 1), (8192, 2)):
            od = first_delta + i
            if od >= seg_end or i == n:
                continue
            k = min(n - i, seg_end - od)
            body = 4 + ow + len(vhead) + vlen  # attributes, tsd, od, key, value length, value, headers
            lenv = _ZV[body]
            lw = len(lenv)
            stride = lw + body
            pre = lenv + b"\x00\x00" + b"\x00" * ow + b"\x01" + vhead
            seg = bytearray(pre)
            seg += (b"\x00" + pre).join(values[i : i + k] if i or k < n else values)
            seg.append(0)
            seg[lw + 1 :: stride] = tsd_col[i : i + k]
            if ow == 1:
                seg[lw + 2 :: stride] = _OD1[od : od + k]
            else:
                seg[lw + 2 :: stride] = _OD2_LO[od : od + k]
                seg[lw + 3 :: stride] = _OD2_HI[od : od + k]
            pieces.append(seg)
            i += k
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)
    in_tables = n > 0 and first_delta + n <= _VARINT_TABLE_SIZE and min(tsds) >= 0 and max(tsds) < _VARINT_TABLE_SIZE
    vlens: list[int] = (list(map(len, values)) if lens is None else lens) if in_tables else []
    if in_tables and max(vlens) < _NKB_LIMIT:
        # Any lengths and deltas within the tables: each record is four pieces, three of
        # them from table lookups (mapping the lookups in C measured no faster).
        zv = _ZV
        zva = _ZV_ATTR
        zvn = _ZV_NULLKEY
        parts: list[bytes] = []
        extend = parts.extend
        for od, tsd, value, vl in zip(range(first_delta, first_delta + n), tsds, values, vlens):
            p = zva[tsd] + zvn[od] + zv[vl]
            extend((zv[len(p) + vl + 1], p, value, b"\x00"))
        return b"".join(parts)
    return b"".join(
        [_encode_record(first_delta + j, tsd, None, value, None) for j, (tsd, value) in enumerate(zip(tsds, values))]
    )


class BatchBuilder:
    """Builds one RecordBatch v2 incrementally; the producer's accumulator keeps one open per
    partition and closes it when ``append`` returns -1 or linger_ms passes.

    A record with a null key, no headers and a ``bytes`` value (the common case) costs
    ``append`` only its size (three table lookups: the record's exact encoded size) and two
    list appends (value and timestamp delta); its bytes are written by ``build``, in bulk, by
    ``_encode_nokey_run``.
    Any other record is encoded when appended, after the pending ones, into one list of bytes
    objects that ``build`` joins (and, for lz4, compresses) once. ``size_in_bytes`` is the
    exact size of the uncompressed batch so far either way. Not thread-safe: the accumulator
    appends under its own lock.
    """

    __slots__ = (
        "compression",
        "batch_size",
        "base_timestamp",
        "_max_ts",
        "records_count",
        "size_in_bytes",
        "_parts",
        "_joined",
        "_values",
        "_tsds",
    )

    def __init__(
        self,
        compression: int = CODEC_NONE,
        batch_size: int = 16384,
        base_timestamp_ms: int | None = None,
    ) -> None:
        _check_codec(compression)
        self.compression = compression
        self.batch_size = batch_size
        self.base_timestamp: int | None = base_timestamp_ms
        self._max_ts = -1  # of the encoded records; the pending ones are folded in on read
        self.records_count: int = 0
        self.size_in_bytes: int = HEADER_SIZE
        self._parts: list[bytes | bytearray] = []  # encoded records, in order
        self._joined: tuple[int, bytes] | None = None  # (records_count, joined records)
        # Records after those in _parts, not yet encoded: null key, no headers.
        self._values: list[bytes] = []
        self._tsds: list[int] = []

    def append(
        self,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: HeaderList | None = None,
    ) -> int:
        """Add one record; returns its offset delta, or -1 when the batch is non-empty and this
        record would take it past ``batch_size`` (the caller then closes it and opens a new
        one). A first record larger than ``batch_size`` is always accepted."""
        count = self.records_count
        base = self.base_timestamp
        if base is None:
            base = self.base_timestamp = timestamp_ms
        tsd = timestamp_ms - base
        if (
            key is None
            and not headers
            and type(value) is bytes
            and 0 <= tsd < 16384
            and count < 16384
            and len(value) < _NKB_LIMIT
        ):
            # Deferred: the exact size now, the bytes in build() (_encode_nokey_run). Only for
            # bytes: immutable, so the record cannot change before build(), and any other type
            # is refused here, by the encoder below, not later in build(). Within these bounds
            # append_value takes the record itself (it never hands it back here).
            return self.append_value(timestamp_ms, value)
        if self._values:
            self._encode_pending()
        if not headers and value is not None and key is not None and 0 <= tsd < 16384 and count < 16384:
            vlen = len(value)
            if vlen + len(key) < 16000:
                # Keyed fast path: every varint from a table (a body below 16 KiB).
                p = _ZV_ATTR[tsd] + _ZV[count] + _ZV[len(key)] + key + _ZV[vlen]
                blen = len(p) + vlen + 1
                head = _ZV[blen]
                size = self.size_in_bytes + len(head) + blen
                if size > self.batch_size and count:
                    return -1
                self._parts.extend((head, p, value, b"\x00"))
                self.size_in_bytes = size
                self.records_count = count + 1
                if timestamp_ms > self._max_ts:
                    self._max_ts = timestamp_ms
                return count
        rec = _encode_record(count, tsd, key, value, headers)
        size = self.size_in_bytes + len(rec)
        if size > self.batch_size and count:
            return -1
        self._parts.append(rec)
        self.size_in_bytes = size
        self.records_count = count + 1
        if timestamp_ms > self._max_ts:
            self._max_ts = timestamp_ms
        return count

    def append_value(self, timestamp_ms: int, value: bytes) -> int:
        """``append(timestamp_ms, None, value)`` for a ``bytes`` value, no key and no headers:
        the producer's hot path, with only the checks that case needs.

        Same answer as ``append``: the record's offset delta, or -1 when it would take a
        non-empty batch past ``batch_size``. Anything the deferred path cannot take (a
        timestamp before the batch's first or 16 s after it, a value of 16,000 bytes or more,
        16,384 records) goes through ``append``. The records' largest timestamp is found
        when ``max_timestamp`` is read, from the largest pending delta, not tracked here.
        """
        count = self.records_count
        try:
            tsd = timestamp_ms - self.base_timestamp  # type: ignore[operator]  # TypeError if unset
            # The exact encoded size: three table lookups, IndexError past the tables.
            size = self.size_in_bytes + _SZ[_NKB[len(value)] + _W[tsd] + _W[count]]
        except (IndexError, TypeError):
            return self.append(timestamp_ms, None, value, None)
        # A negative delta would have read the tables from the end; only immutable bytes may
        # wait for build().
        if tsd < 0 or type(value) is not bytes:
            return self.append(timestamp_ms, None, value, None)
        if size > self.batch_size and count:
            return -1
        self._values.append(value)
        self._tsds.append(tsd)
        self.size_in_bytes = size
        self.records_count = count + 1
        return count

    @property
    def max_timestamp(self) -> int:
        """The largest record timestamp so far (-1 while empty)."""
        tsds = self._tsds
        if tsds:
            return max(self._max_ts, self.base_timestamp + max(tsds))  # type: ignore[operator]
        return self._max_ts

    def _encode_pending(self) -> None:
        """Encode the deferred records into _parts (they are the last ones appended)."""
        values = self._values
        tsds = self._tsds
        top = self.base_timestamp + max(tsds)  # type: ignore[operator]  # set with the first record
        if top > self._max_ts:
            self._max_ts = top
        self._parts.append(_encode_nokey_run(self.records_count - len(values), tsds, values))
        self._values = []
        self._tsds = []

    def build(
        self,
        base_offset: int = 0,
        *,
        producer_id: int = -1,
        producer_epoch: int = -1,
        base_sequence: int = -1,
        partition_leader_epoch: int = -1,
    ) -> bytes:
        """The finished batch: header, CRC-32C, records (lz4-frame compressed for CODEC_LZ4).

        May be called more than once (for example again with another base offset); the
        records are joined only once per set of records. Raises ValueError on an empty
        builder."""
        return b"".join(self._pack(base_offset, producer_id, producer_epoch, base_sequence, partition_leader_epoch))

    def build_parts(self, base_offset: int = 0) -> tuple[bytes, bytes | bytearray]:
        """``build(base_offset)`` as two buffers, the 61-byte header and the records area, for
        a writer that sends a list of buffers (the producer joins many batches into one
        request and would otherwise copy every batch twice). The records area is not to be
        modified."""
        return self._pack(base_offset, -1, -1, -1, -1)

    def _pack(
        self,
        base_offset: int,
        producer_id: int,
        producer_epoch: int,
        base_sequence: int,
        partition_leader_epoch: int,
    ) -> tuple[bytes, bytes | bytearray]:
        count = self.records_count
        if not count:
            raise ValueError("a record batch needs at least one record")
        joined = self._joined
        if joined is None or joined[0] != count:
            if self._values:
                self._encode_pending()
            parts = self._parts
            joined = self._joined = (count, parts[0] if len(parts) == 1 else b"".join(parts))
        return _pack_batch(
            joined[1],
            self.compression,
            base_offset,
            count,
            self.base_timestamp,  # type: ignore[arg-type]  # set by the first append
            self.max_timestamp,
            producer_id,
            producer_epoch,
            base_sequence,
            partition_leader_epoch,
        )


_FIELD0 = _itemgetter(0)
_FIELD1 = _itemgetter(1)
_FIELD2 = _itemgetter(2)
_FIELD3 = _itemgetter(3)


def _uniform_nokey(recs: list) -> list[int] | None:
    """The value lengths if ``recs`` are all ``(timestamp, None, value, None)`` tuples of four
    with values of one length (the shape encode_batch writes in bulk), else None. The cheapest refusals come first (a
    first and last value of different lengths), so other shapes lose almost nothing here."""
    n = len(recs)
    try:
        if not n or len(recs[0][2]) != len(recs[-1][2]):
            return None
        lens = list(map(len, map(_FIELD2, recs)))  # TypeError on a None value
        if (
            lens.count(lens[0]) == n
            and list(map(len, recs)).count(4) == n
            and list(map(_FIELD1, recs)).count(None) == n
            and list(map(_FIELD3, recs)).count(None) == n
        ):
            return lens
    except (TypeError, IndexError, KeyError):  # not 4-tuples of sized values: the loop decides
        pass
    return None


def encode_batch(
    records: Iterable[tuple[int, bytes | None, bytes | None, HeaderList | None]],
    compression: int = CODEC_NONE,
    base_offset: int = 0,
) -> bytes:
    """One batch from ``(timestamp_ms, key, value, headers)`` tuples, offset deltas 0..n-1,
    baseTimestamp = the first record's timestamp. Raises ValueError on no records."""
    _check_codec(compression)
    recs = records if type(records) is list else list(records)
    lens = _uniform_nokey(recs)
    if lens is not None:
        # Bulk path (see _encode_nokey_run): every record has a null key, no headers and a
        # value of one length; the fields are taken out of the tuples in C.
        n = len(recs)
        timestamps = list(map(_FIELD0, recs))
        base = timestamps[0]
        if timestamps.count(base) == n:  # one millisecond: every delta 0
            tsds = [0] * n
            max_ts = base
        else:
            tsds = list(map(_sub, timestamps, _repeat(base)))
            max_ts = max(timestamps)
        records_area = _encode_nokey_run(0, tsds, list(map(_FIELD2, recs)), lens)
        return b"".join(_pack_batch(records_area, compression, base_offset, n, base, max(max_ts, -1), -1, -1, -1, -1))
    parts: list[bytes] = []
    extend = parts.extend
    zv = _ZV
    zva = _ZV_ATTR
    zvn = _ZV_NULLKEY
    count = 0
    base = 0
    max_ts = -1
    for ts, key, value, headers in recs:
        if not count:
            base = ts
        if ts > max_ts:
            max_ts = ts
        tsd = ts - base
        # Fast path: no headers, value present, every varint from the tables (the body is
        # below 16 KiB when key + value are below 16000 bytes).
        if not headers and value is not None and 0 <= tsd < 16384 and count < 16384:
            vlen = len(value)
            if key is None:
                if vlen < 16000:
                    p = zva[tsd] + zvn[count] + zv[vlen]
                    extend((zv[len(p) + vlen + 1], p, value, b"\x00"))
                    count += 1
                    continue
            elif vlen + len(key) < 16000:
                p = zva[tsd] + zv[count] + zv[len(key)] + key + zv[vlen]
                extend((zv[len(p) + vlen + 1], p, value, b"\x00"))
                count += 1
                continue
        extend((_encode_record(count, tsd, key, value, headers),))
        count += 1
    if not count:
        raise ValueError("a record batch needs at least one record")
    return b"".join(_pack_batch(b"".join(parts), compression, base_offset, count, base, max_ts, -1, -1, -1, -1))


# ----------------------------------------------------------------------------- decoding


def _read_bytes(data: bytes, pos: int) -> tuple[bytes | None, int]:
    """A length-prefixed byte string (length -1 = None) at ``pos``: the general path."""
    n, pos = decode_varint(data, pos)
    if n < 0:
        if n == -1:
            return None, pos
        raise CorruptRecordError(f"negative length {n} in a record", position=pos)
    end = pos + n
    if end > len(data):
        raise CorruptRecordError(f"length {n} runs past the end of the batch", position=pos)
    return data[pos:end], end


def _read_headers(data: bytes, pos: int) -> tuple[tuple[tuple[str, bytes | None], ...], int]:
    count, pos = decode_varint(data, pos)
    if count < 0:
        raise CorruptRecordError(f"negative header count {count}", position=pos)
    headers = []
    for _ in range(count):
        hkey, pos = _read_bytes(data, pos)
        if hkey is None:
            raise CorruptRecordError("null header key", position=pos)
        try:
            skey = hkey.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptRecordError(f"header key is not UTF-8: {exc}", position=pos) from None
        hval, pos = _read_bytes(data, pos)
        headers.append((skey, hval))
    return tuple(headers), pos


# _H[b] for the first byte b of a varint: for b < 0x80 (a one-byte varint) its value; for
# b >= 0x80 of a two-byte varint, _H[b] + (second_byte << 6) is the value when it is
# non-negative (bit 0 clear). Two-byte varints cover record and value lengths up to 8 KiB,
# so the decoder reads them inline instead of calling decode_varint.
_H: tuple[int, ...] = _ZZ + tuple((b & 127) >> 1 for b in range(128, 256))


def _decode_general(
    data: bytes,
    pos: int,
    end: int,
    count: int,
    base_offset: int,
    base_timestamp: int,
    out: list,
    cls: type[tuple],
) -> None:
    """The general record decoder (any shape; the reference ``_decode_uniform`` must agree
    with). Decode the ``count`` records in ``data[pos:end]`` and append
    ``cls((offset, timestamp, key, value, headers))`` for each to ``out``, cls being Record
    or tuple. ``tuple.__new__`` is called directly: it is the C constructor of a NamedTuple
    (Record's own ``__new__`` is a Python function), it returns an exact tuple unchanged, and
    the temporary 5-tuple goes straight back to the free list.

    The common shapes (one- or two-byte varints, null key, no headers) are read inline with
    the _H table; anything else goes through decode_varint / _read_bytes / _read_headers.
    Every record must end exactly where its length says and the last one exactly at ``end``,
    else CorruptRecordError (so a lying length can never make the decoder read the next
    batch's bytes as records)."""
    h = _H
    dv = decode_varint
    rbytes = _read_bytes
    append = out.append
    tnew = tuple.__new__
    try:
        for _ in range(count):
            # length
            b = data[pos]
            if b < 128:
                pos += 1
                rec_end = pos + h[b]
            else:
                b2 = data[pos + 1]
                if b2 < 128 and not b & 1:
                    pos += 2
                    rec_end = pos + h[b] + (b2 << 6)
                else:
                    ln, pos = dv(data, pos)
                    rec_end = pos + ln
            # attributes (no record-level attributes are defined in v2), timestampDelta
            b = data[pos + 1]
            if b < 128:
                tsd = h[b]
                pos += 2
            else:
                b2 = data[pos + 2]
                if b2 < 128 and not b & 1:
                    tsd = h[b] + (b2 << 6)
                    pos += 3
                else:
                    tsd, pos = dv(data, pos + 1)
            # offsetDelta
            b = data[pos]
            if b < 128:
                od = h[b]
                pos += 1
            else:
                b2 = data[pos + 1]
                if b2 < 128 and not b & 1:
                    od = h[b] + (b2 << 6)
                    pos += 2
                else:
                    od, pos = dv(data, pos)
            # key
            b = data[pos]
            if b == 1:
                key = None
                pos += 1
            elif b < 128 and not b & 1:
                pos += 1
                key = data[pos : pos + h[b]]
                pos += h[b]
            else:
                key, pos = rbytes(data, pos)
            # value
            b = data[pos]
            if b < 128:
                if b & 1:
                    if b == 1:
                        value = None
                        pos += 1
                    else:
                        value, pos = rbytes(data, pos)
                else:
                    vl = h[b]
                    pos += 1
                    value = data[pos : pos + vl]
                    pos += vl
            else:
                b2 = data[pos + 1]
                if b2 < 128 and not b & 1:
                    vl = h[b] + (b2 << 6)
                    pos += 2
                    value = data[pos : pos + vl]
                    pos += vl
                else:
                    value, pos = rbytes(data, pos)
            # headers
            if data[pos]:
                headers, pos = _read_headers(data, pos)
            else:
                headers = ()
                pos += 1
            if pos != rec_end:
                raise CorruptRecordError(
                    f"record length says it ends at {rec_end} but its fields end at {pos}",
                    position=pos,
                )
            append(tnew(cls, (base_offset + od, base_timestamp + tsd, key, value, headers)))
    except IndexError:
        raise CorruptRecordError("record data runs past the end of the batch", position=pos) from None
    if pos != end:
        raise CorruptRecordError(
            f"recordsCount {count} records end at {pos}, the batch at {end}", position=pos
        )


# ------------------------------------------------------- decoding: the uniform fast path
#
# Producers almost always write batches whose records all have a null key, no headers and
# values of one length (a BatchBuilder fed by one application thread). Such a records area is
# a sequence of equal-sized records whose bytes differ only in the timestampDelta and
# offsetDelta columns, and the stride changes only where offsetDelta gets one byte wider (at 64
# and 8192). _decode_uniform checks a whole run of such records at once with C-level
# operations on stepped slices (``data[column:stop:stride]`` is that column of every record)
# and slices the values out with ``map``, so no Python bytecode runs per record.

_OD1 = bytes(range(0, 128, 2))  # _OD1[n]: the one-byte varint of offsetDelta n < 64
_OD2_LO = bytes(((n << 1) & 0x7F) | 0x80 for n in range(8192))  # first byte of varint(n), 64 <= n
_OD2_HI = bytes(n >> 6 for n in range(8192))  # its second byte
# The first bytes of two-byte varints of non-negative values (>= 0x80, even): a column of
# them translated with these deleted is empty.
_TSD2_LO = bytes(b for b in range(128, 256, 2))
_SHL6: tuple[int, ...] = tuple(b << 6 for b in range(128))  # second varint byte's weight


# A run that verifies only after halving below this many records ends the fast path for
# its batch: record by record, the per-run checks cost more than the general decoder.
_MIN_RUN = 16


def _uniform_run_ok(
    data: bytes,
    pos: int,
    stop: int,
    stride: int,
    template: bytes,
    var: tuple[int, ...],
    k: int,
    od_cols: tuple[tuple[int, bytes], ...],
) -> bool:
    """True if the ``k`` records of ``stride`` bytes at ``pos`` carry ``template``'s bytes in
    every column before the value and in the last (header count) column, except the columns
    in ``var`` (the delta columns: the caller checks timestampDelta), and the offsetDelta
    columns ``od_cols`` equal their expected bytes. One stepped slice per column: C loops."""
    for col in range(len(template)):
        if col in var:
            continue
        column = data[pos + col : stop : stride]
        if column.count(template[col]) != k:
            return False
    if data[pos + stride - 1 : stop : stride].count(0) != k:  # headerCount 0
        return False
    for col, expected in od_cols:
        if data[pos + col : stop : stride] != expected:
            return False
    return True


_FIRST = _itemgetter(0)


def _decode_uniform(
    data: bytes,
    pos: int,
    end: int,
    count: int,
    base_offset: int,
    base_timestamp: int,
    out: list,
    cls: type[tuple],
    build: bool = True,
    prefix: tuple = (),
) -> bool:
    """Decode ``data[pos:end]`` into ``out`` as ``_decode_general`` would, if its ``count``
    records are runs of the uniform shape; returns False (``out`` left as it was) otherwise.

    A run starts at a record parsed here byte by byte: length varint (1-2 bytes),
    attributes 0, a one- or two-byte non-negative timestampDelta, offsetDelta equal to the
    record's index in the batch (1-2 bytes), null key (0x01), value length varint (1-2 bytes,
    non-negative), value, headerCount 0, and the length must equal exactly those fields. The
    run is the next ``k`` records of the same size (as many as remain, fit before ``end`` and
    keep offsetDelta's width; halved until it verifies, giving up below ``_MIN_RUN``).
    Verified for every record of the run, on stepped slices: every byte before the value
    equals the first record's (length, attributes, key and value length), except
    timestampDelta, which must be a varint of the first record's width (one byte:
    ``isascii``, < 0x80; two: an even first byte >= 0x80, then < 0x80), and offsetDelta,
    which must be the canonical varint of 0..count-1 in order (compared against precomputed
    columns, read back from the bytes, never assumed); the header count byte is 0. Those are
    exactly the bytes ``_decode_general`` reads, each read the same way, so it would produce
    the same records; the records must then end exactly at ``end``. Any other shape, any
    doubt, or any error the general decoder would raise returns False and the caller runs the general decoder, which decodes or raises as it always has.

    With ``build=False`` every check runs but no record is made (``validate_records``);
    ``prefix`` fields (the consumer's topic and partition) go before each record's five."""
    if type(data) is not bytes:  # the stepped-slice checks need bytes' methods
        return False
    start_len = len(out)
    zz = _ZZ
    h = _H
    tnew = tuple.__new__
    done = 0
    try:
        while done < count:
            # --- the first record of a run, parsed and checked byte by byte
            b = data[pos]
            if b < 128:
                lw = 1
                ln = zz[b]
            else:
                b2 = data[pos + 1]
                if b2 >= 128 or b & 1:
                    break
                lw = 2
                ln = h[b] + (b2 << 6)
            stride = lw + ln
            q = pos + lw  # attributes
            if ln < 6 or pos + stride > end or data[q]:
                break
            t = data[q + 1]  # timestampDelta: one byte, or two for 64..8191
            if t < 128:
                tw = 1
            elif not t & 1 and data[q + 2] < 128:
                tw = 2
            else:
                break
            o = q + 1 + tw  # offsetDelta
            if done < 64:
                od_end = 64
                ow = 1
                if data[o] != done << 1:
                    break
            elif done < 8192:
                od_end = 8192
                ow = 2
                if data[o] != _OD2_LO[done] or data[o + 1] != _OD2_HI[done]:
                    break
            else:
                break
            kq = o + ow  # key length
            vb = data[kq + 1]
            if data[kq] != 1 or vb & 1:
                break
            if vb < 128:
                vw = 1
                vlen = vb >> 1
            else:
                vb2 = data[kq + 2]
                if vb2 >= 128:
                    break
                vw = 2
                vlen = h[vb] + (vb2 << 6)
            voff = kq + 1 + vw - pos  # the value's offset in the record
            if voff + vlen + 1 != stride:
                break
            template = data[pos : pos + voff]
            tcol = lw + 1
            ocol = tcol + tw
            var = tuple(range(tcol, ocol + ow))  # the timestampDelta and offsetDelta columns
            # --- the run: k records of this stride, verified column by column
            k = min(count - done, (end - pos) // stride, od_end - done)
            if k > 1 and data[pos + stride : pos + stride + lw] != data[pos : pos + lw]:
                break  # the next record has another length: a run of one (values vary)
            while True:
                stop = pos + k * stride
                if ow == 1:
                    od_cols: tuple[tuple[int, bytes], ...] = ((ocol, _OD1[done : done + k]),)
                else:
                    od_cols = ((ocol, _OD2_LO[done : done + k]), (ocol + 1, _OD2_HI[done : done + k]))
                tsds = data[pos + tcol : stop : stride]
                if tw == 1:
                    ts_ok = tsds.isascii()
                else:
                    tsd_hi = data[pos + tcol + 1 : stop : stride]
                    ts_ok = not tsds.translate(None, _TSD2_LO) and tsd_hi.isascii()
                if ts_ok and _uniform_run_ok(data, pos, stop, stride, template, var, k, od_cols):
                    break
                if k < 2 * _MIN_RUN:
                    # Runs this short are not the uniform shape (values of varying lengths,
                    # say): the general decoder does the whole batch faster.
                    del out[start_len:]
                    return False
                k >>= 1
            if not build:
                done += k
                pos = stop
                continue
            # --- the records of the run, built in C
            offsets = range(base_offset + done, base_offset + done + k)
            if tw == 1 and tsds.count(tsds[0]) == k:
                timestamps: Iterable[int] = _repeat(base_timestamp + zz[tsds[0]], k)
            elif tw == 1:
                # A batch holds few distinct one-byte deltas: one int per distinct delta, shared
                # by the records that carry it (no new int per record).
                table: list[int | None] = [None] * 128
                for b in set(tsds):
                    table[b] = base_timestamp + zz[b]
                timestamps = map(table.__getitem__, tsds)  # type: ignore[arg-type]
            else:
                timestamps = map(
                    _add,
                    map(_add, _repeat(base_timestamp), map(h.__getitem__, tsds)),
                    map(_SHL6.__getitem__, tsd_hi),
                )
            # One struct per record that skips its head, takes the value and skips the header
            # count: iter_unpack cuts the run into values in C, faster than a slice per record
            # (the struct module caches the compiled format).
            values = map(_FIRST, struct.iter_unpack(f"{voff}x{vlen}s1x", memoryview(data)[pos:stop]))
            if prefix:
                rows = zip(*map(_repeat, prefix), offsets, timestamps, _repeat(None), values, _repeat(()))
            else:
                rows = zip(offsets, timestamps, _repeat(None), values, _repeat(()))
            if cls is tuple:
                out.extend(rows)
            else:
                out.extend(map(tnew, _repeat(cls), rows))
            done += k
            pos = stop
    except IndexError:
        pass
    if done == count and pos == end:
        return True
    del out[start_len:]
    return False


def _decode_into(
    data: bytes,
    pos: int,
    end: int,
    count: int,
    base_offset: int,
    base_timestamp: int,
    out: list,
    cls: type[tuple],
    prefix: tuple = (),
) -> None:
    """Append the ``count`` records of ``data[pos:end]`` to ``out`` as ``cls`` (Record,
    tuple, or a NamedTuple whose fields are ``prefix``'s then the record's five): the uniform
    fast path when the batch has that shape, else the general decoder."""
    if _decode_uniform(data, pos, end, count, base_offset, base_timestamp, out, cls, True, prefix):
        return
    if not prefix:
        _decode_general(data, pos, end, count, base_offset, base_timestamp, out, cls)
        return
    rows: list = []
    _decode_general(data, pos, end, count, base_offset, base_timestamp, rows, tuple)
    out.extend(map(tuple.__new__, _repeat(cls), map(_add, _repeat(prefix), rows)))


def _checked_header(buf: Buffer, pos: int, verify_crc: bool) -> BatchHeader:
    """validate_batch, or the same checks without the CRC when verify_crc is False."""
    if verify_crc:
        return validate_batch(buf, pos)
    h = parse_header(buf, pos)
    if h.batch_length < MIN_BATCH_LENGTH or h.batch_length + LOG_OVERHEAD > len(buf) - pos:
        raise CorruptRecordError(f"batchLength {h.batch_length} is inconsistent", position=pos)
    if h.magic != MAGIC:
        raise InvalidRecordError(f"magic {h.magic} is not supported; only magic 2 is", magic=h.magic)
    _check_codec(h.attributes & CODEC_MASK)
    if h.records_count <= 0 or h.last_offset_delta != h.records_count - 1:
        raise InvalidRecordError(
            f"recordsCount {h.records_count} / lastOffsetDelta {h.last_offset_delta} are inconsistent"
        )
    return h


def _records_of(data: bytes, pos: int, h: BatchHeader) -> tuple[bytes, int, int]:
    """The (uncompressed) records area of the batch at ``pos``: (bytes, start, end)."""
    start = pos + HEADER_SIZE
    end = pos + h.batch_length + LOG_OVERHEAD
    codec = h.attributes & CODEC_MASK
    if codec == CODEC_NONE:
        return data, start, end
    records = _decompress(memoryview(data)[start:end], codec, pos)
    return records, 0, len(records)


def _batch_bytes(buf: Buffer, pos: int, h: BatchHeader) -> tuple[bytes, int]:
    """The batch at ``pos`` as bytes (and its position in them) without copying the rest."""
    if type(buf) is bytes:
        return buf, pos
    return bytes(memoryview(buf)[pos : pos + h.batch_length + LOG_OVERHEAD]), 0


def _as_bytes(buf: Buffer) -> bytes:
    # Indexing and slicing bytes is several times faster than a memoryview, and the copy of a
    # fetch response costs far less than decoding its records.
    return buf if type(buf) is bytes else bytes(buf)


def _decode_buffer(
    buf: Buffer, start_offset: int, verify_crc: bool, out: list, cls: type[tuple], prefix: tuple = ()
) -> int:
    """Decode every whole batch of ``buf`` into ``out`` (tuples); returns the next offset
    after the last whole batch (``start_offset`` when there is none)."""
    at = len(prefix)  # where the offset sits in a row
    data = _as_bytes(buf)
    n = len(data)
    pos = 0
    next_offset = start_offset
    unpack_len = _OFFSET_LEN.unpack_from
    while n - pos >= LOG_OVERHEAD:
        base_offset, batch_length = unpack_len(data, pos)
        size = batch_length + LOG_OVERHEAD
        if batch_length < MIN_BATCH_LENGTH:
            raise CorruptRecordError(
                f"batchLength {batch_length} is smaller than the {MIN_BATCH_LENGTH}-byte minimum",
                position=pos,
            )
        if pos + size > n:
            break  # a fetch may end with part of a batch: the next fetch returns it whole
        h = _checked_header(data, pos, verify_crc)
        batch_next = base_offset + h.last_offset_delta + 1
        if batch_next > start_offset:
            records, rpos, rend = _records_of(data, pos, h)
            if base_offset >= start_offset:
                _decode_into(records, rpos, rend, h.records_count, base_offset, h.base_timestamp, out, cls, prefix)
            else:  # the fetch started inside this batch
                batch: list = []
                _decode_into(records, rpos, rend, h.records_count, base_offset, h.base_timestamp, batch, cls, prefix)
                out.extend([r for r in batch if r[at] >= start_offset])
        if batch_next > next_offset:
            next_offset = batch_next
        pos += size
    return next_offset


def decode_batch(buf: Buffer, pos: int = 0, verify_crc: bool = True) -> tuple[BatchHeader, list[Record]]:
    """Decode the one batch at ``pos`` (it must be complete): its header and records.
    Copies only this batch out of a non-bytes buffer (a segment's mmap, say)."""
    h = _checked_header(buf, pos, verify_crc)
    data, pos = _batch_bytes(buf, pos, h)
    records, rpos, rend = _records_of(data, pos, h)
    out: list = []
    _decode_into(records, rpos, rend, h.records_count, h.base_offset, h.base_timestamp, out, Record)
    return h, out


def iter_records(buf: Buffer, start_offset: int = 0, verify_crc: bool = True) -> Iterator[Record]:
    """Records of every whole batch in ``buf`` (back-to-back batches, as a fetch returns them),
    skipping offsets below ``start_offset``. A trailing partial batch is ignored; a CRC
    mismatch raises CorruptRecordError before any record of that batch is yielded."""
    data = _as_bytes(buf)
    n = len(data)
    pos = 0
    while n - pos >= LOG_OVERHEAD:
        size = _OFFSET_LEN.unpack_from(data, pos)[1] + LOG_OVERHEAD
        if size < HEADER_SIZE:
            raise CorruptRecordError(f"batch size {size} is smaller than its header", position=pos)
        if pos + size > n:
            return
        h = _checked_header(data, pos, verify_crc)
        if h.base_offset + h.last_offset_delta >= start_offset:
            records, rpos, rend = _records_of(data, pos, h)
            out: list = []
            _decode_into(records, rpos, rend, h.records_count, h.base_offset, h.base_timestamp, out, Record)
            if h.base_offset < start_offset:
                out = [r for r in out if r[0] >= start_offset]
            yield from out
        pos += size


def decode_records_into(
    buf: Buffer,
    start_offset: int,
    make: Callable[..., T],
    verify_crc: bool = True,
    prefix: tuple = (),
) -> tuple[list[T], int]:
    """The consumer's fast path: ``make(*prefix, offset, timestamp, key, value, headers)``
    for every record with offset >= start_offset in the whole batches of ``buf``. Returns the
    list and the offset after the last whole batch (``start_offset`` if ``buf`` holds none),
    which is where the next fetch starts.

    When ``make`` is a NamedTuple class (Record, or the consumer's ConsumerRecord with
    ``prefix=(topic, partition)``) each record is built in C, once, without calling its
    Python ``__new__``; any other callable is called per record."""
    out: list = []
    prefix = tuple(prefix)
    if isinstance(make, type) and issubclass(make, tuple):
        next_offset = _decode_buffer(buf, start_offset, verify_crc, out, make, prefix)
        return out, next_offset
    next_offset = _decode_buffer(buf, start_offset, verify_crc, out, tuple, prefix)
    return list(_starmap(make, out)), next_offset


# ----------------------------------------------------------------------- deep validation


def validate_records(buf: Buffer, pos: int = 0) -> int:
    """validate_batch plus a walk over every record (after decompressing an lz4 batch):
    recordsCount records whose length varints match their fields exactly, no byte left over,
    non-negative lengths (or -1 for a null key/value/header value), UTF-8 header keys, and
    offset deltas 0..count-1 in order. Returns recordsCount. Raises CorruptRecordError or
    InvalidRecordError (and whatever validate_batch raises).

    It runs the decoder itself (keeping only each record's offset delta): the decoder checks
    every length already, and its inline varint reading is several times faster than a
    separate walk calling decode_varint per field."""
    h = validate_batch(buf, pos)
    check_records(buf, pos, h)
    return h.records_count


def check_records(buf: Buffer, pos: int, h: BatchHeader) -> None:
    """The record walk of ``validate_records`` for a batch whose header ``h`` was already
    checked by ``validate_batch`` (the broker's append path: the CRC is not computed twice)."""
    data, pos = _batch_bytes(buf, pos, h)
    records, p, end = _records_of(data, pos, h)
    count = h.records_count
    # The uniform shape is verified column by column without making a record; it checks
    # the offset deltas 0..count-1 itself.
    if _decode_uniform(records, p, end, count, 0, 0, [], tuple, build=False):
        return
    decoded: list[tuple] = []
    _decode_general(records, p, end, count, 0, 0, decoded, tuple)
    deltas = [r[0] for r in decoded]
    if deltas != list(range(count)):
        bad = next(i for i, d in enumerate(deltas) if d != i)
        raise InvalidRecordError(
            f"record {bad} has offsetDelta {deltas[bad]}; deltas must be 0..count-1", position=pos
        )

