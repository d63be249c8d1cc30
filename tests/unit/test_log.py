"""PartitionLog: append/read/offsets, bad input leaves the log untouched, roll, retention,
truncation, time lookup, flush policy, the O(1) lookup claim, concurrent reads."""

from __future__ import annotations

import hashlib
import os
import struct
import threading

import pytest

from annal.errors import (
    CorruptRecordError,
    InvalidConfigError,
    InvalidFetchSizeError,
    InvalidRecordError,
    LocalUsageError,
    MessageSizeTooLargeError,
    OffsetOutOfRangeError,
    UnknownTopicOrPartitionError,
    UnsupportedCompressionTypeError,
)
from annal.broker.storage._file_io import OsFileIO
from annal.broker.storage import LogConfig, PartitionLog
from annal.record import CODEC_LZ4, encode_batch, iter_records, parse_header

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("codec_impl")]


def batch(n: int = 1, ts: int = 1_000, value: bytes = b"v", compression: int = 0) -> bytes:
    return encode_batch([(ts + i, None, value + b"%d" % i, None) for i in range(n)], compression)


def folder_digest(path: str) -> dict[str, str]:
    """Content of every file of a log folder, the preallocated zeros cut off."""
    out = {}
    for name in sorted(os.listdir(path)):
        with open(os.path.join(path, name), "rb") as f:
            out[name] = hashlib.sha256(f.read().rstrip(b"\0")).hexdigest()
    return out


@pytest.fixture
def log(tmp_path):
    lg = PartitionLog.open(str(tmp_path / "t-0"), segment_bytes=4096, retention_ms=-1,
                           segment_index_bytes=64 << 10)
    yield lg
    lg.close()


def read_offsets(lg: PartitionLog, offset: int, max_bytes: int = 1 << 20) -> list[int]:
    with lg.read(offset, max_bytes) as r:
        return [rec.offset for rec in iter_records(r.tobytes())]


def test_append_assigns_dense_offsets_and_read_returns_them(log):
    assert log.append(batch(3)) == 0
    assert log.append(bytearray(batch(2))) == 3
    assert log.append(memoryview(batch(1))) == 5
    assert log.log_end_offset == 6
    assert read_offsets(log, 0) == [0, 1, 2, 3, 4, 5]
    # A read from the middle of a batch starts with that whole batch.
    assert read_offsets(log, 4) == [3, 4, 5]


def test_append_sets_base_offset_in_place_on_a_writable_buffer(log):
    log.append(batch(2))
    buf = bytearray(batch(1))
    assert log.append(buf) == 2
    assert parse_header(buf).base_offset == 2


def test_append_batches_validates_all_first(log):
    log.append(batch(1))
    before = folder_digest(log.path)
    good, bad = batch(2), bytearray(batch(2))
    bad[-1] ^= 0xFF
    with pytest.raises(CorruptRecordError):
        log.append_batches(good + bytes(bad))
    assert log.log_end_offset == 1 and folder_digest(log.path) == before
    assert log.append_batches(good + batch(3)) == 1
    assert log.log_end_offset == 6
    assert read_offsets(log, 0) == list(range(6))


def _bad_inputs() -> dict[str, tuple[bytes, type]]:
    b = batch(3)
    crc = bytearray(b)
    crc[-1] ^= 1
    magic = bytearray(b)
    magic[16] = 1
    count = bytearray(b)
    struct.pack_into(">i", count, 57, 4)
    delta = bytearray(b)
    struct.pack_into(">i", delta, 23, 7)
    length_long = bytearray(b)
    struct.pack_into(">i", length_long, 8, len(b))  # says 12 more bytes than there are
    codec = bytearray(b)
    struct.pack_into(">h", codec, 21, 2)  # snappy
    return {
        "crc": (bytes(crc), CorruptRecordError),
        "magic": (bytes(magic), InvalidRecordError),
        "count": (bytes(count), InvalidRecordError),
        "last_offset_delta": (bytes(delta), InvalidRecordError),
        "length_past_end": (bytes(length_long), CorruptRecordError),
        "truncated": (b[:-5], CorruptRecordError),
        "header_only_part": (b[:30], CorruptRecordError),
        "empty": (b"", CorruptRecordError),
        "codec": (bytes(codec), UnsupportedCompressionTypeError),
        "trailing_garbage": (b + b"\x00" * 5, CorruptRecordError),
        "two_batches_to_append": (b + b, CorruptRecordError),
        # A valid CRC over records that do not parse: the header alone looks right, so only
        # the record walk (check_records) can refuse them.
        "more_records_claimed_crc_fixed": (_with_crc(_set_count(batch(3, value=b"x" * 30), 4)), CorruptRecordError),
        "record_length_lies_crc_fixed": (_with_crc(_patch(b, 61, 0x7E)), CorruptRecordError),
        "offset_delta_repeated_crc_fixed": (_with_crc(_second_offset_delta(b, 0)), InvalidRecordError),
    }


