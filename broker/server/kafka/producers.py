"""InitProducerId on the Kafka listener: producer ids from the broker's ``ProducerIds``
(``annal.broker.server.producer_ids``). The leader's sequence check that makes a producer
idempotent is the partition log's (``annal.broker.storage._producer_state``), the same for
Kafka clients and Annal's SDK.

Thread-safety: ``init_producer_id`` runs on the listener's event loop; reserving a block of ids
(a ZooKeeper or disk write) runs on its executor.
"""

from __future__ import annotations

import asyncio
from typing import Any

from annal.kafka import ErrorCode, RequestHeader
from annal.broker.server.broker import Broker

__all__ = ["KafkaProducerIds"]


class KafkaProducerIds:
    """Answers InitProducerId (idempotence only: a transactional id is refused)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.loop: asyncio.AbstractEventLoop | None = None  # set by the listener

    def init_producer_id(self, header: RequestHeader, body: dict[str, Any]) -> Any:
        if body.get("transactional_id"):
            return {"error_code": int(ErrorCode.INVALID_REQUEST), "producer_id": -1, "producer_epoch": -1}
        pid, epoch = body.get("producer_id", -1), body.get("producer_epoch", -1)
        ids = self.broker.producer_ids

        def answer() -> dict[str, Any]:
            new_pid, new_epoch = ids.init_producer_id(pid, epoch)
            return {"error_code": 0, "producer_id": new_pid, "producer_epoch": new_epoch}

        loop = self.loop
        if loop is None:
            return answer()

        async def run() -> dict[str, Any]:
            return await loop.run_in_executor(None, answer)

        return run()
