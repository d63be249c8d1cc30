"""Recovery of a partition folder: torn and corrupt tails, leftovers, damaged indexes, and a
hypothesis state machine that appends, reads, rolls, applies retention, reopens and crashes
(cutting or flipping bytes of the unflushed tail) against an in-memory model."""

from __future__ import annotations

import logging
import os

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from annal.broker.storage import PartitionLog
from annal.record import encode_batch, iter_records

pytestmark = pytest.mark.timeout(120)

SMALL = dict(segment_bytes=2048, segment_index_bytes=4096, retention_ms=-1)


def batch(n: int = 1, tag: bytes = b"v", size: int = 10) -> bytes:
    return encode_batch([(1000 + i, None, tag + b"-%d-" % i + b"x" * size, None) for i in range(n)])


def fill(path: str, batches: int, flush: bool = True, **cfg) -> list[int]:
    lg = PartitionLog.open(path, **{**SMALL, **cfg})
    offs = [lg.append(batch(2, b"%d" % i)) for i in range(batches)]
    if flush:
        lg.flush()
    lg.close()
    return offs


def all_offsets(lg: PartitionLog) -> list[int]:
    if lg.log_end_offset == lg.log_start_offset:
        return []
    with lg.read(lg.log_start_offset, 1 << 30) as r:
        return [rec.offset for rec in iter_records(r.tobytes())]


def last_log(path: str) -> str:
    return os.path.join(path, sorted(n for n in os.listdir(path) if n.endswith(".log"))[-1])


def test_torn_tail_is_cut_at_last_whole_batch(tmp_path, caplog):
    path = str(tmp_path / "t-0")
    fill(path, 10)
    f = last_log(path)
    size = os.path.getsize(f)
    os.truncate(f, size - 7)
    with caplog.at_level(logging.WARNING):
        lg = PartitionLog.open(path)
    try:
        assert lg.report.bytes_truncated > 0 and lg.report.truncated_at_offset == 18
        assert lg.log_end_offset == 18
        assert all_offsets(lg) == list(range(18))
        assert lg.append(batch(1)) == 18
        assert "truncated" in caplog.text
    finally:
        lg.close()


def test_flipped_byte_cuts_from_that_batch_and_deletes_later_segments(tmp_path):
    path = str(tmp_path / "t-0")
    fill(path, 60)
    logs = sorted(n for n in os.listdir(path) if n.endswith(".log"))
    assert len(logs) >= 3
    victim = os.path.join(path, logs[1])
    with open(victim, "r+b") as f:
        f.seek(300)
        b = f.read(1)
        f.seek(300)
        f.write(bytes([b[0] ^ 0x40]))
    lg = PartitionLog.open(path)  # no recovery point: scan everything
    try:
        first = int(logs[1][:20])
        assert first < lg.log_end_offset < first + 10
        assert len(lg.segments) == 2
        assert lg.report.segments_deleted == len(logs) - 2
        assert all_offsets(lg) == list(range(lg.log_end_offset))
        assert sorted(n for n in os.listdir(path) if n.endswith(".log")) == logs[:2]
    finally:
        lg.close()


def test_clean_segments_below_recovery_point_are_not_scanned(tmp_path):
    path = str(tmp_path / "t-0")
    fill(path, 60)
    lg = PartitionLog.open(path)
    rp = lg.recovery_point
    n = len(lg.segments)
    lg.close()
    lg = PartitionLog.open(path, recovery_point=rp)
    try:
        assert lg.report.segments_scanned == 1  # only the one holding the recovery point
        assert n > 1 and lg.log_end_offset == 120
    finally:
        lg.close()
    lg = PartitionLog.open(path, recovery_point=rp, had_clean_shutdown=True)
    try:
        assert lg.report.segments_scanned == 0 and lg.log_end_offset == 120
        assert all_offsets(lg) == list(range(120))
    finally:
        lg.close()


def _flip(path: str, pos: int) -> None:
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x40]))


