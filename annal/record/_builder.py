"""Writing batches: ``BatchBuilder`` (the producer's open batch) and ``encode_batch``.

Each record (signed zig-zag varints)::

    length varint | attributes int8 | timestampDelta varlong | offsetDelta varint |
    keyLength varint (-1 = null) | key | valueLength varint (-1 = null) | value |
    headerCount varint | headers: (keyLength varint, key utf-8, valueLength varint, value)

A ``BatchBuilder`` is not thread-safe (the producer's accumulator holds a lock around it);
every function here is pure.
"""

from __future__ import annotations

from itertools import repeat as _repeat
from operator import itemgetter as _itemgetter
from operator import sub as _sub
from typing import Iterable, Sequence

from crc32c import crc32c

from annal.record import _impl
from annal.record._compression import _check_codec, _compress
from annal.record._layout import (
    CODEC_NONE,
    CRC_START,
    HEADER_SIZE,
    HEADER_STRUCT,
    LOG_OVERHEAD,
    MAGIC,
    HeaderList,
)
from annal.record._varint import _NULL, _VARINT_TABLE_SIZE, _ZV, _ZV_ATTR, _ZV_NULLKEY, _OD1, _OD2_HI, _OD2_LO, _varint

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
# and what was tried: docs/benchmarks/codec.md (bench: python -m annal.bench.codec).
# --------------------------------------------------------------------------------------------

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
        self._joined: tuple[int, bytes | bytearray] | None = None  # (records_count, joined records)
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

    def build_parts(
        self,
        base_offset: int = 0,
        *,
        producer_id: int = -1,
        producer_epoch: int = -1,
        base_sequence: int = -1,
    ) -> tuple[bytes, bytes | bytearray]:
        """``build(...)`` as two buffers, the 61-byte header and the records area, for a
        writer that sends a list of buffers (the producer joins many batches into one request
        and would otherwise copy every batch twice). The records area is not to be modified.
        An idempotent producer stamps its id, epoch and first sequence here, when the batch
        is sent (and again if a new epoch renumbers it)."""
        return self._pack(base_offset, producer_id, producer_epoch, base_sequence, -1)

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
    nat = _impl.native
    if nat is not None:
        # The compiled builder writes the same bytes (tests/unit/test_record_native.py).
        builder = nat.BatchBuilder(compression, 1 << 62)
        append = builder.append
        for ts, key, value, headers in records:
            append(ts, key, value, headers)
        return builder.build(base_offset)  # type: ignore[no-any-return]
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


