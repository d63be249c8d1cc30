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

    def append_coalesced(self, topic, partition, parts):
        self.entered.set()
        self.gate.wait(10)
        with self.lock:
            self.calls.append((topic, partition, [r for r, *_ in parts]))
        if topic == "not-leader":
            raise NotLeaderForPartitionError("elsewhere")
        return [CorruptRecordError("bad") if r == b"bad" else ("ok", r) for r, *_ in parts]


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