def _with_crc(b: bytes) -> bytes:
    """The batch with its CRC-32C recomputed over attributes..end (a buggy but CRC-correct
    producer)."""
    from crc32c import crc32c

    out = bytearray(b)
    struct.pack_into(">I", out, 17, crc32c(bytes(out[21:])))
    return bytes(out)


def _set_count(b: bytes, n: int) -> bytes:
    out = bytearray(b)
    struct.pack_into(">i", out, 57, n)
    struct.pack_into(">i", out, 23, n - 1)
    return bytes(out)


def _patch(b: bytes, pos: int, value: int) -> bytes:
    out = bytearray(b)
    out[pos] = value
    return bytes(out)


def _second_offset_delta(b: bytes, delta: int) -> bytes:
    """Rewrite the second record's offsetDelta varint (one byte: zig-zag 2*delta)."""
    first_len = b[61] >> 1  # one-byte zig-zag length of the first record
    second = 61 + 1 + first_len
    # length varint (1 byte), attributes (1), timestampDelta (1 byte), then offsetDelta
    return _patch(b, second + 3, delta << 1)


@pytest.mark.parametrize("name", list(_bad_inputs()))
def test_bad_input_raises_and_leaves_log_byte_for_byte_unchanged(log, name):
    data, exc = _bad_inputs()[name]
    log.append(batch(2))
    before = folder_digest(log.path)
    leo = log.log_end_offset
    with pytest.raises(exc):
        log.append(data)
    assert folder_digest(log.path) == before
    assert log.log_end_offset == leo
    assert log.append(batch(1)) == leo
    assert read_offsets(log, 0) == [0, 1, 2]


def test_too_large_batch_is_refused(tmp_path):
    lg = PartitionLog.open(str(tmp_path / "t-0"), max_message_bytes=200)
    try:
        with pytest.raises(MessageSizeTooLargeError):
            lg.append(batch(1, value=b"x" * 300))
        assert lg.log_end_offset == 0 and lg.size_bytes == 0
        assert lg.append(batch(1)) == 0
    finally:
        lg.close()


def test_read_range_errors(log):
    log.append(batch(5))
    for bad in (-1, 6, 100):
        with pytest.raises(OffsetOutOfRangeError) as ei:
            log.read(bad, 100)
        assert ei.value.log_start_offset == 0 and ei.value.log_end_offset == 5
    for size in (0, -5):
        with pytest.raises(InvalidFetchSizeError):
            log.read(0, size)
    with log.read(5, 100) as r:  # at the head: empty, not an error
        assert r.size == 0 and r.chunks == [] and r.high_watermark == 5


def test_read_returns_whole_batches_within_max_bytes_but_at_least_one(log):
    sizes = []
    for i in range(5):
        b = batch(2, value=b"x" * (50 + i))
        sizes.append(len(b))
        log.append(b)
    with log.read(0, 1) as r:  # smaller than one batch: still the first whole batch
        assert r.size == sizes[0]
    with log.read(0, sizes[0] + sizes[1] + 10) as r:
        assert r.size == sizes[0] + sizes[1]
    with log.read(3, sizes[1] + sizes[2]) as r:
        assert r.size == sizes[1] + sizes[2]
        assert [rec.offset for rec in iter_records(r.tobytes())] == [2, 3, 4, 5]


