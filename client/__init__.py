"""Annal's Python client SDK: Producer, Consumer and Admin (kafka-python's names).

    from annal.client import Producer, Consumer, Admin, NewTopic, TopicPartition

Producer and Consumer talk to brokers' binary data ports for records and to their gRPC ports
for metadata and offsets; Admin uses gRPC only. Errors are ``annal.errors`` (the one Annal
hierarchy, with ``retriable`` flags).
"""

from __future__ import annotations

from annal import errors
from annal.client._accumulator import FutureRecordMetadata
from annal.client._group import ConsumerRebalanceListener
from annal.client.admin import EARLIEST, LATEST, Admin
from annal.client.consumer import Consumer
from annal.client.producer import Producer
from annal.client.structs import (
    BrokerMetadata,
    ClusterDescription,
    ConsumerRecord,
    NewTopic,
    OffsetAndTimestamp,
    PartitionMetadata,
    RecordMetadata,
    TopicDescription,
    TopicPartition,
)

__all__ = [
    "Admin",
    "BrokerMetadata",
    "ClusterDescription",
    "Consumer",
    "ConsumerRebalanceListener",
    "ConsumerRecord",
    "EARLIEST",
    "FutureRecordMetadata",
    "LATEST",
    "NewTopic",
    "OffsetAndTimestamp",
    "PartitionMetadata",
    "Producer",
    "RecordMetadata",
    "TopicDescription",
    "TopicPartition",
    "errors",
]
