"""LoopMailbox: calls posted from other threads run on the loop, in order, and the calls posted
before the loop gets to them share one wake-up; a failing call does not stop the others; a
closed loop drops calls."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from annal.broker.server.loop_mailbox import LoopMailbox

pytestmark = pytest.mark.timeout(30)


def test_calls_posted_while_the_loop_is_busy_run_in_order_after_one_wakeup():
    async def main() -> tuple[list[tuple[int, int]], LoopMailbox]:
        loop = asyncio.get_running_loop()
        box = LoopMailbox(loop)
        ran: list[tuple[int, int]] = []
        done = asyncio.Event()

        def call(i: int) -> None:
            ran.append((i, threading.get_ident()))
            if i == 99:
                done.set()

        def worker() -> None:
            for i in range(100):
                box.post(call, i)

        t = threading.Thread(target=worker)
        # The loop is blocked (not awaiting) while the worker posts all 100: one wake-up.
        t.start()
        t.join()
        await asyncio.wait_for(done.wait(), 5)
        return ran, box

    ran, box = asyncio.run(main())
    assert [i for i, _ in ran] == list(range(100))
    assert {tid for _, tid in ran} == {threading.get_ident()}  # on the loop's thread
    assert box.posted == 100 and box.wakeups == 1


def test_a_failing_call_is_logged_and_the_rest_still_run(caplog):
    async def main() -> list[int]:
        box = LoopMailbox(asyncio.get_running_loop())
        ran: list[int] = []
        done = asyncio.Event()

        def bad() -> None:
            raise ValueError("boom")

        box.post(ran.append, 1)
        box.post(bad)
        box.post(ran.append, 2)
        box.post(done.set)
        await asyncio.wait_for(done.wait(), 5)
        return ran

    with caplog.at_level(logging.ERROR, logger="annal.loop_mailbox"):
        assert asyncio.run(main()) == [1, 2]
    assert "boom" in caplog.text


def test_post_after_the_loop_closed_returns_false():
    loop = asyncio.new_event_loop()
    box = LoopMailbox(loop)
    loop.close()
    assert box.post(print, "never") is False
    assert box.post(print, "never") is False  # not stuck as "scheduled"
