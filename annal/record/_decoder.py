"""Reading batches: ``decode_batch``, ``iter_records`` and the consumer's
``decode_records_into``. Every length is checked against the batch's end, so a lying length
can never make the decoder read another batch's bytes as records. Pure; thread-safe.
"""

from __future__ import annotations

from itertools import repeat as _repeat
from itertools import starmap as _starmap
from operator import add as _add
from operator import itemgetter as _itemgetter
import struct
from typing import Callable, Iterable, Iterator, cast

from annal.errors import CorruptRecordError, InvalidRecordError
from annal.record._compression import _check_codec, _decompress
from annal.record._layout import (
    _OFFSET_LEN,
    CODEC_MASK,
    CODEC_NONE,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    MIN_BATCH_LENGTH,
    BatchHeader,
    Buffer,
    Record,
    T,
    parse_header,
    validate_batch,
)
from annal.record import _impl
from annal.record._varint import _H, _OD1, _OD2_HI, _OD2_LO, _ZZ, decode_varint

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
    fast path when the batch has that shape, else the general decoder. With the compiled
    module (``_impl.native``) its decoder runs first; it hands back every batch it cannot
    decode (any error) to the Python code below, which raises the precise error."""
    nat = _impl.native
    if nat is not None and nat.decode_records(
        data, pos, end, count, base_offset, base_timestamp, out, cls, prefix, False
    ):
        return
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
    return list(_starmap(cast("Callable[..., T]", make), out)), next_offset


