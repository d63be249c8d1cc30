"""The log's idempotent-producer state (broker/storage/_producer_state.py) on real logs in
a temporary folder: duplicates, gaps, epochs, batches that reached the log without a check,
the snapshot written at close and at a roll, and what a truncation or a bad snapshot does."""

from __future__ import annotations

import json
import os
import time

import pytest

from annal.broker.storage import PartitionLog
from annal.broker.storage._producer_state import SNAPSHOT_FILE, ProducerStateManager
from annal.errors import InvalidProducerEpochError, InvalidRequestError, OutOfOrderSequenceNumberError
from annal.record import BatchBuilder


def _batch(n: int, pid: int = -1, epoch: int = -1, seq: int = -1, tag: bytes = b"v") -> bytes:
    b = BatchBuilder()
    now = int(time.time() * 1000)
    for i in range(n):
        b.append(now, None, tag + b"-%d" % i, None)
    return b.build(producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def _append(lg: PartitionLog, buf: bytes, epoch: int | None = None) -> int:
    """What Broker.append_coalesced does for one part: the check, then the append."""
    st = lg.producer_state
    if st.producer_id(buf) < 0:
        return lg.append_batches(buf, epoch)
    with st.lock:
        header, dup = st.check(lg, buf, epoch)
        if dup is not None:
            return dup[0]
        base = lg.append_batches(buf, epoch)
        st.appended(lg, header, base)
        return base


def test_duplicates_answer_the_original_offset_and_gaps_and_old_epochs_are_refused(tmp_path) -> None:
    lg = PartitionLog.open(str(tmp_path / "t-0"))
    try:
        assert _append(lg, _batch(3, 7, 0, 0)) == 0
        assert _append(lg, _batch(2, 7, 0, 3)) == 3
        assert _append(lg, _batch(3, 7, 0, 0)) == 0  # a retry of the first batch
        assert _append(lg, _batch(2, 7, 0, 3)) == 3
        assert lg.log_end_offset == 5
        with pytest.raises(OutOfOrderSequenceNumberError, match="expects 5"):
            _append(lg, _batch(1, 7, 0, 6))
        with pytest.raises(OutOfOrderSequenceNumberError, match="must start at sequence 0"):
            _append(lg, _batch(1, 8, 0, 4))  # a producer new to the partition
        assert _append(lg, _batch(1, 7, 1, 0)) == 5  # a new epoch starts again at 0
        with pytest.raises(InvalidProducerEpochError):
            _append(lg, _batch(1, 7, 0, 5))
        with pytest.raises(InvalidRequestError, match="exactly one batch"):
            _append(lg, _batch(1, 9, 0, 0) + _batch(1, 9, 0, 1))
        assert lg.log_end_offset == 6
    finally:
        lg.close()


def test_batches_that_reached_the_log_unchecked_are_read_back_before_the_next_check(tmp_path) -> None:
    lg = PartitionLog.open(str(tmp_path / "t-0"))
    try:
        assert _append(lg, _batch(2, 7, 0, 0)) == 0
        # Plain batches, and a batch of producer 7 appended as a follower would (no check).
        lg.append_batches(_batch(4))
        lg.append_batches(_batch(1, 7, 0, 2))
        # The retry of that last batch is recognised; the next sequence is 3.
        assert _append(lg, _batch(1, 7, 0, 2)) == 6
        assert _append(lg, _batch(1, 7, 0, 3)) == 7
    finally:
        lg.close()


def test_the_snapshot_written_at_close_is_used_at_open_and_the_log_after_it_is_read(tmp_path, caplog) -> None:
    path = str(tmp_path / "t-0")
    lg = PartitionLog.open(path)
    for i in range(20):
        _append(lg, _batch(1, 7, 0, i))
    lg.close()
    snap = json.loads(open(os.path.join(path, SNAPSHOT_FILE)).read())
    assert snap["offset"] == 20 and snap["producers"][0][:2] == [7, 0]

    lg = PartitionLog.open(path)
    try:
        lg.append_batches(_batch(1, 7, 0, 20))  # after the snapshot, unchecked (a crash's tail)
        caplog.set_level("INFO")
        assert _append(lg, _batch(1, 7, 0, 20)) == 20  # a duplicate found past the snapshot
        assert "loaded from producer-snapshot at offset 20" in caplog.text
        assert "1 batch header(s) read from offset 20" in caplog.text
        assert _append(lg, _batch(1, 7, 0, 21)) == 21
    finally:
        lg.close()


def test_a_snapshot_past_the_log_end_or_unreadable_is_not_used(tmp_path) -> None:
    path = str(tmp_path / "t-0")
    lg = PartitionLog.open(path)
    for i in range(3):
        _append(lg, _batch(1, 7, 0, i))
    lg.close()
    snap_path = os.path.join(path, SNAPSHOT_FILE)
    doc = json.loads(open(snap_path).read())
    # A snapshot that claims more than the log holds (the log lost its tail): ignored.
    doc["offset"] = 99
    doc["producers"] = [[7, 0, [[50, 60, 40]]]]
    open(snap_path, "w").write(json.dumps(doc))
    lg = PartitionLog.open(path)
    try:
        assert _append(lg, _batch(1, 7, 0, 3)) == 3  # rebuilt from the log: 3 is next
    finally:
        lg.close()
    open(snap_path, "w").write("{not json")
    lg = PartitionLog.open(path)
    try:
        assert _append(lg, _batch(1, 7, 0, 3)) == 3  # still a duplicate, found in the log
        assert _append(lg, _batch(1, 7, 0, 4)) == 4
    finally:
        lg.close()


def test_a_truncation_below_the_snapshot_removes_it_and_the_state_follows_the_log(tmp_path) -> None:
    path = str(tmp_path / "t-0")
    lg = PartitionLog.open(path)
    for i in range(6):
        _append(lg, _batch(1, 7, 0, i))
    lg.producer_state.write_snapshot(lg)
    assert os.path.exists(os.path.join(path, SNAPSHOT_FILE))
    lg.truncate_to(4)
    assert not os.path.exists(os.path.join(path, SNAPSHOT_FILE))
    try:
        with pytest.raises(OutOfOrderSequenceNumberError, match="expects 4"):
            _append(lg, _batch(1, 7, 0, 5))
        assert _append(lg, _batch(1, 7, 0, 4)) == 4
    finally:
        lg.close()


def test_a_new_leader_epoch_rebuilds_the_state_from_the_log(tmp_path) -> None:
    lg = PartitionLog.open(str(tmp_path / "t-0"))
    try:
        assert _append(lg, _batch(1, 7, 0, 0), epoch=1) == 0
        # As a follower, under epoch 2, the log got another leader's batch of producer 7.
        lg.append_batches(_batch(1, 7, 0, 1), 2)
        assert _append(lg, _batch(1, 7, 0, 1), epoch=3) == 1  # seen as a duplicate
        assert _append(lg, _batch(1, 7, 0, 2), epoch=3) == 2
    finally:
        lg.close()


def test_a_roll_writes_a_snapshot(tmp_path) -> None:
    path = str(tmp_path / "t-0")
    lg = PartitionLog.open(path, segment_bytes=4096)
    try:
        seq = 0
        while len(lg.segments) < 3:
            _append(lg, _batch(10, 7, 0, seq, tag=b"x" * 40))
            seq += 10
        snap = json.loads(open(os.path.join(path, SNAPSHOT_FILE)).read())
        assert 0 < snap["offset"] <= lg.log_end_offset
    finally:
        lg.close()


def test_producer_id_of_a_short_or_plain_buffer() -> None:
    assert ProducerStateManager.producer_id(b"") == -1
    assert ProducerStateManager.producer_id(_batch(1)) == -1
    assert ProducerStateManager.producer_id(_batch(1, 12345, 0, 0)) == 12345