@pytest.mark.parametrize("clean", [True, False])
def test_flipped_byte_in_flushed_segment_keeps_every_later_segment(tmp_path, caplog, clean):
    """A flipped byte in the last batch's header of an old, flushed segment (the index check
    finds it): the segment and every later one stay; only its damaged range is unreadable."""
    from annal.errors import CorruptRecordError

    path = str(tmp_path / "t-0")
    fill(path, 60)
    logs = sorted(n for n in os.listdir(path) if n.endswith(".log"))
    assert len(logs) >= 4
    victim = os.path.join(path, logs[1])
    first, nxt = int(logs[1][:20]), int(logs[2][:20])
    lg = PartitionLog.open(path, had_clean_shutdown=True)
    with lg.read(nxt - 1, 1) as r:
        last_batch_pos = r.chunks[0].position
    lg.close()
    _flip(victim, last_batch_pos + 3)  # inside baseOffset: the index check fails
    with caplog.at_level(logging.ERROR):
        lg = PartitionLog.open(path, recovery_point=120, had_clean_shutdown=clean)
    try:
        assert lg.report.segments_deleted == 0 and lg.report.bytes_truncated == 0
        assert sorted(n for n in os.listdir(path) if n.endswith(".log")) == logs
        assert lg.log_end_offset == 120
        bad = lg.damaged_ranges
        assert len(bad) == 1 and first <= bad[0][0] < nxt and bad[0][1] == nxt
        assert lg.has_storage_error and lg.report.damaged == bad
        assert "damaged" in caplog.text
        # Before the damage: readable up to it, and a read stops there.
        with lg.read(0, 1 << 30) as r:
            offs = [rec.offset for rec in iter_records(r.tobytes())]
        assert offs == list(range(bad[0][0]))
        with pytest.raises(CorruptRecordError) as ei:
            lg.read(bad[0][0], 1 << 20)
        assert ei.value.details["first_offset"] == bad[0][0] and ei.value.details["last_offset"] == nxt - 1
        # After it: everything, and the log is writable.
        with lg.read(nxt, 1 << 30) as r:
            assert [rec.offset for rec in iter_records(r.tobytes())] == list(range(nxt, 120))
        assert lg.append(batch(2)) == 120
    finally:
        lg.close()
    assert os.path.getsize(victim) > 0  # the damaged bytes are kept for inspection


def test_crc_failure_on_read_of_flushed_segment_is_reported_not_served(tmp_path, caplog):
    """A flipped byte inside a record of an old segment passes the O(1) index check; the CRC
    check on read finds it, serves the batches before it, marks the range damaged and answers
    ``CorruptRecordError`` for it, while later segments are served."""
    from annal.errors import CorruptRecordError

    path = str(tmp_path / "t-0")
    fill(path, 60)
    logs = sorted(n for n in os.listdir(path) if n.endswith(".log"))
    first, nxt = int(logs[1][:20]), int(logs[2][:20])
    lg = PartitionLog.open(path, had_clean_shutdown=True)
    with lg.read(first + 4, 1) as r:
        pos = r.chunks[0].position
    lg.close()
    _flip(os.path.join(path, logs[1]), pos + 70)  # a record byte, covered by the CRC only
    lg = PartitionLog.open(path, recovery_point=120, had_clean_shutdown=True)
    try:
        assert lg.damaged_ranges == [] and lg.report.segments_scanned == 0
        with caplog.at_level(logging.ERROR):
            with lg.read(first, 1 << 20) as r:
                assert [rec.offset for rec in iter_records(r.tobytes())] == list(range(first, first + 4))
        assert lg.damaged_ranges == [(first + 4, nxt)] and lg.has_storage_error
        assert "CRC check on read" in caplog.text
        with pytest.raises(CorruptRecordError):
            lg.read(first + 4, 1 << 20)
        with lg.read(nxt, 1 << 30) as r:
            assert [rec.offset for rec in iter_records(r.tobytes())] == list(range(nxt, 120))
    finally:
        lg.close()


