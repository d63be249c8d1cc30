"""Tests of the RecordBatch v2 codec (annal/record/).

Correctness is checked three ways: round trips through our own encoder and decoder, against
kafka-python's independent implementation in both directions, and hypothesis properties
(random records round-trip; any prefix of a fetch decodes to exactly its whole batches).
Bad input must raise the right class from annal/errors.py, never anything else.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import lz4.frame
import pytest
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from annal.errors import (
    CorruptRecordError,
    InvalidRecordError,
    MessageSizeTooLargeError,
    UnsupportedCompressionTypeError,
)
from annal.record import (
    CODEC_GZIP,
    CODEC_LZ4,
    CODEC_NONE,
    CODEC_SNAPPY,
    CODEC_ZSTD,
    CRC_START,
    HEADER_SIZE,
    LOG_OVERHEAD,
    BatchBuilder,
    Record,
    compression_from_name,
    decode_batch,
    decode_records_into,
    decode_varint,
    encode_batch,
    encode_varint,
    iter_batch_positions,
    iter_records,
    parse_header,
    set_base_offset,
    validate_batch,
    validate_records,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("codec_impl")]

CODECS = [CODEC_NONE, CODEC_LZ4]
MIB = 1 << 20

# A mix of every shape the codec has a special path for: null/empty/short/long keys and
# values, headers with null values, timestamps before the base (negative deltas), and a
# 1 MiB value (multi-byte varints all the way).
MIXED = [
    (1_700_000_000_000, None, b"x" * 100, None),
    (1_700_000_000_001, b"key-1", b"", None),
    (1_700_000_000_002, b"", None, None),
    (1_699_999_999_000, None, None, [("h1", b"v1"), ("null-value", None), ("", b"")]),
    (1_700_000_000_010, b"k" * 300, b"v" * 9000, [("\u00e9t\u00e9", b"\x00\xff")]),
    (1_700_000_100_000, b"big", b"\x01" * MIB, None),
    (1_700_000_000_003, None, b"y" * 63, None),
    (1_700_000_000_004, None, b"y" * 64, None),
]


def expected(records, base_offset=0):
    return [
        Record(base_offset + i, ts, key, value, tuple(tuple(hh) for hh in (headers or ())))
        for i, (ts, key, value, headers) in enumerate(records)
    ]


def recrc(buf: bytearray, pos: int = 0) -> bytearray:
    """Recompute the CRC of the batch at pos after a test edited it on purpose."""
    size = struct.unpack_from(">i", buf, pos + 8)[0] + LOG_OVERHEAD
    struct.pack_into(">I", buf, pos + 17, crc32c(bytes(buf[pos + CRC_START : pos + size])))
    return buf


def kafka_python_batch(records, codec: int, base_offset: int = 0) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 30,
    )
    for i, (ts, key, value, headers) in enumerate(records):
        assert builder.append(i, ts, key, value, list(headers or [])) is not None
    buf = bytearray(builder.build())
    struct.pack_into(">q", buf, 0, base_offset)
    return bytes(buf)


# ------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("codec", CODECS)
def test_encode_decode_round_trip(codec):
    buf = encode_batch(MIXED, compression=codec, base_offset=42)
    header, records = decode_batch(buf)
    assert records == expected(MIXED, 42)
    assert header.base_offset == 42
    assert header.records_count == len(MIXED)
    assert header.last_offset_delta == len(MIXED) - 1
    assert header.codec == codec
    assert header.base_timestamp == MIXED[0][0]
    assert header.max_timestamp == max(r[0] for r in MIXED)
    assert header.size == len(buf)
    assert validate_batch(buf) == header
    assert validate_records(buf) == len(MIXED)


@pytest.mark.parametrize("codec", CODECS)
def test_builder_matches_encode_batch(codec):
    builder = BatchBuilder(compression=codec, batch_size=1 << 30)
    deltas = [builder.append(*r) for r in MIXED]
    assert deltas == list(range(len(MIXED)))
    assert builder.records_count == len(MIXED)
    assert builder.max_timestamp == max(r[0] for r in MIXED)
    built = builder.build(base_offset=7)
    assert built == encode_batch(MIXED, compression=codec, base_offset=7)
    # build() may be called again, for example with the offset the broker assigned.
    again = builder.build(base_offset=9)
    assert decode_batch(again)[1] == expected(MIXED, 9)


def test_builder_size_is_exact_when_uncompressed():
    builder = BatchBuilder()
    for i in range(100):
        builder.append(1000 + i, None if i % 2 else b"k%d" % i, b"v" * i, [("h", b"x")] if i % 7 == 0 else None)
        assert builder.size_in_bytes == len(builder.build())


def test_builder_fills_up_to_batch_size():
    builder = BatchBuilder(batch_size=1000)
    accepted = 0
    while builder.append(5, None, b"v" * 100) != -1:
        accepted += 1
    assert accepted == builder.records_count
    assert builder.size_in_bytes <= 1000
    assert builder.size_in_bytes + 100 > 1000  # one more record would not fit
    assert len(builder.build()) == builder.size_in_bytes
    # A refused record leaves the batch as it was.
    assert decode_batch(builder.build())[1] == [Record(i, 5, None, b"v" * 100, ()) for i in range(accepted)]


def test_builder_accepts_a_first_record_larger_than_batch_size():
    builder = BatchBuilder(batch_size=100)
    assert builder.append(1, None, b"v" * MIB) == 0
    assert builder.append(1, None, b"v") == -1
    assert decode_batch(builder.build())[1] == [Record(0, 1, None, b"v" * MIB, ())]


def test_builder_base_timestamp_and_negative_deltas():
    builder = BatchBuilder(base_timestamp_ms=10_000)
    builder.append(9_000, None, b"a")
    builder.append(10_000 + (1 << 40), None, b"b")
    buf = builder.build()
    header, records = decode_batch(buf)
    assert header.base_timestamp == 10_000
    assert header.max_timestamp == 10_000 + (1 << 40)
    assert [r.timestamp for r in records] == [9_000, 10_000 + (1 << 40)]


def test_empty_batches_are_refused():
    with pytest.raises(ValueError):
        BatchBuilder().build()
    with pytest.raises(ValueError):
        encode_batch([])


def test_many_records_use_multi_byte_offset_deltas():
    records = [(i, None, b"%d" % i, None) for i in range(20_000)]
    buf = encode_batch(records)
    assert decode_batch(buf)[1] == expected(records)
    assert validate_records(buf) == 20_000


@pytest.mark.parametrize(
    "value",
    [-(1 << 63), -1, 0, 1, 63, 64, -64, -65, 8191, 8192, 1 << 31, (1 << 63) - 1],
)
def test_varint_round_trip(value):
    enc = encode_varint(value)
    assert decode_varint(enc + b"tail", 0) == (value, len(enc))


def test_varint_errors():
    with pytest.raises(ValueError):
        encode_varint(1 << 63)
    with pytest.raises(CorruptRecordError):
        decode_varint(b"\x80\x80", 0)
    with pytest.raises(CorruptRecordError):
        decode_varint(b"\xff" * 11, 0)


def test_compression_from_name():
    assert compression_from_name(None) == CODEC_NONE
    assert compression_from_name("none") == CODEC_NONE
    assert compression_from_name("lz4") == CODEC_LZ4
    assert compression_from_name("LZ4") == CODEC_LZ4
    for name in ("gzip", "snappy", "zstd", "brotli", ""):
        with pytest.raises(UnsupportedCompressionTypeError, match="not supported"):
            compression_from_name(name)


# ------------------------------------------------------------ against kafka-python


@pytest.mark.parametrize("codec", CODECS)
def test_ours_decoded_by_kafka_python(codec):
    buf = encode_batch(MIXED, compression=codec, base_offset=1000)
    batch = DefaultRecordBatch(bytearray(buf))
    assert batch.validate_crc()
    assert batch.base_offset == 1000
    assert batch.compression_type == codec
    assert batch.max_timestamp == max(r[0] for r in MIXED)
    got = [(r.offset, r.timestamp, r.key, r.value, [tuple(h) for h in r.headers]) for r in batch]
    assert got == [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in expected(MIXED, 1000)]


@pytest.mark.parametrize("codec", CODECS)
def test_builder_output_decoded_by_kafka_python(codec):
    builder = BatchBuilder(compression=codec)
    for i in range(500):
        if builder.append(1_700_000_000_000 + i, None, b"value-%d" % i) == -1:
            break
    batch = DefaultRecordBatch(bytearray(builder.build(base_offset=5)))
    assert batch.validate_crc()
    assert [(r.offset, r.value) for r in batch] == [(5 + i, b"value-%d" % i) for i in range(builder.records_count)]


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_decoded_by_ours(codec):
    buf = kafka_python_batch(MIXED, codec, base_offset=77)
    assert validate_batch(buf).codec == codec
    assert validate_records(buf) == len(MIXED)
    assert decode_batch(buf)[1] == expected(MIXED, 77)
    assert list(iter_records(buf)) == expected(MIXED, 77)


def test_kafka_python_lz4_frame_is_lz4_frame():
    # Kafka's lz4 is the LZ4 *frame* format: the records area starts with the frame magic.
    buf = encode_batch(MIXED, compression=CODEC_LZ4)
    assert buf[HEADER_SIZE : HEADER_SIZE + 4] == b"\x04\x22\x4d\x18"
    assert lz4.frame.decompress(buf[HEADER_SIZE:]) == encode_batch(MIXED)[HEADER_SIZE:]


# ------------------------------------------------------------- fetch buffers


def fetch_buffer(batches_of_records, codec=CODEC_NONE):
    """Back-to-back batches with consecutive offsets, as a fetch returns them."""
    out = []
    offset = 0
    for records in batches_of_records:
        out.append(encode_batch(records, compression=codec, base_offset=offset))
        offset += len(records)
    return b"".join(out), offset


def test_iter_records_start_offset_and_partial_tail():
    groups = [[(i * 10 + j, None, b"%d-%d" % (i, j), None) for j in range(5)] for i in range(4)]
    buf, end = fetch_buffer(groups)
    everything = [r for g in groups for r in g]
    assert list(iter_records(buf)) == expected(everything)
    assert list(iter_records(buf, start_offset=7)) == expected(everything)[7:]
    assert list(iter_records(buf, start_offset=end)) == []
    truncated = memoryview(buf)[: len(buf) - 3]
    assert list(iter_records(truncated)) == expected(everything)[:15]
    assert list(iter_records(bytearray(buf[:11]))) == []


def test_decode_records_into_calls_make_and_returns_next_offset():
    groups = [[(i, b"k", b"v%d" % i, [("h", None)])] * 3 for i in range(3)]
    buf, end = fetch_buffer(groups, CODEC_LZ4)
    made, next_offset = decode_records_into(buf, 4, lambda o, t, k, v, h: (o, t, k, v, h))
    assert next_offset == end == 9
    assert made == [tuple(r) for r in expected([r for g in groups for r in g])[4:]]
    records, next_offset = decode_records_into(buf, 0, Record)
    assert next_offset == 9 and all(type(r) is Record for r in records) and len(records) == 9
    assert decode_records_into(buf[:40], 3, Record) == ([], 3)


record_strategy = st.tuples(
    st.integers(min_value=0, max_value=(1 << 50)),
    st.one_of(st.none(), st.binary(max_size=300)),
    st.one_of(st.none(), st.binary(max_size=20_000)),
    st.one_of(
        st.none(),
        st.lists(st.tuples(st.text(max_size=10), st.one_of(st.none(), st.binary(max_size=20))), max_size=3),
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(record_strategy, min_size=1, max_size=40), codec=st.sampled_from(CODECS))
def test_property_random_records_round_trip(records, codec):
    buf = encode_batch(records, compression=codec, base_offset=3)
    assert decode_batch(buf)[1] == expected(records, 3)
    assert validate_records(buf) == len(records)
    builder = BatchBuilder(compression=codec, batch_size=1 << 30)
    for r in records:
        builder.append(*r)
    assert builder.build(3) == buf
    if codec == CODEC_NONE:
        assert builder.size_in_bytes == len(buf)


@settings(max_examples=100, deadline=None)
@given(
    groups=st.lists(
        st.lists(
            st.tuples(st.integers(0, 1 << 42), st.none(), st.binary(max_size=200), st.none()),
            min_size=1,
            max_size=8,
        ),
        min_size=1,
        max_size=6,
    ),
    cut=st.integers(min_value=0),
    start_offset=st.integers(0, 60),
)
def test_property_prefix_yields_only_whole_batches(groups, cut, start_offset):
    buf, _ = fetch_buffer(groups)
    cut %= len(buf) + 1
    prefix = memoryview(buf)[:cut]
    whole = [(p, s) for p, s in iter_batch_positions(buf) if p + s <= cut]
    want = [r for (p, s) in whole for r in decode_batch(buf, p)[1] if r.offset >= start_offset]
    assert list(iter_records(prefix, start_offset)) == want
    made, next_offset = decode_records_into(prefix, start_offset, Record)
    assert made == want
    last = parse_header(buf, whole[-1][0]).next_offset if whole else start_offset
    assert next_offset == max(last, start_offset)


# ---------------------------------------------------------------------- bad input


def all_decoders(buf):
    """Every public way to read a batch; each must raise on bad input."""
    return [
        lambda: validate_records(buf),
        lambda: decode_batch(buf),
        lambda: list(iter_records(buf)),
        lambda: decode_records_into(buf, 0, Record),
    ]


def test_wrong_crc_is_corrupt():
    buf = bytearray(encode_batch(MIXED[:3]))
    buf[HEADER_SIZE + 20] ^= 0x40  # inside the first value
    for decode in all_decoders(buf):
        with pytest.raises(CorruptRecordError, match="CRC"):
            decode()
    # Without CRC verification the flipped byte lands in a value and decodes "fine".
    assert len(decode_batch(buf, verify_crc=False)[1]) == 3


def test_wrong_magic_is_invalid():
    buf = bytearray(encode_batch(MIXED[:2]))
    buf[16] = 1  # magic is outside the CRC-covered range
    for decode in all_decoders(buf):
        with pytest.raises(InvalidRecordError, match="magic"):
            decode()
    with pytest.raises(InvalidRecordError):
        decode_batch(buf, verify_crc=False)


@pytest.mark.parametrize("codec", [CODEC_GZIP, CODEC_SNAPPY, CODEC_ZSTD, 5, 7])
def test_unsupported_codec_bits(codec):
    buf = bytearray(encode_batch(MIXED[:2]))
    struct.pack_into(">h", buf, 21, codec)
    recrc(buf)
    for decode in all_decoders(buf):
        with pytest.raises(UnsupportedCompressionTypeError, match="not supported"):
            decode()
    with pytest.raises(UnsupportedCompressionTypeError):
        BatchBuilder(compression=codec)
    with pytest.raises(UnsupportedCompressionTypeError):
        encode_batch(MIXED[:1], compression=codec)


def test_batch_length_larger_than_buffer_is_corrupt():
    buf = bytearray(encode_batch(MIXED[:2]))
    struct.pack_into(">i", buf, 8, len(buf))  # claims 12 more bytes than present
    with pytest.raises(CorruptRecordError, match="batchLength"):
        validate_batch(buf)
    with pytest.raises(CorruptRecordError):
        decode_batch(buf)
    # In a fetch buffer the same thing is just an incomplete tail.
    assert list(iter_records(buf)) == []


def test_batch_length_below_header_is_corrupt():
    buf = bytearray(encode_batch(MIXED[:2]))
    struct.pack_into(">i", buf, 8, 10)
    for decode in all_decoders(buf):
        with pytest.raises(CorruptRecordError):
            decode()


def test_record_length_lies_is_corrupt():
    buf = bytearray(encode_batch([(1, None, b"a" * 10, None), (2, None, b"b" * 10, None)]))
    assert buf[HEADER_SIZE] == 32  # varint(16): the first record's length
    buf[HEADER_SIZE] = 34
    recrc(buf)
    validate_batch(buf)  # the header alone cannot tell
    for decode in all_decoders(buf):
        with pytest.raises(CorruptRecordError):
            decode()


def test_value_length_past_batch_end_is_corrupt():
    buf = bytearray(encode_batch([(1, None, b"a" * 10, None)]))
    # value length varint(10) = 20 sits after length, attributes, tsDelta, offsetDelta, null key
    assert buf[HEADER_SIZE + 5] == 20
    buf[HEADER_SIZE + 5] = 0xFE
    buf[HEADER_SIZE + 6 : HEADER_SIZE + 6] = b"\x7f"
    struct.pack_into(">i", buf, 8, len(buf) - LOG_OVERHEAD)
    recrc(buf)
    nxt = encode_batch([(2, None, b"z" * 5000, None)], base_offset=1)
    for decode in all_decoders(bytes(buf) + nxt):
        with pytest.raises(CorruptRecordError):
            decode()


@pytest.mark.parametrize("delta", [+1, -1])
def test_wrong_record_count(delta):
    buf = bytearray(encode_batch(MIXED[:3]))
    count = 3 + delta
    struct.pack_into(">i", buf, 57, count)
    recrc(buf)
    with pytest.raises(InvalidRecordError, match="lastOffsetDelta"):
        validate_batch(buf)
    # Count and lastOffsetDelta agree with each other but not with the records.
    struct.pack_into(">i", buf, 23, count - 1)
    recrc(buf)
    assert validate_batch(buf).records_count == count
    with pytest.raises((InvalidRecordError, CorruptRecordError)):
        validate_records(buf)
    for decode in all_decoders(buf)[1:]:
        with pytest.raises(CorruptRecordError):
            decode()


def test_zero_record_count_is_invalid():
    buf = bytearray(encode_batch(MIXED[:1]))
    struct.pack_into(">i", buf, 57, 0)
    struct.pack_into(">i", buf, 23, -1)
    recrc(buf)
    with pytest.raises(InvalidRecordError):
        validate_batch(buf)


def test_validate_records_rejects_out_of_order_offset_deltas():
    buf = bytearray(encode_batch([(1, None, b"a", None), (1, None, b"b", None)]))
    # second record: length, attributes, tsDelta, offsetDelta (varint 1 = 0x02)
    second = HEADER_SIZE + 1 + buf[HEADER_SIZE] // 2
    assert buf[second + 3] == 2
    buf[second + 3] = 0
    recrc(buf)
    with pytest.raises(InvalidRecordError, match="offsetDelta"):
        validate_records(buf)


def test_validate_records_rejects_bad_header_key():
    buf = bytearray(encode_batch([(1, None, b"a", [("k", b"v")])]))
    i = buf.index(b"k", HEADER_SIZE)
    buf[i] = 0xFF
    recrc(buf)
    with pytest.raises(CorruptRecordError, match="UTF-8"):
        validate_records(buf)
    with pytest.raises(CorruptRecordError, match="UTF-8"):
        decode_batch(buf)


def test_corrupt_lz4_frame_is_corrupt():
    buf = bytearray(encode_batch(MIXED[:3], compression=CODEC_LZ4))
    buf[HEADER_SIZE + 12 :] = b"\x00" * (len(buf) - HEADER_SIZE - 12)
    recrc(buf)
    for decode in all_decoders(buf):
        with pytest.raises(CorruptRecordError, match="lz4"):
            decode()


def test_oversize_batch_against_max_batch_bytes():
    buf = encode_batch([(1, None, b"v" * 2000, None)])
    assert validate_batch(buf, max_batch_bytes=len(buf)).size == len(buf)
    with pytest.raises(MessageSizeTooLargeError) as info:
        validate_batch(buf, max_batch_bytes=len(buf) - 1)
    assert info.value.details["size"] == len(buf)


def test_garbage_never_raises_anything_else():
    good = encode_batch(MIXED[:4])
    for i in range(HEADER_SIZE, len(good), 7):
        buf = bytearray(good)
        buf[i] ^= 0xA5
        recrc(buf)
        for decode in all_decoders(bytes(buf)):
            try:
                decode()
            except (CorruptRecordError, InvalidRecordError):
                pass


def test_set_base_offset_keeps_crc_valid():
    buf = bytearray(encode_batch(MIXED[:3], compression=CODEC_LZ4))
    crc_before = parse_header(buf).crc
    set_base_offset(buf, 123_456_789)
    header = validate_batch(buf)
    assert header.base_offset == 123_456_789 and header.crc == crc_before
    assert DefaultRecordBatch(bytearray(buf)).validate_crc()
    assert [r.offset for r in decode_batch(buf)[1]] == [123_456_789, 123_456_790, 123_456_791]


@pytest.mark.parametrize("store_size", [True, False])
def test_lz4_frames_with_and_without_content_size(store_size):
    plain = encode_batch(MIXED[:4])
    buf = bytearray(plain[:HEADER_SIZE])
    buf += lz4.frame.compress(plain[HEADER_SIZE:], block_linked=False, store_size=store_size)
    struct.pack_into(">i", buf, 8, len(buf) - LOG_OVERHEAD)
    struct.pack_into(">h", buf, 21, CODEC_LZ4)
    recrc(buf)
    assert decode_batch(buf)[1] == expected(MIXED[:4])
    truncated = bytearray(buf[:-6])
    struct.pack_into(">i", truncated, 8, len(truncated) - LOG_OVERHEAD)
    recrc(truncated)
    with pytest.raises(CorruptRecordError, match="lz4"):
        decode_batch(truncated)


def test_lz4_frame_declaring_a_huge_size_is_refused():
    buf = bytearray(encode_batch(MIXED[:2], compression=CODEC_LZ4))
    frame = HEADER_SIZE
    assert buf[frame + 4] & 0x08  # content size present
    buf[frame + 6 : frame + 14] = (1 << 40).to_bytes(8, "little")
    recrc(buf)
    with pytest.raises(CorruptRecordError, match="limit"):
        validate_records(buf)


def test_decoding_from_an_mmap_at_a_position(tmp_path):
    import mmap

    first = encode_batch(MIXED[:2])
    second = encode_batch(MIXED[2:5], compression=CODEC_LZ4, base_offset=2)
    path = tmp_path / "segment.log"
    path.write_bytes(first + second)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        assert validate_records(mm, len(first)) == 3
        assert decode_batch(mm, len(first))[1] == expected(MIXED[2:5], 2)
        assert decode_batch(memoryview(mm)[len(first) :])[1] == expected(MIXED[2:5], 2)
        assert list(iter_records(mm, start_offset=1)) == expected(MIXED[:5])[1:]


def test_header_keys_must_be_str():
    with pytest.raises(TypeError, match="header key must be str"):
        encode_batch([(1, None, b"v", [(b"bytes-key", b"x")])])
    with pytest.raises(TypeError, match="header key must be str"):
        BatchBuilder().append(1, None, b"v", [(b"bytes-key", b"x")])


def test_values_may_be_bytearray_or_memoryview():
    records = [(1, bytearray(b"k"), memoryview(b"value"), None), (2, None, bytearray(b"v" * 200), [("h", b"1")])]
    buf = encode_batch(records)
    assert [(r.key, r.value) for r in decode_batch(buf)[1]] == [(b"k", b"value"), (None, b"v" * 200)]


# ------------------------------------------------- fast paths agree with the general path
#
# The uniform decoder (_decode_uniform) and the bulk encoder (_encode_nokey_run) are checked
# against the general, per-record code kept as the reference (_decode_general,
# _encode_record) on random and adversarial inputs.

from annal.record import _builder, _decoder  # noqa: E402


def reference_area(records):
    """Records area written by the general per-record encoder: (offset_delta, tsd, key, value)."""
    return b"".join(_builder._encode_record(od, tsd, key, value, None) for od, tsd, key, value in records)


def general_outcome(data, pos, end, count, cls):
    out = ["earlier"]
    try:
        _decoder._decode_general(data, pos, end, count, 1000, 5_000_000, out, cls)
    except (CorruptRecordError, InvalidRecordError) as exc:
        return type(exc)
    return out


def assert_uniform_agrees(data, pos, end, count):
    for cls in (Record, tuple):
        out = ["earlier"]
        if _decoder._decode_uniform(data, pos, end, count, 1000, 5_000_000, out, cls):
            assert out == general_outcome(data, pos, end, count, cls)
            assert all(type(r) is cls for r in out[1:])
        else:
            assert out == ["earlier"]  # left as it was
        # and the dispatcher as a whole: same records, or the same error class
        out = ["earlier"]
        try:
            _decoder._decode_into(data, pos, end, count, 1000, 5_000_000, out, cls)
        except (CorruptRecordError, InvalidRecordError) as exc:
            assert general_outcome(data, pos, end, count, cls) is type(exc)
        else:
            assert out == general_outcome(data, pos, end, count, cls)


uniform_batch = st.tuples(
    st.integers(1, 300),  # records
    st.integers(0, 300),  # value length (1 and 2-byte length varints)
    st.lists(st.integers(-70, 9000), min_size=1, max_size=4),  # timestamp deltas to cycle through
    st.sampled_from(["sorted", "constant", "cycle"]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=uniform_batch,
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=3),
    count_change=st.sampled_from([0, 0, 0, -1, 1]),
    junk=st.binary(min_size=0, max_size=8),
    data=st.data(),
)
def test_property_uniform_decoder_equals_general(shape, edits, count_change, junk, data):
    n, vlen, tsds, order = shape
    if order == "sorted":
        deltas = sorted(tsds[i % len(tsds)] for i in range(n))
    elif order == "constant":
        deltas = [tsds[0]] * n
    else:
        deltas = [tsds[i % len(tsds)] for i in range(n)]
    records = [(i, deltas[i], None, bytes([i % 251]) * vlen) for i in range(n)]
    # adversarial shapes mixed in: a wrong offset delta, a key, a null value, another length
    mix = data.draw(st.sampled_from(["none", "none", "od", "key", "null", "len", "od_swap"]))
    if mix != "none":
        i = data.draw(st.integers(0, n - 1))
        od, tsd, key, value = records[i]
        records[i] = {
            "od": (od + data.draw(st.integers(1, 3)), tsd, key, value),
            "key": (od, tsd, b"k", value),
            "null": (od, tsd, key, None),
            "len": (od, tsd, key, value + b"x"),
            "od_swap": (max(od - 1, 0), tsd, key, value),
        }[mix]
    area = bytearray(reference_area(records))
    for where, byte in edits:  # lying lengths, wrong deltas, broken varints
        area[where % len(area)] = byte
    buf = junk + bytes(area) + b"\x00\x01\x02" * 3  # bytes after end: the next batch
    assert_uniform_agrees(buf, len(junk), len(junk) + len(area), n + count_change)


@pytest.mark.parametrize("n", [1, 63, 64, 65, 200, 8191, 8192, 8193])
@pytest.mark.parametrize("tsd_width", ["one byte", "two bytes", "both"])
def test_uniform_decoder_across_offset_delta_widths(n, tsd_width):
    tsd = {"one byte": lambda i: i % 60, "two bytes": lambda i: 64 + i % 300, "both": lambda i: i % 100}[tsd_width]
    records = [(i, tsd(i), None, b"%05d" % i) for i in range(n)]
    area = reference_area(records)
    assert_uniform_agrees(area, 0, len(area), n)
    out: list = []
    fast = _decoder._decode_uniform(area, 0, len(area), n, 0, 0, out, tuple)
    if tsd_width != "both":  # widths changing every few dozen records: general decoder
        assert fast is (n <= 8192)


def test_uniform_decoder_leaves_varied_lengths_to_the_general_decoder():
    records = [(i, 0, None, b"x" * (i % 7)) for i in range(150)]
    area = reference_area(records)
    assert _decoder._decode_uniform(area, 0, len(area), 150, 0, 0, [], tuple) is False
    assert_uniform_agrees(area, 0, len(area), 150)


def test_uniform_decoder_is_used_for_producer_batches():
    buf = encode_batch([(1000 + i % 7, None, b"v" * 100, None) for i in range(500)])
    h = validate_batch(buf)
    out: list = []
    assert _decoder._decode_uniform(buf, HEADER_SIZE, len(buf), h.records_count, 0, h.base_timestamp, out, Record)
    assert out == expected([(1000 + i % 7, None, b"v" * 100, None) for i in range(500)])


@pytest.mark.parametrize("vlen", [5, 100])
@pytest.mark.parametrize("lie", ["value_shorter", "value_longer", "record_longer"])
def test_uniform_decoder_refuses_lengths_that_disagree(vlen, lie):
    """Every record says the same wrong thing, so the run is uniform but not well formed: the
    general decoder raises CorruptRecordError and so must the dispatcher."""
    n = 80
    records = [(i, 0, None, b"\x00" * vlen) for i in range(n)]
    area = bytearray()
    for od, tsd, key, value in records:
        rec = bytearray(_builder._encode_record(od, tsd, key, value, None))
        lw = len(encode_varint(len(rec) - 1))
        vpos = lw + 1 + 1 + len(encode_varint(od)) + 1  # value length varint
        if lie == "value_shorter":
            rec[vpos] -= 2  # zig-zag: one less
        elif lie == "value_longer":
            rec[vpos] += 2
        else:
            rec[0] += 2
        area += rec
    data = bytes(area) + b"\x00" * 200
    assert general_outcome(data, 0, len(area), n, Record) is CorruptRecordError
    assert_uniform_agrees(data, 0, len(area), n)
    with pytest.raises(CorruptRecordError):
        _decoder._decode_into(data, 0, len(area), n, 0, 0, [], Record)


def reference_batch(records, compression=CODEC_NONE, base_offset=0):
    """What the general per-record encoder writes for (timestamp, key, value, headers) records."""
    base = records[0][0]
    area = b"".join(_builder._encode_record(i, ts - base, k, v, h) for i, (ts, k, v, h) in enumerate(records))
    max_ts = max([-1] + [r[0] for r in records])
    return b"".join(_builder._pack_batch(area, compression, base_offset, len(records), base, max_ts, -1, -1, -1, -1))


producer_record = st.one_of(
    # mostly the common shape: null key, no headers, 100 bytes
    st.tuples(st.integers(0, 9000), st.none(), st.just(b"v" * 100), st.none()),
    st.tuples(st.integers(0, 70), st.none(), st.binary(max_size=300), st.none()),
    st.tuples(st.integers(-100, 20_000), st.none(), st.one_of(st.none(), st.binary(max_size=20)), st.none()),
    st.tuples(st.integers(0, 70), st.binary(max_size=5), st.binary(max_size=50), st.none()),
    st.tuples(st.integers(0, 70), st.none(), st.binary(max_size=5), st.just([("h", b"1")])),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=st.lists(producer_record, min_size=1, max_size=150),
    uniform=st.booleans(),
    base=st.integers(0, 1 << 41),
    batch_size=st.integers(100, 20_000),
    codec=st.sampled_from(CODECS),
)
def test_property_bulk_encoders_equal_the_general_encoder(records, uniform, base, batch_size, codec):
    if uniform:  # the shape the bulk paths are for, deltas 0..63
        records = [(ts % 64, None, b"u" * 33, None) for ts, _, _, _ in records]
    records = [(base + ts, k, v, h) for ts, k, v, h in records]
    assert encode_batch(records, codec, 5) == reference_batch(records, codec, 5)
    assert type(encode_batch(records, codec, 5)) is bytes
    assert encode_batch(iter(records), codec, 5) == reference_batch(records, codec, 5)
    # BatchBuilder: the same bytes, an exact size after every append, -1 exactly when the
    # general encoder's record would take the batch past batch_size
    builder = BatchBuilder(codec, batch_size, base_timestamp_ms=records[0][0])
    accepted: list = []
    for r in records:
        would_be = len(reference_batch(accepted + [r]))
        delta = builder.append(*r)
        if would_be > batch_size and accepted:
            assert delta == -1
        else:
            assert delta == len(accepted)
            accepted.append(r)
        if codec == CODEC_NONE:
            assert builder.size_in_bytes == len(reference_batch(accepted))
    assert builder.records_count == len(accepted)
    assert builder.max_timestamp == max([-1] + [r[0] for r in accepted])
    assert builder.build(9) == reference_batch(accepted, codec, 9)
    assert type(builder.build(9)) is bytes
    if codec == CODEC_NONE:
        assert builder.size_in_bytes == len(builder.build())


@pytest.mark.parametrize("first_keyed", [0, 10, 63, 64, 100])
@pytest.mark.parametrize("lengths", ["equal", "varied"])
def test_builder_deferred_records_after_a_keyed_one(first_keyed, lengths):
    """Deferred null-key records after a record encoded at once: their offset deltas start
    where it left off, across the one- to two-byte width change at 64 and 8192."""
    records = []
    for i in range(8300):
        value = b"v" * (50 if lengths == "equal" else i % 130)
        key = b"k" if i in (first_keyed, first_keyed + 1) else None
        records.append((1000 + i % 90, key, value, None))
    builder = BatchBuilder(batch_size=1 << 30)
    for r in records:
        builder.append(*r)
    assert builder.build() == reference_batch(records)
    assert builder.size_in_bytes == len(reference_batch(records))


def test_builder_refuses_a_wrong_value_type_at_append():
    """A str value is refused by append itself, not later by build() (which would lose the
    whole batch); bytearray values are encoded at once, so changing them afterwards does not
    change the batch."""
    builder = BatchBuilder()
    builder.append(1, None, b"first")
    with pytest.raises(TypeError):
        builder.append(1, None, "text")  # type: ignore[arg-type]
    mutable = bytearray(b"abc")
    builder.append(1, None, mutable)
    mutable[:] = b"xyz"
    assert [r.value for r in decode_batch(builder.build())[1]] == [b"first", b"abc"]
    assert builder.size_in_bytes == len(builder.build())


class _Prefixed(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple


@pytest.mark.parametrize(
    "records",
    [
        [(1_000 + i // 7, None, b"v" * 100, None) for i in range(300)],  # uniform fast path
        [(1_000, b"k%d" % i, b"x" * (i % 13), [("h", b"1")]) for i in range(50)],  # general path
    ],
    ids=["uniform", "general"],
)
@pytest.mark.parametrize("start_offset", [0, 5, 17])
def test_decode_records_into_with_a_prefix_equals_plain_records(records, start_offset) -> None:
    buf = encode_batch(records, base_offset=3) + encode_batch(records[:9], base_offset=3 + len(records))
    plain, nxt = decode_records_into(buf, start_offset, Record)
    got, nxt2 = decode_records_into(buf, start_offset, _Prefixed, True, ("t", 4))
    assert nxt2 == nxt
    assert all(type(r) is _Prefixed for r in got)
    assert [tuple(r) for r in got] == [("t", 4) + tuple(r) for r in plain]
    # Any other callable receives the prefix first too.
    called, _ = decode_records_into(buf, start_offset, lambda *a: a, True, ("t", 4))
    assert called == [tuple(r) for r in got]
