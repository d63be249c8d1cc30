"""Deep validation of a batch: the header checks plus a walk over every record, as Kafka's
``LogValidator`` does before the broker appends a batch. Pure; thread-safe.
"""

from __future__ import annotations

from annal.errors import InvalidRecordError
from annal.record import _impl
from annal.record._decoder import _batch_bytes, _decode_general, _decode_uniform, _records_of
from annal.record._layout import CODEC_MASK, CODEC_NONE, HEADER_SIZE, LOG_OVERHEAD, BatchHeader, Buffer, validate_batch

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
    count = h.records_count
    nat = _impl.native
    if nat is not None and h.attributes & CODEC_MASK == CODEC_NONE:
        # Walked in C where the batch lies (a received request's buffer), not copied into
        # bytes first: the copy of a 1 MiB batch was the broker's largest cost per append
        # holding the GIL. Offset deltas 0..count-1 are checked; anything else falls through
        # to the code below, which raises the error.
        view = buf if type(buf) is bytes else memoryview(buf)
        if nat.decode_records(view, pos + HEADER_SIZE, pos + h.batch_length + LOG_OVERHEAD, count, 0, 0, [],
                              tuple, (), True):
            return
        nat = None  # walked in C already: the Python decoder below names the error
    data, pos = _batch_bytes(buf, pos, h)
    records, p, end = _records_of(data, pos, h)
    if nat is not None and nat.decode_records(records, p, end, count, 0, 0, [], tuple, (), True):
        return  # walked in C, offset deltas 0..count-1 checked; anything else: the code below
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

