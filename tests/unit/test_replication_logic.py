"""The pure pieces of replication: replica assignment, the controller's choice of a partition
state, the follower's truncation point (KIP-101/279), the leader's ISR and high watermark
bookkeeping, and the leader epoch cache file."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from annal.cluster import PartitionState
from annal.zookeeper import paths
from annal.broker.coordination.controller import choose_state
from annal.broker.replication.partition_state import LeaderState
from annal.broker.replication.replica_fetcher import truncation_offset
from annal.broker.storage._leader_epoch import LeaderEpochCache


@given(st.integers(1, 40), st.integers(1, 7), st.data())
def test_assignment_never_puts_two_replicas_on_one_broker_and_spreads_leaders(partitions, n, data) -> None:
    rf = data.draw(st.integers(1, n))
    ids = sorted(data.draw(st.sets(st.integers(0, 100), min_size=n, max_size=n)))
    start = data.draw(st.integers(0, n - 1))
    shift = data.draw(st.integers(0, n - 1))
    out = paths.assign_replicas(partitions, rf, ids, start, shift)
    assert sorted(out) == list(range(partitions))
    leaders = [r[0] for r in out.values()]
    for r in out.values():
        assert len(r) == rf and len(set(r)) == rf and set(r) <= set(ids)
    counts = [leaders.count(b) for b in ids]
    assert max(counts) - min(counts) <= 1  # leaders spread evenly


def test_assignment_refuses_more_replicas_than_brokers() -> None:
    with pytest.raises(ValueError):
        paths.assign_replicas(3, 4, [1, 2, 3], 0, 0)


def test_partition_state_round_trips() -> None:
    s = PartitionState(2, 7, (2, 3, 1), 4)
    back = paths.decode_partition_state(paths.encode_partition_state(s), 12)
    assert (back.leader, back.leader_epoch, back.isr, back.controller_epoch, back.zk_version) == (2, 7, (2, 3, 1), 4, 12)
    with pytest.raises(ValueError):
        paths.decode_partition_state(b'{"leader": 1}')


def _choose(state: PartitionState, live: set[int], unclean: bool = False, preferred: bool = True):
    return choose_state(state, (1, 2, 3), live, unclean=unclean, preferred=preferred, controller_epoch=5)


def test_dead_leader_is_replaced_by_the_first_live_isr_member_with_a_new_epoch() -> None:
    new = _choose(PartitionState(1, 3, (1, 2, 3)), {2, 3})
    assert new is not None and (new.leader, new.leader_epoch, new.isr) == (2, 4, (2, 3))
    # Out of the ISR: not eligible, even if alive and earlier in the assignment.
    new = _choose(PartitionState(1, 3, (1, 3)), {2, 3})
    assert new is not None and (new.leader, new.isr) == (3, (3,))


def test_no_live_isr_member_leaves_the_partition_offline_unless_unclean() -> None:
    new = _choose(PartitionState(1, 3, (1,)), {2, 3})
    assert new is not None and (new.leader, new.leader_epoch, new.isr) == (-1, 4, (1,))
    assert _choose(PartitionState(-1, 4, (1,)), {2, 3}) is None  # stays offline, no rewrite
    new = _choose(PartitionState(1, 3, (1,)), {2, 3}, unclean=True)
    assert new is not None and (new.leader, new.isr) == (2, (2,))
    # The last ISR member returns: it leads again.
    new = _choose(PartitionState(-1, 4, (1,)), {1, 2, 3})
    assert new is not None and (new.leader, new.leader_epoch) == (1, 5)


def test_dead_followers_leave_the_isr_and_the_preferred_leader_comes_back() -> None:
    new = _choose(PartitionState(2, 3, (2, 3, 1)), {2, 3})
    assert new is not None and (new.leader, new.leader_epoch, new.isr) == (2, 3, (2, 3))
    new = _choose(PartitionState(2, 3, (2, 3, 1)), {1, 2, 3})
    assert new is not None and (new.leader, new.leader_epoch, new.isr) == (1, 4, (2, 3, 1))
    assert _choose(PartitionState(2, 3, (2, 3)), {1, 2, 3}) is None  # preferred not in sync yet
    assert _choose(PartitionState(2, 3, (2, 3, 1)), {1, 2, 3}, preferred=False) is None


def test_truncation_point_follows_kip_279() -> None:
    ends = {0: 100, 1: 150, 3: 180}

    def my_end(epoch: int) -> int:
        return ends[max(e for e in ends if e <= epoch)] if epoch != 3 else 200

    # Same latest epoch: the smaller end.
    assert truncation_offset(3, my_end, 200, 3, 190, 0) == 190
    assert truncation_offset(3, my_end, 200, 3, 250, 0) == 200
    # The leader never had epoch 3; its epoch 1 ends at 160, ours at 150.
    assert truncation_offset(3, my_end, 200, 1, 160, 0) == 150
    assert truncation_offset(3, my_end, 200, 1, 120, 0) == 120
    # No epoch known on either side: the high watermark.
    assert truncation_offset(-1, my_end, 200, -1, -1, 42) == 42
    assert truncation_offset(3, my_end, 200, -1, -1, 42) == 42


def test_high_watermark_is_the_smallest_isr_log_end_and_never_goes_back() -> None:
    st_ = LeaderState(1, 0, (1, 2, 3), (1, 2, 3), 0, 0, now_ms=0.0)
    assert st_.current_high_watermark(10) == 0
    st_.update_follower(2, 10, 10, 1.0)
    assert st_.high_watermark == 0
    st_.update_follower(3, 6, 10, 1.0)
    assert st_.high_watermark == 6
    st_.update_follower(3, 10, 10, 2.0)
    assert st_.high_watermark == 10
    # 3 falls behind: it leaves the ISR after the lag time; then the HW moves without it.
    st_.update_follower(2, 20, 20, 700.0)
    assert st_.high_watermark == 10
    assert st_.lagging(700.0, 500) == (3,)
    st_.set_isr((1, 2), 20)
    assert st_.high_watermark == 20
    # 3 catches up to the HW: it may join again.
    st_.update_follower(3, 20, 20, 5000.0)
    assert st_.caught_up() == (3,)
    st_.set_isr((1, 2, 3), 20)
    assert st_.high_watermark == 20


def test_a_lone_leader_has_high_watermark_at_its_log_end() -> None:
    st_ = LeaderState(1, 0, (1,), (1,), 0, 0, now_ms=0.0)
    assert st_.current_high_watermark(37) == 37


def test_leader_epoch_cache_file_survives_reopen_and_truncation(tmp_path: Path) -> None:
    cache = LeaderEpochCache(str(tmp_path))
    assert cache.latest_epoch == -1 and cache.end_offset_for(0, 10) == (-1, -1)
    for epoch, start in ((0, 0), (1, 50), (1, 60), (4, 90)):
        cache.assign(epoch, start)
    assert cache.entries() == [(0, 0), (1, 50), (4, 90)]
    assert cache.end_offset_for(0, 120) == (0, 50)
    assert cache.end_offset_for(3, 120) == (1, 90)
    assert cache.end_offset_for(4, 120) == (4, 120)
    again = LeaderEpochCache(str(tmp_path))
    assert again.entries() == [(0, 0), (1, 50), (4, 90)]
    again.truncate_from_end(60)
    assert LeaderEpochCache(str(tmp_path)).entries() == [(0, 0), (1, 50)]
    (tmp_path / "leader-epoch-checkpoint").write_text("garbage")
    assert LeaderEpochCache(str(tmp_path)).entries() == []


def test_epoch_request_and_response_round_trip_in_framing() -> None:
    from annal.protocol import framing as fr

    req = fr.EpochRequest(9, [fr.EpochPartition("t", p, e) for p, e in itertools.product(range(2), (0, 7))])
    assert fr.decode_request(fr.encode_epoch_request(req)[4:]) == req._replace(partitions=list(req.partitions))
    resp = fr.EpochResponse(9, 0, [fr.EpochPartitionResult("t", 1, 0, 3, 1234), fr.EpochPartitionResult("u", 0, 6)])
    assert fr.decode_epoch_response(fr.encode_epoch_response(resp)[4:]) == resp._replace(partitions=list(resp.partitions))


def _batch(n: int) -> bytes:
    from annal.record import BatchBuilder

    b = BatchBuilder()
    for i in range(n):
        b.append_value(1000 + i, b"x%d" % i)
    return b.build(0)


def test_follower_append_keeps_offsets_and_epochs_and_reads_stop_at_the_high_watermark(tmp_path: Path) -> None:
    from annal.broker.storage import PartitionLog
    from annal.errors import CorruptRecordError

    leader = PartitionLog.open(str(tmp_path / "l"), segment_bytes=4096)
    follower = PartitionLog.open(str(tmp_path / "f"), segment_bytes=4096)
    for epoch in (0, 0, 2, 2, 5):
        leader.append_batches(_batch(3), leader_epoch=epoch)
    assert leader.leader_epochs.entries() == [(0, 0), (2, 6), (5, 12)]
    with leader.read(0, 1 << 20) as r:
        everything = r.tobytes()
        follower.append_as_follower(everything)
    assert follower.log_end_offset == 15 and follower.leader_epochs.entries() == leader.leader_epochs.entries()
    with follower.read(0, 1 << 20) as r:
        assert r.tobytes() == everything
    # Not the follower's log end: refused, nothing written.
    with leader.read(3, 1 << 20) as r:
        with pytest.raises(CorruptRecordError):
            follower.append_as_follower(r.tobytes())
    assert follower.log_end_offset == 15
    # A consumer's read stops at the high watermark (a batch boundary).
    with leader.read(0, 1 << 20, max_offset=6) as r:
        assert r.high_watermark == 6 and everything.startswith(r.tobytes()) and 0 < r.size < len(everything)
    with leader.read(9, 1 << 20, max_offset=6) as r:
        assert r.size == 0
    follower.truncate_to(7)  # the batch holding 6..8 goes whole
    assert follower.log_end_offset == 6 and follower.leader_epochs.entries() == [(0, 0)]
    follower.truncate_fully_and_start_at(100)
    assert (follower.log_start_offset, follower.log_end_offset, follower.leader_epochs.entries()) == (100, 100, [])
    leader.close()
    follower.close()


def test_a_replica_outside_the_isr_joins_only_after_fetching_up_to_the_high_watermark() -> None:
    st_ = LeaderState(1, 4, (1, 2, 3), (1, 2), 50, 60, now_ms=0.0)
    assert st_.caught_up() == ()  # 3 has not fetched from this leader yet
    st_.update_follower(2, 60, 60, 1.0)
    assert st_.high_watermark == 60
    st_.update_follower(3, 40, 60, 2.0)
    assert st_.caught_up() == ()  # below the high watermark
    st_.update_follower(3, 60, 60, 3.0)
    assert st_.caught_up() == (3,)
