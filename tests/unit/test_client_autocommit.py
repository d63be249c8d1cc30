"""annal.client._autocommit.AutoCommitter and annal.client._ratelimit.RateLimitedWarnings, with
a fake write function (no ZooKeeper)."""

from __future__ import annotations

import logging
import threading

import pytest

from annal.client._autocommit import AutoCommitter
from annal.client._ratelimit import RateLimitedWarnings
from annal.client.structs import TopicPartition

A, B = TopicPartition("t", 0), TopicPartition("t", 1)


@pytest.mark.timeout(10)
def test_latest_offsets_win_and_a_failed_write_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    written: list[dict[TopicPartition, int]] = []
    gate = threading.Event()
    fail = [True]

    def write(offsets):  # type: ignore[no-untyped-def]
        gate.wait(5)
        if fail[0]:
            fail[0] = False
            raise ConnectionError("zookeeper unreachable")
        written.append(dict(offsets))

    caplog.set_level(logging.INFO, logger="annal.client.consumer")
    c = AutoCommitter(write, "g", retry_backoff_ms=10)
    try:
        c.submit({A: 1})
        c.submit({A: 5, B: 2})  # while the first is being written or waiting: replaces A
        gate.set()
        assert c.flush(5)
        assert written and written[-1] == {A: 5, B: 2}
        assert c.failures == 1 and c.commits >= 1 and c.last_commit_at is not None
        messages = [r.getMessage() for r in caplog.records]
        assert any("auto-commit failed" in m and r.levelno == logging.WARNING
                   for m, r in zip(messages, caplog.records))
        assert any("succeeded again" in m for m in messages)
    finally:
        c.close()


@pytest.mark.timeout(10)
def test_close_drops_what_waits_and_submit_never_blocks() -> None:
    gate = threading.Event()
    c = AutoCommitter(lambda _o: gate.wait(5), "g")
    c.submit({A: 1})
    for i in range(1000):  # the write is stuck: submit must not wait for it
        c.submit({A: i})
    assert not c.flush(0.05)
    gate.set()
    c.close()


def test_rate_limited_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    w = RateLimitedWarnings(logging.getLogger("test.ratelimit"), interval_s=3600)
    assert w.warn("k", "first %d", 1)
    assert not w.warn("k", "again")
    assert w.warn("other", "another condition")
    w.clear("k")
    assert w.warn("k", "after clear")
    assert [r.getMessage() for r in caplog.records] == ["first 1", "another condition", "after clear"]