def test_an_event_loop_read_never_checks_a_crc_itself(tmp_path):
    """``read(verify=False)`` (how the listeners' event loops read) raises ``NeedsVerification``
    for bytes of an old segment not CRC-checked since open, holding nothing; once a
    ``verify=True`` read (on a worker thread) has checked a range, the loop reads it itself.
    Checked ranges are remembered wherever a read starts, not only from a segment's start."""
    from annal.broker.storage import NeedsVerification

    path = str(tmp_path / "t-0")
    fill(path, 60)
    logs = sorted(n for n in os.listdir(path) if n.endswith(".log"))
    first, nxt = int(logs[1][:20]), int(logs[2][:20])
    lg = PartitionLog.open(path, recovery_point=120, had_clean_shutdown=True)
    try:
        mid = first + 4
        with pytest.raises(NeedsVerification):
            lg.read(mid, 1 << 20, verify=False)
        with lg.read(mid, 1 << 20) as r:  # checks [mid, next segment)
            expected = r.tobytes()
        with lg.read(mid, 1 << 20, verify=False) as r:
            assert r.tobytes() == expected
        with pytest.raises(NeedsVerification):  # the bytes before mid were not checked
            lg.read(first, 1 << 20, verify=False)
        with lg.read(first, 1 << 20):
            pass
        seg = next(s for s in lg.segments if s.base_offset == first)
        assert seg.verified == ((0, seg.size),)  # the two ranges merged
        with lg.read(first, 1 << 20, verify=False) as r:  # the reads above went on to the log end
            assert [rec.offset for rec in iter_records(r.tobytes())] == list(range(first, 120))
        # The active segment was validated on append: never a check on read.
        lg.append(batch(2))
        with lg.read(lg.log_end_offset - 2, 1 << 20, verify=False) as r:
            assert [rec.offset for rec in iter_records(r.tobytes())] == [lg.log_end_offset - 2, lg.log_end_offset - 1]
    finally:
        lg.close()


def test_verified_ranges_merge_and_stay_bounded():
    from annal.broker.storage import LogSegment

    seg = LogSegment.__new__(LogSegment)
    seg.verified = ()
    seg.mark_verified(100, 200)
    seg.mark_verified(300, 400)
    assert seg.unverified_from(100, 200) == 200 and seg.unverified_from(100, 250) == 200
    assert seg.unverified_from(0, 50) == 0 and seg.unverified_from(150, 180) == 180
    seg.mark_verified(200, 300)  # touching ranges merge
    assert seg.verified == ((100, 400),)
    for i in range(100):  # scattered reads: at most MAX_VERIFIED_RANGES kept, the largest
        seg.mark_verified(1000 + 20 * i, 1010 + 20 * i)
    assert len(seg.verified) == LogSegment.MAX_VERIFIED_RANGES and (100, 400) in seg.verified
    assert list(seg.verified) == sorted(seg.verified)


@pytest.mark.parametrize("damage", ["missing", "short", "garbage"])
def test_damaged_index_below_recovery_point_is_rebuilt(tmp_path, damage):
    path = str(tmp_path / "t-0")
    fill(path, 60)
    idx = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".index"))[0]
    if damage == "missing":
        os.unlink(idx)
    elif damage == "short":
        os.truncate(idx, os.path.getsize(idx) - 4)
    else:
        with open(idx, "r+b") as f:
            f.seek(os.path.getsize(idx) - 4)
            f.write(b"\x00\x00\x00\x00")
    lg = PartitionLog.open(path, recovery_point=120, had_clean_shutdown=True)
    try:
        assert lg.report.indexes_rebuilt == 1
        assert all_offsets(lg) == list(range(120))
        for off in (0, 1, 17, 33):
            with lg.read(off, 1) as r:
                assert next(iter_records(r.tobytes())).offset == off - off % 2
    finally:
        lg.close()


