"""RequestMemory: the broker-wide request memory bound shared by the listeners."""

from __future__ import annotations

import pytest

from annal.broker.server.request_memory import RequestMemory


class _Conn:
    def __init__(self, memory: RequestMemory, name: str, log: list[str]) -> None:
        self.memory = memory
        self.name = name
        self.log = log
        self.mem = 0
        self.on_unmute: int | None = None  # bytes it takes again when resumed

    def unmute(self) -> None:
        self.log.append(self.name)
        if self.on_unmute is not None:
            self.memory.set(self, self.on_unmute)


def _hog_and_waiting(take_again: int) -> tuple[RequestMemory, _Conn, list[_Conn], list[str]]:
    """A bound of 100 taken whole by one connection, and three muted connections that each
    take ``take_again`` bytes when resumed."""
    log: list[str] = []
    m = RequestMemory(100)
    hog = _Conn(m, "hog", log)
    m.set(hog, 100)
    waiting = [_Conn(m, name, log) for name in ("w1", "w2", "w3")]
    for c in waiting:
        c.on_unmute = take_again
        m.mute(c)
    return m, hog, waiting, log


def test_counts_what_each_connection_holds() -> None:
    m = RequestMemory(100)
    a, b = _Conn(m, "a", []), _Conn(m, "b", [])
    m.set(a, 60)
    assert not m.full
    m.set(b, 40)
    assert m.queued == 100 and m.full
    m.set(a, 10)
    assert m.queued == 50 and not m.full
    m.forget(b)
    assert m.queued == 10 and b.mem == 0


def test_muted_connections_resume_oldest_first_while_below_the_bound() -> None:
    m, hog, _, log = _hog_and_waiting(40)
    assert m.muted == 3
    m.set(hog, 0)  # each is resumed while below the bound: the last one crosses it (the overshoot)
    assert log == ["w1", "w2", "w3"]
    assert m.queued == 120 and m.muted == 0


def test_resuming_stops_at_the_bound_and_goes_on_when_memory_frees_again() -> None:
    m, hog, waiting, log = _hog_and_waiting(60)
    m.set(hog, 30)  # 70 free: w1 takes 60 -> 90, still below: w2 -> 150, at the bound: stop
    assert log == ["w1", "w2"] and m.muted == 1
    m.forget(waiting[1])  # w2 goes away: 90 -> below again, w3 resumes
    assert log == ["w1", "w2", "w3"] and m.muted == 0


def test_memory_growing_does_not_resume_anyone() -> None:
    log: list[str] = []
    m = RequestMemory(100)
    a, muted = _Conn(m, "a", log), _Conn(m, "muted", log)
    m.mute(muted)
    m.set(a, 10)  # grew: below the bound, but nothing was freed
    assert log == []
    m.set(a, 5)
    assert log == ["muted"]


def test_a_forgotten_connection_is_never_resumed() -> None:
    log: list[str] = []
    m = RequestMemory(100)
    hog, gone = _Conn(m, "hog", log), _Conn(m, "gone", log)
    m.set(hog, 100)
    m.mute(gone)
    m.forget(gone)
    m.set(hog, 0)
    assert log == [] and m.muted == 0


def test_a_bound_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RequestMemory(0)
