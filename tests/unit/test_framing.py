"""Unit tests of annal.protocol.framing: encoders and decoders round-trip, the frame reader
gives the same frames however the bytes are chunked, and bad bytes raise InvalidRequestError."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from annal.errors import InvalidRequestError, NetworkError
from annal.protocol import framing as fr

topics = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=20)
i32 = st.integers(-(2**31), 2**31 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
i16 = st.integers(-(2**15), 2**15 - 1)

fetch_requests = st.builds(
    fr.FetchRequest,
    correlation_id=i32,
    max_wait_ms=i32,
    min_bytes=i32,
    partitions=st.lists(st.builds(fr.FetchPartition, topics, i32, i64, i32), max_size=5),
    replica_id=st.one_of(st.just(-1), st.integers(0, 2**31 - 1)),
)
produce_requests = st.builds(
    fr.ProduceRequest,
    correlation_id=i32,
    acks=i16,
    timeout_ms=i32,
    partitions=st.lists(st.builds(fr.ProducePartition, topics, i32, st.binary(max_size=300)), max_size=4),
)
fetch_responses = st.builds(
    fr.FetchResponse,
    correlation_id=i32,
    error_code=st.just(0),
    partitions=st.lists(
        st.builds(fr.FetchPartitionResult, topics, i32, i16, st.text(max_size=30), i64, i64,
                  st.binary(max_size=300)),
        max_size=4,
    ),
)
produce_responses = st.builds(
    fr.ProduceResponse,
    correlation_id=i32,
    error_code=st.just(0),
    partitions=st.lists(
        st.builds(fr.ProducePartitionResult, topics, i32, i16, st.text(max_size=30), i64, i64, i32),
        max_size=4,
    ),
)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


def _feed_all(reader: fr.FrameReader, chunks: list[bytes], use_buffer: bool) -> list[memoryview]:
    frames = []
    for chunk in chunks:
        if use_buffer:
            pos = 0
            while pos < len(chunk):
                buf = reader.get_buffer()
                n = min(len(buf), len(chunk) - pos)
                buf[:n] = chunk[pos : pos + n]
                reader.buffer_updated(n)
                pos += n
        else:
            reader.receive_data(chunk)
        while (f := reader.next_frame()) is not None:
            frames.append(f)
    return frames


def _strip(frame: bytes) -> bytes:
    (n,) = struct.unpack_from(">i", frame)
    assert n == len(frame) - 4
    return frame[4:]


@given(st.lists(st.one_of(fetch_requests, produce_requests), min_size=1, max_size=5),
       st.lists(st.integers(0, 10_000), max_size=30), st.booleans())
@settings(max_examples=200, deadline=None)
def test_requests_round_trip_in_any_chunking(reqs, cuts, use_buffer):
    wire = b"".join(
        fr.encode_fetch_request(r) if isinstance(r, fr.FetchRequest) else fr.encode_produce_request(r)
        for r in reqs
    )
    reader = fr.FrameReader(scratch_bytes=7)  # tiny scratch: exercises frames spanning buffers
    frames = _feed_all(reader, _chunks(wire, cuts), use_buffer)
    assert len(frames) == len(reqs)
    for frame, req in zip(frames, reqs):
        got = fr.decode_request(frame)
        assert type(got) is type(req)
        if isinstance(req, fr.ProduceRequest):
            assert (got.correlation_id, got.acks, got.timeout_ms) == (req.correlation_id, req.acks, req.timeout_ms)
            assert [(p.topic, p.partition, bytes(p.records)) for p in got.partitions] == [
                (p.topic, p.partition, bytes(p.records)) for p in req.partitions
            ]
        else:
            assert got.correlation_id == req.correlation_id
            assert (got.max_wait_ms, got.min_bytes) == (req.max_wait_ms, req.min_bytes)
            assert list(got.partitions) == list(req.partitions)
    assert not reader.in_frame


@given(fetch_responses, st.lists(st.integers(0, 5000), max_size=20), st.booleans())
@settings(max_examples=150, deadline=None)
def test_fetch_response_round_trip_records_are_views(resp, cuts, use_buffer):
    wire = fr.encode_fetch_response(resp)
    reader = fr.FrameReader(min_frame_bytes=fr.RESPONSE_HEADER_SIZE, scratch_bytes=16)
    got_frames = _feed_all(reader, _chunks(wire, cuts), use_buffer)
    assert len(got_frames) == 1
    frame = got_frames[0]
    got = fr.decode_fetch_response(frame)
    assert got.correlation_id == resp.correlation_id and got.error_code == 0
    assert len(got.partitions) == len(resp.partitions)
    for g, r in zip(got.partitions, resp.partitions):
        assert isinstance(g.records, memoryview)
        assert g.records.obj is frame.obj  # a view of the received frame, not a copy
        assert bytes(g.records) == r.records
        assert (g.topic, g.partition, g.error_code, g.error_message, g.high_watermark, g.log_start_offset) == (
            r.topic, r.partition, r.error_code, r.error_message, r.high_watermark, r.log_start_offset)


@given(produce_responses)
@settings(max_examples=100, deadline=None)
def test_produce_response_round_trip(resp):
    got = fr.decode_produce_response(_strip(fr.encode_produce_response(resp)))
    assert got.correlation_id == resp.correlation_id
    assert list(got.partitions) == list(resp.partitions)


def test_fetch_response_built_from_heads_equals_in_memory_encoding():
    """The broker writes heads then sendfiles the records; the bytes must be identical."""
    parts = [fr.FetchPartitionResult("t", 0, 0, "", 10, 0, b"x" * 100),
             fr.FetchPartitionResult("u", 3, 1, "out of range", 5, 2, b"")]
    heads = [fr.encode_fetch_partition_head(p.topic, p.partition, p.error_code, p.error_message,
                                            p.high_watermark, p.log_start_offset, len(p.records))
             for p in parts]
    for p, h in zip(parts, heads):
        assert len(h) == fr.fetch_partition_head_size(p.topic, p.error_message)
    body = b"".join(h + bytes(p.records) for h, p in zip(heads, parts))
    wire = fr.encode_fetch_response_head(42, len(body), len(parts)) + body
    assert wire == fr.encode_fetch_response(fr.FetchResponse(42, 0, parts))


def test_error_response_decodes_with_empty_body():
    wire = fr.encode_error_response(7, InvalidRequestError.code)
    assert fr.decode_response_header(_strip(wire)) == (7, 42)
    assert fr.decode_fetch_response(_strip(wire)).error_code == 42
    assert fr.decode_produce_response(_strip(wire)).partitions == ()


@pytest.mark.parametrize("length", [-1, 0, 7, 2**31 - 1, fr.DEFAULT_MAX_FRAME_BYTES + 1])
def test_length_prefix_out_of_bounds_raises(length):
    reader = fr.FrameReader()
    reader.receive_data(struct.pack(">i", length) + b"\0" * 16)
    with pytest.raises(InvalidRequestError) as ei:
        reader.next_frame()
    assert ei.value.details["frame_length"] == length
    reader.receive_data(b"more bytes are ignored")
    with pytest.raises(InvalidRequestError):
        reader.next_frame()


def test_frames_before_a_bad_prefix_are_handed_out_first():
    good = fr.encode_fetch_request(fr.FetchRequest(1, 0, 0, []))
    reader = fr.FrameReader()
    reader.receive_data(good + good + struct.pack(">i", 2**31 - 1))
    assert reader.next_frame() is not None
    assert reader.next_frame() is not None
    with pytest.raises(InvalidRequestError):
        reader.next_frame()


def test_eof_mid_frame_raises_network_error_and_clean_eof_does_not():
    good = fr.encode_fetch_request(fr.FetchRequest(1, 0, 0, []))
    reader = fr.FrameReader()
    reader.receive_data(good)
    reader.receive_data(b"")
    assert reader.next_frame() is not None
    assert reader.next_frame() is None and reader.eof
    reader = fr.FrameReader()
    reader.receive_data(good[:-1])
    reader.receive_data(b"")
    with pytest.raises(NetworkError):
        reader.next_frame()


def test_large_frame_is_received_in_place():
    payload = fr.encode_produce_request(fr.ProduceRequest(5, 1, 1000, [fr.ProducePartition("t", 0, b"r" * 200_000)]))
    reader = fr.FrameReader(scratch_bytes=1024)
    buf = reader.get_buffer()
    buf[:1024] = payload[:1024]
    reader.buffer_updated(1024)
    # Once the length is known the reader hands out the frame's own buffer, all of the rest.
    buf = reader.get_buffer()
    assert len(buf) == len(payload) - 1024
    buf[:] = payload[1024:]
    reader.buffer_updated(len(buf))
    frame = reader.next_frame()
    req = fr.decode_request(frame)
    assert bytes(req.partitions[0].records) == b"r" * 200_000
    assert req.partitions[0].records.obj is frame.obj


def _req(api_key: int, body: bytes, version: int = 0, cid: int = 9) -> bytes:
    return struct.pack(">hhi", api_key, version, cid) + body


@pytest.mark.parametrize(
    "frame",
    [
        _req(7, b""),  # unknown api key
        _req(fr.API_FETCH, b"", version=1),  # unknown version
        _req(fr.API_FETCH, b"\0\0\0\0"),  # truncated fetch header
        _req(fr.API_FETCH, struct.pack(">iii", 0, 0, 1)),  # partition missing
        _req(fr.API_FETCH, struct.pack(">iii", 0, 0, 2**30)),  # absurd count
        _req(fr.API_FETCH, struct.pack(">iii", 0, 0, -1)),  # negative count
        _req(fr.API_FETCH, struct.pack(">iii", 0, 0, 0) + b"x"),  # trailing byte
        _req(fr.API_FETCH, struct.pack(">iiih", 0, 0, 1, 100) + b"t" + struct.pack(">iqi", 0, 0, 1)),
        _req(fr.API_FETCH, struct.pack(">iiih", 0, 0, 1, -3) + struct.pack(">iqi", 0, 0, 1)),
        _req(fr.API_FETCH, struct.pack(">iiih", 0, 0, 1, 2) + b"\xff\xfe" + struct.pack(">iqi", 0, 0, 1)),
        _req(fr.API_PRODUCE, struct.pack(">hiih", 1, 0, 1, 1) + b"t" + struct.pack(">ii", 0, 50) + b"x"),
        _req(fr.API_PRODUCE, struct.pack(">hiih", 1, 0, 1, 1) + b"t" + struct.pack(">ii", 0, -1)),
    ],
)
def test_malformed_requests_raise_with_correlation_id(frame):
    with pytest.raises(InvalidRequestError) as ei:
        fr.decode_request(frame)
    assert ei.value.details["correlation_id"] == 9


def test_short_request_header_raises():
    with pytest.raises(InvalidRequestError):
        fr.decode_request(b"\0\1\0")


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_random_bytes_never_raise_anything_but_protocol_errors(data):
    reader = fr.FrameReader(max_frame_bytes=1 << 20)
    reader.receive_data(data)
    try:
        while (f := reader.next_frame()) is not None:
            try:
                fr.decode_request(f)
            except InvalidRequestError:
                pass
            for dec in (fr.decode_fetch_response, fr.decode_produce_response):
                try:
                    dec(f)
                except InvalidRequestError:
                    pass
    except InvalidRequestError:
        pass


def test_long_error_message_is_cut_at_character_boundary():
    s = fr.encode_string("é" * 20000)
    (n,) = struct.unpack_from(">h", s)
    assert n <= fr.MAX_STRING_BYTES and len(s) == n + 2
    s[2:].decode("utf-8")


def test_recycled_buffer_takes_the_next_large_frame():
    big = fr.encode_produce_request(fr.ProduceRequest(1, 1, 1000, [fr.ProducePartition("t", 0, b"a" * 300_000)]))
    smaller = fr.encode_produce_request(fr.ProduceRequest(2, 1, 1000, [fr.ProducePartition("t", 0, b"b" * 200_000)]))
    reader = fr.FrameReader()
    reader.receive_data(big[:100])
    reader.receive_data(big[100:])
    first = reader.next_frame()
    buf = first.obj
    reader.recycle(first)
    reader.receive_data(smaller[:10])
    reader.receive_data(smaller[10:])
    second = reader.next_frame()
    assert second.obj is buf and len(second) == len(smaller) - 4  # same buffer, right length
    req = fr.decode_request(second)
    assert req.correlation_id == 2 and bytes(req.partitions[0].records) == b"b" * 200_000
    # small frames never use the spare
    reader.recycle(second)
    tiny = fr.encode_fetch_request(fr.FetchRequest(3, 0, 0, []))
    reader.receive_data(tiny[:3])
    reader.receive_data(tiny[3:])
    assert reader.next_frame().obj is not buf


@pytest.mark.parametrize("use_buffer", [False, True])
def test_a_length_prefix_alone_does_not_allocate_the_whole_frame(use_buffer):
    records = bytes(range(256)) * (40 * 1024)  # 10 MiB
    wire = fr.encode_produce_request(fr.ProduceRequest(7, 1, 1000, [fr.ProducePartition("t", 0, records)]))
    reader = fr.FrameReader()
    reader.receive_data(wire[:100])
    assert reader.frame_bytes_expected == len(wire) - 4
    assert len(reader._frame) <= 4 * 1024 * 1024  # grows as the bytes arrive
    frames = _feed_all(reader, _chunks(wire[100:], list(range(0, len(wire), 777_777))), use_buffer)
    assert len(frames) == 1
    req = fr.decode_request(frames[0])
    assert bytes(req.partitions[0].records) == records


def test_reader_reports_the_memory_it_holds_and_when_the_next_read_allocates():
    """What the data port's request memory bound reads: bytes of frame buffers held, and
    whether the next bytes may need new memory (a new frame, or a full buffer that grows)."""
    import struct as _struct

    r = fr.FrameReader(max_frame_bytes=64 << 20, min_frame_bytes=0)
    assert r.allocated_bytes == 0 and r.next_read_allocates  # a prefix would start a frame
    r.receive_data(_struct.pack(">i", 10 << 20) + b"x" * 100)
    held = r.allocated_bytes
    assert 0 < held < 10 << 20  # a large frame starts small and grows as bytes arrive
    assert not r.next_read_allocates  # its buffer still has room
    r.receive_data(b"y" * (held - 100))
    assert r.next_read_allocates  # full: the next byte makes it grow
    r.receive_data(b"z" * ((10 << 20) - held))
    frame = r.next_frame()
    assert frame is not None and len(frame) == 10 << 20 and r.allocated_bytes == 0
    r.recycle(frame)
    assert r.allocated_bytes >= 10 << 20  # the spares count until dropped
    r.drop_spares()
    assert r.allocated_bytes == 0


def test_ready_bytes_counts_complete_frames_only() -> None:
    r = fr.FrameReader(max_frame_bytes=64 << 20, min_frame_bytes=0)
    r.receive_data(struct.pack(">i", 5) + b"hello" + struct.pack(">i", 32 << 20) + b"\0" * 1000)
    assert r.pending_frames == 1
    assert r.ready_bytes == 5
    assert r.pending_bytes == 5 + (32 << 20)  # the frame still arriving counts at its full length
    assert bytes(r.next_frame()) == b"hello"
    assert r.ready_bytes == 0 and r.in_frame