def test_zero_hole_after_a_flushed_segment_is_cut_not_reported_damaged(tmp_path, caplog):
    """An active .log grows in steps, a hole past its data that roll cuts. If the broker stops
    after a flush covered the segment but before that cut reached the disk, the flushed segment
    comes back with zeros after its last batch: recovery cuts them (every offset is there) and
    reports no damage; a tail that is not all zeros still counts as damage."""
    path = str(tmp_path / "t-0")
    fill(path, 60)
    first = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".log"))[0]
    size = os.path.getsize(first)
    os.truncate(first, size + 4096)  # the hole the cut at roll had removed
    with caplog.at_level(logging.WARNING, logger="annal.broker.storage._log"):
        lg = PartitionLog.open(path, recovery_point=120, had_clean_shutdown=False)
    try:
        assert lg.report.damaged == []
        assert all_offsets(lg) == list(range(120))
        assert lg.append(batch(1)) == 120
    finally:
        lg.close()
    assert os.path.getsize(first) == size
    # Not zeros: a flushed segment with bytes after its last batch that are not a batch.
    with open(first, "r+b") as f:
        f.seek(size)
        f.write(b"\x01" * 64)
    lg = PartitionLog.open(path, recovery_point=121, had_clean_shutdown=False)
    try:
        assert len(lg.report.damaged) == 1
    finally:
        lg.close()


def test_leftover_files_are_removed(tmp_path):
    path = str(tmp_path / "t-0")
    fill(path, 3)
    for name in ("00000000000000000099.log.deleted", "x.tmp", "00000000000000000005.index",
                 "00000000000000000000.index.swap"):
        open(os.path.join(path, name), "wb").close()
    lg = PartitionLog.open(path)
    try:
        assert sorted(lg.report.files_removed) == sorted([
            "00000000000000000099.log.deleted", "x.tmp", "00000000000000000005.index",
            "00000000000000000000.index.swap"])
        assert lg.log_end_offset == 6
    finally:
        lg.close()


def test_segment_out_of_sequence_is_dropped(tmp_path):
    path = str(tmp_path / "t-0")
    fill(path, 60)
    logs = sorted(n for n in os.listdir(path) if n.endswith(".log"))
    # Rename the last segment so it no longer follows the one before it.
    base = int(logs[-1][:20])
    for suffix in (".log", ".index", ".timeindex"):
        os.rename(os.path.join(path, f"{base:020d}{suffix}"), os.path.join(path, f"{base + 5:020d}{suffix}"))
    lg = PartitionLog.open(path)
    try:
        assert lg.log_end_offset == base
        assert lg.report.segments_deleted == 1
    finally:
        lg.close()


def test_zero_length_and_empty_folder(tmp_path):
    path = str(tmp_path / "t-0")
    os.makedirs(path)
    open(os.path.join(path, "00000000000000000000.log"), "wb").close()
    lg = PartitionLog.open(path)
    try:
        assert lg.log_end_offset == 0
        assert lg.append(batch(1)) == 0
    finally:
        lg.close()


# --------------------------------------------------------------------------- state machine


