"""LogSegment: append and read ranges, preallocation and trimming, recovery of a torn tail,
clean loading with its O(1) sanity check, truncation, deletion under a held handle."""

from __future__ import annotations

import os

import pytest

from annal.broker.storage._handles import HandleCache
from annal.broker.storage._index import IndexCorruptError
from annal.broker.storage._segment import LogSegment, SegmentConfig
from annal.record import encode_batch, parse_header, set_base_offset

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("codec_impl")]

CFG = SegmentConfig(segment_bytes=8192, max_index_bytes=1024, preallocate=True)


def batches(seg: LogSegment, sizes: list[int]) -> list[bytes]:
    out = []
    for n in sizes:
        b = bytearray(encode_batch([(7 + i, None, b"val%d" % i, None) for i in range(n)]))
        set_base_offset(b, seg.next_offset)
        seg.append(memoryview(b), [parse_header(b)])
        out.append(bytes(b))
    return out


@pytest.fixture
def seg(tmp_path):
    cache = HandleCache(16)
    s = LogSegment(str(tmp_path), 100, CFG, cache)
    s.make_active()
    yield s
    if not s.deleted:
        s.close()
    cache.close()


def test_append_preallocates_and_read_range_finds_whole_batches(seg):
    data = batches(seg, [3, 1, 4])
    assert os.path.getsize(seg.log_path) == 8192  # preallocated
    assert seg.size == sum(map(len, data)) and seg.next_offset == 108
    h = seg.acquire()
    try:
        s0, s1 = len(data[0]), len(data[1])
        assert seg.read_range(h, 100, 10**6, 108, seg.size) == (0, seg.size)
        assert seg.read_range(h, 101, 1, 108, seg.size) == (0, s0)  # one whole batch at least
        assert seg.read_range(h, 103, 1, 108, seg.size) == (s0, s0 + s1)
        assert seg.read_range(h, 100, s0 + s1, 108, seg.size) == (0, s0 + s1)
        assert seg.read_range(h, 100, s0 + s1 - 1, 108, seg.size) == (0, s0)
        assert bytes(h.log_mm[0:seg.size]) == b"".join(data)
    finally:
        h.release()


def test_roll_trims_and_clean_load_checks_the_last_entry(seg, tmp_path):
    batches(seg, [2, 2, 5])
    size, nxt = seg.size, seg.next_offset
    seg.make_inactive()
    assert os.path.getsize(seg.log_path) == size
    assert os.path.getsize(seg.index_path) == 4 * 9
    assert os.path.getsize(seg.time_index_path) == 12 * 2  # max timestamps 8, 8, 11: 8 once
    again = LogSegment(str(tmp_path), 100, CFG, seg.cache)
    again.load_clean()
    assert (again.size, again.next_offset, again.max_timestamp) == (size, nxt, 11)
    # An index one entry short no longer matches the last batch.
    seg.cache.invalidate(again)
    os.truncate(seg.index_path, 4 * 8)
    broken = LogSegment(str(tmp_path), 100, CFG, seg.cache)
    with pytest.raises(IndexCorruptError):
        broken.load_clean()
    seg.cache.invalidate(broken)
    os.unlink(seg.index_path)
    with pytest.raises(IndexCorruptError):
        LogSegment(str(tmp_path), 100, CFG, seg.cache).load_clean()


def test_recover_cuts_torn_tail_and_rebuilds_indexes(seg, tmp_path):
    data = batches(seg, [2, 3, 1])
    good = len(data[0]) + len(data[1])
    seg.abandon()
    os.truncate(seg.log_path, good + 20)  # the third batch is torn
    s = LogSegment(str(tmp_path), 100, CFG, seg.cache)
    result = s.recover(None)
    assert (result.batches, result.valid_bytes) == (2, good)
    assert 16 <= result.bytes_truncated <= 20  # up to the torn batch's last non-zero byte
    assert os.path.getsize(s.log_path) == CFG.segment_bytes  # cut, then preallocated again
    with open(s.log_path, "rb") as f:
        f.seek(good)
        assert f.read(20) == bytes(20)
    assert s.next_offset == 105 and s.size == good
    h = s.acquire()
    try:
        assert h.index.entries == 5 and h.index.lookup(4) == len(data[0])
    finally:
        h.release()
    # The preallocated zeros after a clean end are not an error.
    result = s.recover(None)
    assert result.error is None and result.bytes_truncated == 0 and result.batches == 2
    s.close()
    seg.deleted = True


def test_truncate_to_zeroes_the_tail(seg):
    data = batches(seg, [2, 2, 2])
    removed = seg.truncate_to(103)  # inside the second batch: it goes whole
    assert removed == len(data[1]) + len(data[2])
    assert seg.next_offset == 102 and seg.size == len(data[0])
    with open(seg.log_path, "rb") as f:
        f.seek(seg.size)
        assert f.read(removed) == bytes(removed)
    assert seg.truncate_to(500) == 0
    assert seg.truncate_to(100) == len(data[0]) and seg.next_offset == 100


def test_deleted_segment_stays_readable_through_a_held_handle(seg):
    data = batches(seg, [3])
    h = seg.acquire()
    seg.delete()
    assert not os.path.exists(seg.log_path)
    assert os.pread(h.log_fd, len(data[0]), 0) == data[0]
    assert bytes(h.log_mm[: len(data[0])]) == data[0]
    h.release()
    assert h.closed
    with pytest.raises(FileNotFoundError):
        seg.acquire()