def test_read_chunks_are_sendable_file_ranges(log):
    for _ in range(200):
        log.append(batch(3, value=b"y" * 20))
    assert len(log.segments) > 2
    with log.read(0, 1 << 20) as r:
        assert len(r.chunks) == len(log.segments)
        for c in r.chunks:
            assert os.pread(c.fd, c.size, c.position) == bytes(c.view)
        assert [rec.offset for rec in iter_records(r.tobytes())] == list(range(600))


def test_roll_on_size_and_explicit(log):
    while len(log.segments) < 3:
        log.append(batch(4, value=b"z" * 100))
    for seg in log.segments[:-1]:
        assert seg.size <= 4096
        assert os.path.getsize(seg.log_path) == seg.size  # trimmed on roll
        assert os.path.getsize(seg.index_path) == 4 * (seg.next_offset - seg.base_offset)
    leo = log.log_end_offset
    log.roll()
    assert log.active_segment.base_offset == leo
    log.roll()  # empty active segment: no new one
    assert log.active_segment.base_offset == leo and len(log.segments) == 4
    assert sorted(os.listdir(log.path))[-3].startswith(f"{leo:020d}")


def test_time_based_roll(tmp_path):
    lg = PartitionLog.open(str(tmp_path / "t-0"), segment_ms=1000)
    try:
        lg.append(batch(1))
        created = lg.active_segment.created_ms
        assert not lg.maybe_roll(created + 999)
        assert lg.maybe_roll(created + 1000)
        assert len(lg.segments) == 2
        assert not lg.maybe_roll(created + 10_000)  # new segment is empty
    finally:
        lg.close()


def test_retention_by_bytes_moves_log_start_and_keeps_active(tmp_path):
    lg = PartitionLog.open(str(tmp_path / "t-0"), segment_bytes=2048, retention_bytes=5000, retention_ms=-1)
    try:
        for _ in range(100):
            lg.append(batch(2, value=b"r" * 60))
        n = len(lg.segments)
        deleted = lg.delete_old_segments()
        assert deleted > 0 and len(lg.segments) == n - deleted
        assert lg.size_bytes >= 5000 - 2048 and sum(s.size for s in lg.segments[:-1]) < 5000
        assert lg.log_start_offset == lg.segments[0].base_offset > 0
        with pytest.raises(OffsetOutOfRangeError):
            lg.read(0, 100)
        assert read_offsets(lg, lg.log_start_offset)[0] == lg.log_start_offset
        assert not any(n.startswith("00000000000000000000") for n in os.listdir(lg.path))
    finally:
        lg.close()


def test_retention_by_time_never_deletes_active(tmp_path):
    lg = PartitionLog.open(str(tmp_path / "t-0"), segment_bytes=2048, retention_ms=1000)
    try:
        for i in range(60):
            lg.append(batch(2, ts=10_000 + i * 100, value=b"t" * 60))
        segs = lg.segments
        assert len(segs) > 2
        cut = segs[1].max_timestamp + 1001  # first two segments are older than 1 s
        assert lg.delete_old_segments(now_ms=cut) == 2
        assert lg.log_start_offset == segs[2].base_offset
        assert lg.delete_old_segments(now_ms=10**13) == len(segs) - 3  # all but the active one
        assert len(lg.segments) == 1
    finally:
        lg.close()


def test_truncate_to(log):
    for _ in range(40):
        log.append(batch(3, value=b"q" * 40))
    assert len(log.segments) > 1
    log.truncate_to(100)  # 100 is inside batch [99, 102): that whole batch goes
    assert log.log_end_offset == 99
    assert read_offsets(log, 90)[-1] == 98
    assert log.append(batch(1)) == 99
    last_base = log.segments[-1].base_offset
    n = len(log.segments)
    log.truncate_to(last_base)  # the whole last segment goes
    assert log.log_end_offset == last_base and len(log.segments) == n - 1
    assert log.append(batch(1)) == last_base
    log.truncate_to(1000)  # past the end: nothing
    assert read_offsets(log, 0) == list(range(log.log_end_offset))


def test_truncate_is_durable_across_reopen(tmp_path):
    path = str(tmp_path / "t-0")
    lg = PartitionLog.open(path)
    for _ in range(10):
        lg.append(batch(2))
    lg.flush()
    lg.truncate_to(6)
    lg.abandon()  # crash: the truncated batches must not come back
    lg = PartitionLog.open(path)
    try:
        assert lg.log_end_offset == 6
    finally:
        lg.close()