class LogMachine(RuleBasedStateMachine):
    """The log against a list of batches. After a crash the log must be a prefix of the model
    holding at least every flushed batch."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="annal-sm-")
        self.path = os.path.join(self.dir, "t-0")
        self.cfg = dict(segment_bytes=1024, segment_index_bytes=2048, retention_ms=-1, retention_bytes=3000)
        self.log = PartitionLog.open(self.path, **self.cfg)
        # model: list of (base_offset, [values], size)
        self.model: list[tuple[int, list[bytes], int]] = []
        self.lso = 0
        self.n = 0

    def teardown(self) -> None:
        import shutil

        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def leo(self) -> int:
        if not self.model:
            return self.lso
        base, vals, _ = self.model[-1]
        return base + len(vals)

    @rule(count=st.integers(1, 5), size=st.integers(0, 120))
    def append(self, count: int, size: int) -> None:
        self.n += 1
        vals = [b"%d.%d:" % (self.n, i) + b"p" * size for i in range(count)]
        b = encode_batch([(self.n, None, v, None) for v in vals])
        base = self.log.append(b)
        assert base == self.leo
        self.model.append((base, vals, len(b)))

    @rule(data=st.data(), max_bytes=st.integers(1, 3000))
    def read(self, data, max_bytes: int) -> None:
        if self.leo == self.lso:
            with self.log.read(self.lso, max_bytes) as r:
                assert r.size == 0
            return
        offset = data.draw(st.integers(self.lso, self.leo))
        with self.log.read(offset, max_bytes) as r:
            got = [(rec.offset, rec.value) for rec in iter_records(r.tobytes())]
            size = r.size
        if offset == self.leo:
            assert got == []
            return
        k = next(i for i, (b, v, _) in enumerate(self.model) if b <= offset < b + len(v))
        want, total = [], 0
        for j in range(k, len(self.model)):
            b, v, s = self.model[j]
            if j > k and total + s > max_bytes:
                break
            total += s
            want += [(b + i, x) for i, x in enumerate(v)]
        assert got == want and size == total

    @rule()
    def roll(self) -> None:
        self.log.roll()

    @rule()
    def flush(self) -> None:
        self.log.flush()
        assert self.log.recovery_point == self.leo

    @rule()
    def retention(self) -> None:
        self.log.delete_old_segments()
        new = self.log.log_start_offset
        assert new >= self.lso
        self.model = [m for m in self.model if m[0] >= new]
        assert not self.model or self.model[0][0] == new
        self.lso = new

    @rule(data=st.data())
    def truncate(self, data) -> None:
        if self.leo == self.lso:
            return
        offset = data.draw(st.integers(self.lso + 1, self.leo))
        self.log.truncate_to(offset)
        # Batches holding an offset >= offset go whole.
        self.model = [m for m in self.model if m[0] + len(m[1]) <= offset]
        assert self.log.recovery_point <= self.leo

    @rule()
    def reopen_clean(self) -> None:
        lso = self.log.log_start_offset
        self.log.close()
        rp = self.log.recovery_point  # close() flushed everything
        self.log = PartitionLog.open(self.path, recovery_point=rp,
                                     log_start_offset=lso, had_clean_shutdown=True, **self.cfg)
        assert self.log.report.segments_scanned == 0 and not self.log.report.lost_data
        assert rp == self.leo

    @rule(data=st.data(), flip=st.booleans())
    def crash(self, data, flip: bool) -> None:
        rp, lso = self.log.recovery_point, self.log.log_start_offset
        seg = self.log.active_segment
        seg_path, seg_base, seg_size = seg.log_path, seg.base_offset, seg.size
        self.log.abandon()
        # Unflushed bytes of the last segment: from the batch holding the recovery point on.
        flushed_pos = 0
        pos = 0
        for b, v, s in self.model:
            if b < seg_base:
                continue
            if b < rp:
                flushed_pos = pos + s
            pos += s
        assert pos == seg_size
        if seg_size > flushed_pos:
            at = data.draw(st.integers(flushed_pos, seg_size - 1))
            if flip:
                with open(seg_path, "r+b") as f:
                    f.seek(at)
                    byte = f.read(1)[0]
                    f.seek(at)
                    f.write(bytes([byte ^ data.draw(st.integers(1, 255))]))
            else:
                os.truncate(seg_path, at)
        self.log = PartitionLog.open(self.path, recovery_point=rp, log_start_offset=lso, **self.cfg)
        leo = self.log.log_end_offset
        assert rp <= leo <= self.leo
        self.model = [m for m in self.model if m[0] + len(m[1]) <= leo]
        assert self.leo == leo or (not self.model and leo == self.lso)

    @invariant()
    def offsets_agree(self) -> None:
        assert self.log.log_end_offset == self.leo
        assert self.log.log_start_offset == self.lso


TestLogMachine = LogMachine.TestCase
TestLogMachine.settings = settings(
    max_examples=100, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
