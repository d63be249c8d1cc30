"""Broker.append_coalesced on a real standalone broker core (in this process, real files): the
request-handler pool's ``answered`` callback gets each acks 0/1 part's result, and a refusal's,
before the pass ends, and an acks=-1 part's only with the returned list, after the flush."""

from __future__ import annotations

import pathlib

import pytest

from annal.broker.coordination.standalone import StandaloneCoordinator
from annal.broker.server.broker import Broker
from annal.broker.server.config import BrokerConfig
from annal.cluster import BrokerInfo
from annal.errors import AnnalError, CorruptRecordError
from annal.record import BatchBuilder

pytestmark = pytest.mark.timeout(60)


def _batch(n: int) -> bytes:
    b = BatchBuilder()
    for i in range(n):
        b.append(1_700_000_000_000 + i, None, b"value-%d" % i)
    return b.build()


@pytest.fixture
def broker(tmp_path: pathlib.Path):
    b = Broker(BrokerConfig(data_dir=tmp_path / "data"), StandaloneCoordinator(tmp_path / "data"))
    b.open()
    b.start(BrokerInfo(0, "127.0.0.1", 1, 2))
    b.create_topic("t", 1, {})
    try:
        yield b
    finally:
        b.close()


def test_answered_gets_acks_0_and_1_parts_and_refusals_in_order_and_acks_all_at_the_end(broker, monkeypatch):
    plog = broker.leader_log("t", 0)
    flushes: list[int] = []
    real_flush = plog.flush

    def flush() -> None:
        flushes.append(plog.log_end_offset)
        real_flush()

    monkeypatch.setattr(plog, "flush", flush)
    bad = bytearray(_batch(2))
    bad[-1] ^= 0xFF  # CRC mismatch
    calls: list[tuple[int, object, int]] = []

    def answered(i: int, result: object) -> None:
        calls.append((i, result, len(flushes)))

    parts = [(_batch(3), 1, 1000), (_batch(2), -1, 1000), (bytes(bad), 1, 1000), (_batch(4), 0, 1000)]
    results = broker.append_coalesced("t", 0, parts, answered)
    assert [i for i, _, _ in calls] == [0, 2, 3]  # not the acks=-1 part
    assert all(n == 0 for _, _, n in calls)  # each answered before the pass's flush
    assert [r for _, r, _ in calls] == [results[0], results[2], results[3]]
    assert isinstance(results[2], CorruptRecordError)
    assert not isinstance(results[1], AnnalError) and flushes == [9]  # one flush, after all appends
    assert [r.base_offsets for r in (results[0], results[1], results[3])] == [(0,), (3,), (5,)]
    # Every answered offset is readable now.
    assert plog.log_end_offset == 9