def test_offset_for_timestamp(log):
    log.append(batch(3, ts=100))   # offsets 0-2, max ts 102
    log.append(batch(2, ts=50))    # 3-4, max ts 51 (older: not in the time index)
    log.append(batch(2, ts=200))   # 5-6, max ts 201
    log.roll()
    log.append(batch(2, ts=300))   # 7-8, max ts 301
    assert log.offset_for_timestamp(0) == (0, 102)
    assert log.offset_for_timestamp(102) == (0, 102)
    assert log.offset_for_timestamp(103) == (5, 201)
    assert log.offset_for_timestamp(250) == (7, 301)
    assert log.offset_for_timestamp(302) is None


def test_flush_messages_policy_advances_recovery_point(tmp_path):
    lg = PartitionLog.open(str(tmp_path / "t-0"), flush_messages=5)
    try:
        lg.append(batch(3))
        assert lg.recovery_point == 0
        lg.append(batch(3))
        assert lg.recovery_point == 6
        lg.append(batch(1))
        assert lg.recovery_point == 6
        lg.flush()
        assert lg.recovery_point == 7
    finally:
        lg.close()


def test_flush_ms_policy(tmp_path):
    lg = PartitionLog.open(str(tmp_path / "t-0"), flush_ms=1000)
    try:
        lg.append(batch(2))
        last = lg._last_flush_ms
        assert not lg.maybe_flush(last + 500)
        assert lg.maybe_flush(last + 1000)
        assert lg.recovery_point == 2
    finally:
        lg.close()


def test_o1_lookup_touches_the_same_entries_for_10_and_1m_records(tmp_path):
    """The dense index reads one entry per lookup whatever the log size (no timing)."""
    small = PartitionLog.open(str(tmp_path / "s-0"))
    big = PartitionLog.open(str(tmp_path / "b-0"))
    try:
        small.append(batch(10))
        b = encode_batch([(1, None, b"", None)] * 10_000)
        for _ in range(100):
            big.append(b)
        assert big.log_end_offset == 1_000_000
        counts = []
        for lg, offset in ((small, 7), (big, 777_777), (big, 3), (big, 999_999)):
            idx = lg.active_segment._active.index  # type: ignore[union-attr]
            before = idx.entries_read
            with lg.read(offset, 1) as r:
                assert r.size > 0
            counts.append(idx.entries_read - before)
        assert counts == [1, 1, 1, 1]
    finally:
        small.close()
        big.close()


def test_config_validation(tmp_path):
    with pytest.raises(InvalidConfigError):
        PartitionLog.open(str(tmp_path / "t-0"), segment_bytes=10)
    with pytest.raises(InvalidConfigError):
        PartitionLog.open(str(tmp_path / "t-0"), no_such_setting=1)
    with pytest.raises(InvalidConfigError):
        LogConfig(retention_ms=0)


def test_closed_and_deleted_logs(tmp_path):
    lg = PartitionLog.open(str(tmp_path / "t-0"))
    lg.append(batch(1))
    lg.close()
    with pytest.raises(LocalUsageError):
        lg.append(batch(1))
    lg2 = PartitionLog.open(str(tmp_path / "t-0"))
    lg2.delete()
    assert not os.path.exists(tmp_path / "t-0")
    with pytest.raises(UnknownTopicOrPartitionError):
        lg2.read(0, 10)


def test_lz4_batches_are_stored_as_is(log):
    b = batch(50, compression=CODEC_LZ4, value=b"compress me " * 10)
    assert log.append(b) == 0
    assert log.append(batch(1)) == 50
    assert read_offsets(log, 0) == list(range(51))


