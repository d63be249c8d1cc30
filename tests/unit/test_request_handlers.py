"""RequestHandlerPool: appends to one partition coalesced and kept in order, partitions worked on
in parallel, the bounded queue and its backlog, errors answered, close drains the queue. The
broker is a stand-in that records the calls (a unit test of this one module)."""

from __future__ import annotations

import threading

import pytest

from annal.broker.server.request_handlers import RequestHandlerPool
from annal.errors import CorruptRecordError, NotLeaderForPartitionError

pytestmark = pytest.mark.timeout(30)


class FakeBroker:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, list]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.lock = threading.Lock()
        self.before_return = threading.Event()

    def append_coalesced(self, topic, partition, parts, answered=None):
        self.entered.set()
        self.gate.wait(10)
        with self.lock:
            self.calls.append((topic, partition, [r for r, *_ in parts]))
        if topic == "not-leader":
            raise NotLeaderForPartitionError("elsewhere")
        out = [CorruptRecordError("bad") if r == b"bad" else ("ok", r) for r, *_ in parts]
        if answered is not None and topic == "early":
            for i, (r, acks, _) in enumerate(parts):
                if acks != -1:
                    answered(i, out[i])
            self.before_return.wait(10)
        return out


def _collect(n: int):
    results: list = []
    done = threading.Event()
    lock = threading.Lock()

    def cb(r):
        with lock:
            results.append(r)
            if len(results) == n:
                done.set()

    return results, done, cb


def test_parts_queued_while_a_partition_is_busy_are_coalesced_in_order():
    b = FakeBroker()
    pool = RequestHandlerPool(b, num_io_threads=2)
    try:
        b.gate.clear()
        results, done, cb = _collect(5)
        pool.submit("t", 0, b"r0", 1, cb)
        assert b.entered.wait(5)  # a worker is inside the first append, holding partition 0
        for i in range(1, 5):
            pool.submit("t", 0, b"r%d" % i, 1, cb)
        b.gate.set()
        assert done.wait(5)
        assert [c[2] for c in b.calls] == [[b"r0"], [b"r1", b"r2", b"r3", b"r4"]]
        assert results == [("ok", b"r%d" % i) for i in range(5)]
        assert pool.coalesced == 4 and pool.queued == 0
    finally:
        pool.close()


def test_each_part_gets_its_own_answer_and_a_refusal_of_all_reaches_every_part():
    b = FakeBroker()
    pool = RequestHandlerPool(b, num_io_threads=1)
    try:
        results, done, cb = _collect(3)
        pool.submit("t", 1, b"bad", 1, cb)
        pool.submit("not-leader", 0, b"x", 1, cb)
        pool.submit("t", 1, b"good", 1, cb)
        assert done.wait(5)
        kinds = sorted(type(r).__name__ if isinstance(r, Exception) else r[0] for r in results)
        assert kinds == ["CorruptRecordError", "NotLeaderForPartitionError", "ok"]
    finally:
        pool.close()


def test_queue_is_bounded_and_the_backlog_moves_in_as_workers_finish():
    b = FakeBroker()
    pool = RequestHandlerPool(b, num_io_threads=1, max_queued_requests=2)
    try:
        b.gate.clear()
        results, done, cb = _collect(6)
        for i in range(6):
            pool.submit("t", i, b"r%d" % i, 1, cb)  # six partitions, one worker
        assert b.entered.wait(5)
        assert pool.queued == 6 and len(pool._backlog) == 4  # two in the queue, four waiting
        b.gate.set()
        assert done.wait(5)
        assert sorted(r[1] for r in results) == [b"r%d" % i for i in range(6)]
    finally:
        pool.close()


def test_close_lets_queued_work_finish_and_then_refuses():
    b = FakeBroker()
    pool = RequestHandlerPool(b, num_io_threads=2)
    results, done, cb = _collect(3)
    for i in range(3):
        pool.submit("t", 0, b"r%d" % i, 1, cb)
    pool.close()
    assert done.is_set() and len(results) == 3
    with pytest.raises(RuntimeError):
        pool.submit("t", 0, b"late", 1, cb)


def test_a_part_answered_early_is_answered_once_and_before_the_pass_ends():
    """acks 0/1 parts are answered from inside the pass (Broker.append_coalesced's
    ``answered``), once; the acks=-1 part of a pass is answered at its end."""
    b = FakeBroker()
    pool = RequestHandlerPool(b, num_io_threads=1)
    try:
        b.gate.clear()
        got: list = []
        first = threading.Event()
        all_done = threading.Event()

        def cb(r):
            got.append(r)
            first.set()
            if len(got) == 3:
                all_done.set()

        pool.submit("early", 0, b"a", 1, cb)
        assert b.entered.wait(5)  # pass 1 holds [a]; b and c queue behind it
        pool.submit("early", 0, b"b", -1, cb)
        pool.submit("early", 0, b"c", 0, cb)
        b.gate.set()
        assert first.wait(5)  # a answered while pass 1 has not returned
        assert got == [("ok", b"a")]
        b.before_return.set()
        assert all_done.wait(5)
        assert got == [("ok", b"a"), ("ok", b"c"), ("ok", b"b")]
        pool.close()
        assert len(got) == 3  # nothing answered twice
    finally:
        pool.close()
