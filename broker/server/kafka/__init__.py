"""The broker's Kafka protocol edge: ``listener`` (sockets, frames, sendfile), ``handlers``
(each API answered from the ``Broker`` core), ``groups`` (the classic group coordinator) and
``producers`` (InitProducerId). The codec is ``annal.kafka``."""

from __future__ import annotations

from typing import Any

from annal.broker.server.kafka.listener import KafkaListener

__all__ = ["KafkaListener", "make_listener"]


def make_listener(broker: Any, config: Any, pool: Any = None, memory: Any = None) -> KafkaListener:
    """The Kafka listener of ``broker`` on ``config.host:config.kafka_port`` (not yet bound);
    ``pool``: the request-handler pool its appends run on, ``memory``: the request memory
    bound it shares (both the data port's)."""
    from annal.broker.server.request_memory import RequestMemory

    from annal.broker.server.kafka.handlers import KafkaHandlers

    from annal.broker.server.kafka.groups import GroupCoordinator
    from annal.broker.server.kafka.producers import KafkaProducerIds

    handlers = KafkaHandlers(broker, groups=GroupCoordinator(broker), producers=KafkaProducerIds(broker),
                             pool=pool)
    listener = KafkaListener(broker, config.host, config.kafka_port, request_timeout_ms=config.request_timeout_ms,
                             max_request_bytes=config.max_request_bytes, handlers=handlers,
                             memory=memory if memory is not None else RequestMemory(
                                 config.queued_max_request_bytes, config.max_request_bytes))
    return listener
