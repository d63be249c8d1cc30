"""The client's errors: the one Annal hierarchy from ``broker.errors``, re-exported.

Every class has a ``retriable`` flag; the producer retries those up to
``delivery_timeout_ms`` and fails a send with any other one. ``LocalUsageError`` (and its
subclasses ``ProducerClosedError``, ``ConsumerClosedError``) means this process misused the API;
``KafkaTimeoutError`` (and ``BufferExhaustedError``) means a client-side deadline passed.
"""

from __future__ import annotations

from broker.errors import (
    AnnalError,
    BrokerNotAvailableError,
    BrokerShuttingDownError,
    BufferExhaustedError,
    ConsumerClosedError,
    CorruptRecordError,
    GroupError,
    InvalidConfigError,
    InvalidFetchSizeError,
    InvalidPartitionsError,
    InvalidRecordError,
    InvalidRequestError,
    InvalidRequiredAcksError,
    InvalidTopicError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    LocalUsageError,
    MessageTooLargeError,
    NetworkError,
    NotLeaderError,
    OffsetOutOfRangeError,
    ProducerClosedError,
    RequestTimedOutError,
    StorageError,
    TopicAlreadyExistsError,
    UnknownServerError,
    UnknownTopicOrPartitionError,
    UnsupportedCompressionTypeError,
    for_code,
    for_reason,
)

__all__ = [
    "AnnalError",
    "BrokerNotAvailableError",
    "BrokerShuttingDownError",
    "BufferExhaustedError",
    "ConsumerClosedError",
    "CorruptRecordError",
    "GroupError",
    "InvalidConfigError",
    "InvalidFetchSizeError",
    "InvalidPartitionsError",
    "InvalidRecordError",
    "InvalidRequestError",
    "InvalidRequiredAcksError",
    "InvalidTopicError",
    "KafkaTimeoutError",
    "LeaderNotAvailableError",
    "LocalUsageError",
    "MessageTooLargeError",
    "NetworkError",
    "NotLeaderError",
    "OffsetOutOfRangeError",
    "ProducerClosedError",
    "RequestTimedOutError",
    "StorageError",
    "TopicAlreadyExistsError",
    "UnknownServerError",
    "UnknownTopicOrPartitionError",
    "UnsupportedCompressionTypeError",
    "for_code",
    "for_reason",
    "error_for",
]


def error_for(code: int, message: str = "", **details: object) -> AnnalError:
    """An exception instance for a wire ``code`` with the broker's message and details."""
    cls = for_code(code)
    return cls(message or cls.reason, **details)