def test_read_survives_concurrent_roll_retention_and_eviction(tmp_path):
    """Readers keep reading sendable, valid bytes while a writer appends, rolls and deletes
    old segments underneath them; held results stay readable after their segment is gone."""
    from annal.broker.storage import HandleCache

    cache = HandleCache(max_fds=8)
    lg = PartitionLog.open(str(tmp_path / "t-0"), segment_bytes=2048, retention_bytes=8192,
                           retention_ms=-1, handle_cache=cache)
    stop = threading.Event()
    errors: list[BaseException] = []
    held = []

    def reader() -> None:
        try:
            # A short wait per read: two readers spinning on the GIL would starve the writer
            # (each of its syscalls gives the GIL away for a whole switch interval).
            while not stop.wait(0.0005):
                lso, leo = lg.log_start_offset, lg.log_end_offset
                if leo == lso:
                    continue
                try:
                    r = lg.read(lso + (leo - lso) // 2, 3000)
                except OffsetOutOfRangeError:
                    continue  # retention moved past it: fine
                recs = list(iter_records(r.tobytes()))
                for c in r.chunks:
                    assert os.pread(c.fd, c.size, c.position) == bytes(c.view)
                assert recs and all(b.offset + 1 == a.offset for b, a in zip(recs, recs[1:]))
                if len(held) < 20:
                    held.append((r, r.tobytes()))
                else:
                    r.release()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(600):
            lg.append(batch(2, value=b"c" * 50))
            if i % 25 == 0:
                lg.delete_old_segments()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert lg.log_start_offset > 0
    for r, data in held:
        assert r.tobytes() == data  # the files may be unlinked by now
        r.release()
    lg.close()
    cache.close()


def test_without_preallocation(tmp_path):
    path = str(tmp_path / "t-0")
    lg = PartitionLog.open(path, preallocate=False, segment_bytes=2048)
    for _ in range(30):
        lg.append(batch(2, value=b"n" * 30))
    seg = lg.active_segment
    # Running: the active .log grows in steps (a hole past the data), never past segment_bytes.
    assert seg.size <= os.path.getsize(seg.log_path) <= 2048
    assert read_offsets(lg, 0) == list(range(60))
    lg.close()
    # Closed: every .log is its data (roll and close cut the hole).
    for seg in lg.segments:
        assert os.path.getsize(seg.log_path) == seg.size
    lg = PartitionLog.open(path, preallocate=False, segment_bytes=2048)
    try:
        assert read_offsets(lg, 0) == list(range(60))
        assert lg.append(batch(1)) == 60
    finally:
        lg.close()


def test_flush_racing_truncate_does_not_overstate_recovery_point(log):
    for _ in range(10):
        log.append(batch(2))
    log.flush()
    log.truncate_to(6)
    assert log.recovery_point == 6
    log.append(batch(3))
    assert log.recovery_point == 6
    log.flush()
    assert log.recovery_point == 9


def test_reads_and_appends_do_not_wait_for_a_slow_fdatasync(log, monkeypatch):
    """flush() holds no lock while it fdatasyncs: a read and an append complete meanwhile."""
    log.append(batch(2))
    entered, release = threading.Event(), threading.Event()
    real = os.fdatasync

    def slow_fdatasync(fd: int) -> None:
        entered.set()
        assert release.wait(30)
        real(fd)

    monkeypatch.setattr(OsFileIO, "fdatasync", staticmethod(slow_fdatasync))  # the storage's file layer
    t = threading.Thread(target=log.flush)
    t.start()
    try:
        assert entered.wait(30)
        assert read_offsets(log, 0) == [0, 1]   # would deadlock if reads waited for the flush
        assert log.append(batch(1)) == 2         # so would appends
        assert log.recovery_point == 0
    finally:
        release.set()
        t.join(30)
    assert log.recovery_point == 2  # the flush covers what was there when it started
    monkeypatch.undo()
    log.flush()
    assert log.recovery_point == 3


def test_roll_that_cannot_create_a_segment_fails_cleanly(log, monkeypatch):
    import errno

    from annal.errors import StorageError

    while len(log.segments) < 2:
        log.append(batch(3, value=b"f" * 100))
    before = folder_digest(log.path)
    leo = log.log_end_offset
    real = os.ftruncate

    def full(fd: int, length: int) -> None:
        if length > 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, length)

    monkeypatch.setattr(OsFileIO, "ftruncate", staticmethod(full))  # the storage's file layer
    with pytest.raises(StorageError):
        log.roll()
    monkeypatch.undo()
    assert folder_digest(log.path) == before and log.log_end_offset == leo
    assert log.append(batch(1)) == leo
    log.roll()
    assert log.active_segment.base_offset == leo + 1
