"""``max_block_ms`` bounds ``send()`` (kafka-python's meaning) even when the broker hangs.

The broker process is frozen (SIGSTOP): its port accepts connections but nothing answers, so
a metadata request would wait its whole ``request_timeout_ms`` (60 s here). ``send`` to a
topic the producer has not seen yet must give up after ``max_block_ms`` (1 s) with
KafkaTimeoutError; the 20 s test timeout is what fails if it does not.
"""

from __future__ import annotations

import os
import signal

import pytest

from annal.client import Producer
from annal.errors import KafkaTimeoutError


@pytest.mark.timeout(20)
def test_send_gives_up_after_max_block_ms_when_the_broker_hangs(broker) -> None:  # type: ignore[no-untyped-def]
    producer = Producer(broker.bootstrap, max_block_ms=1000, request_timeout_ms=60000)
    os.kill(broker.pid, signal.SIGSTOP)
    try:
        with pytest.raises(KafkaTimeoutError, match="1000 ms"):
            producer.send("never-seen", b"x")
    finally:
        os.kill(broker.pid, signal.SIGCONT)
        producer.close(timeout=5)
