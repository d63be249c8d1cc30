"""The one error hierarchy of Annal, shared by the broker and the client SDK.

Every error that can cross the wire has a numeric ``code`` (Kafka's error code where Kafka has
one, so users can look them up) and a ``retriable`` flag telling a client whether trying again
later may succeed. ``for_code(code)`` maps a wire code back to its class. gRPC status codes appear only at the
edges: the broker's servicer (``annal.broker.server.grpc_service``) picks one per class, and
the client's gRPC layer reads the code back from the call's trailers.

Local misuse (a bad argument passed to an API in this process) raises ``LocalUsageError`` or a
plain ``TypeError``/``ValueError``; what a remote peer did wrong or reported is an
``AnnalError`` subclass with a wire code: a malformed request reaching a broker is
``InvalidRequestError``, a malformed response reaching a client ``RemoteProtocolError``.

Names follow kafka-python's where the concept is the same (``MessageSizeTooLargeError``,
``NotLeaderForPartitionError``, ``KafkaTimeoutError``).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AnnalError",
    "LocalUsageError",
    "UnknownServerError",
    "OffsetOutOfRangeError",
    "CorruptRecordError",
    "UnknownTopicOrPartitionError",
    "InvalidFetchSizeError",
    "LeaderNotAvailableError",
    "NotLeaderForPartitionError",
    "RequestTimedOutError",
    "BrokerNotAvailableError",
    "MessageSizeTooLargeError",
    "NetworkError",
    "RemoteProtocolError",
    "InvalidTopicError",
    "InvalidRequiredAcksError",
    "TopicAlreadyExistsError",
    "InvalidPartitionsError",
    "InvalidReplicationFactorError",
    "NotEnoughReplicasError",
    "NotEnoughReplicasAfterAppendError",
    "InvalidConfigError",
    "InvalidRequestError",
    "StorageError",
    "UnsupportedCompressionTypeError",
    "InvalidRecordError",
    "BrokerShuttingDownError",
    "GroupError",
    "OutOfOrderSequenceNumberError",
    "InvalidProducerEpochError",
    "UnsupportedVersionError",
    "KafkaTimeoutError",
    "ProducerClosedError",
    "ConsumerClosedError",
    "BufferExhaustedError",
    "for_code",
]


class AnnalError(Exception):
    """Root of every Annal error.

    ``code`` is the wire error code, ``retriable`` says whether a client may retry. ``details``
    holds machine-readable context (for example the valid offset range, or the leader's
    address) that travels with the error.
    """

    code: ClassVar[int] = -1
    retriable: ClassVar[bool] = False
    reason: ClassVar[str] = "UNKNOWN_SERVER_ERROR"

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message or self.reason)
        self.message = message or self.reason
        self.details: dict[str, Any] = details

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.details.items())
        return f"{type(self).__name__}({self.message!r}{extra})"


class LocalUsageError(AnnalError):
    """The caller in this process misused an API (closed object, bad argument combination)."""

    code = -2
    reason = "LOCAL_USAGE"


class UnknownServerError(AnnalError):
    """The broker failed in a way it could not classify."""

    code = -1
    reason = "UNKNOWN_SERVER_ERROR"


class OffsetOutOfRangeError(AnnalError):
    """The requested offset is outside [log_start_offset, log_end_offset].

    ``details`` carries ``log_start_offset`` and ``log_end_offset``.
    """

    code = 1
    reason = "OFFSET_OUT_OF_RANGE"

    @property
    def log_start_offset(self) -> int | None:
        return self.details.get("log_start_offset")

    @property
    def log_end_offset(self) -> int | None:
        return self.details.get("log_end_offset")


class CorruptRecordError(AnnalError):
    """A record batch failed its CRC-32C or its lengths do not add up."""

    code = 2
    reason = "CORRUPT_MESSAGE"


class UnknownTopicOrPartitionError(AnnalError):
    """No such topic, or no such partition of it."""

    code = 3
    retriable = True  # Kafka retries this: metadata may not have propagated yet.
    reason = "UNKNOWN_TOPIC_OR_PARTITION"


class InvalidFetchSizeError(AnnalError):
    """A fetch asked for a negative or zero byte budget."""

    code = 4
    reason = "INVALID_FETCH_SIZE"


class LeaderNotAvailableError(AnnalError):
    """The partition has no live leader right now (its broker is down or not yet placed)."""

    code = 5
    retriable = True
    reason = "LEADER_NOT_AVAILABLE"


class NotLeaderForPartitionError(AnnalError):
    """This broker does not lead the partition; ``details['leader']`` names the one that does."""

    code = 6
    retriable = True
    reason = "NOT_LEADER_OR_FOLLOWER"


class RequestTimedOutError(AnnalError):
    """The broker did not finish the request in time."""

    code = 7
    retriable = True
    reason = "REQUEST_TIMED_OUT"


class BrokerNotAvailableError(AnnalError):
    """The broker could not be reached."""

    code = 8
    retriable = True
    reason = "BROKER_NOT_AVAILABLE"


class MessageSizeTooLargeError(AnnalError):
    """A batch or request is larger than the configured limit (``max_message_bytes``)."""

    code = 10
    reason = "MESSAGE_TOO_LARGE"


class NetworkError(AnnalError):
    """The connection failed or the peer closed it mid-request."""

    code = 13
    retriable = True
    reason = "NETWORK_EXCEPTION"


class RemoteProtocolError(NetworkError):
    """The peer's bytes broke the protocol: a malformed response frame (h11's
    ``RemoteProtocolError``). The connection is dropped; a retry on a new one may succeed.
    A malformed *request* reaching the broker is ``InvalidRequestError`` instead."""

    code = -7
    reason = "REMOTE_PROTOCOL_ERROR"


class InvalidTopicError(AnnalError):
    """The topic name is not legal: [a-zA-Z0-9._-], 1..249 characters, not '.' or '..'."""

    code = 17
    reason = "INVALID_TOPIC_EXCEPTION"


class NotEnoughReplicasError(AnnalError):
    """acks=all was refused: the partition's in-sync replica set is smaller than the topic's
    min_insync_replicas, so the batch was not appended."""

    code = 19
    retriable = True
    reason = "NOT_ENOUGH_REPLICAS"


class NotEnoughReplicasAfterAppendError(AnnalError):
    """acks=all: the batch was appended, but the in-sync replica set shrank below
    min_insync_replicas before it was answered; the producer may retry (and may duplicate)."""

    code = 20
    retriable = True
    reason = "NOT_ENOUGH_REPLICAS_AFTER_APPEND"


class InvalidRequiredAcksError(AnnalError):
    """acks must be 0, 1 or all (-1)."""

    code = 21
    reason = "INVALID_REQUIRED_ACKS"


class TopicAlreadyExistsError(AnnalError):
    """A topic of that name exists already."""

    code = 36
    reason = "TOPIC_ALREADY_EXISTS"


class InvalidReplicationFactorError(AnnalError):
    """The replication factor is not positive or exceeds the number of live brokers."""

    code = 38
    reason = "INVALID_REPLICATION_FACTOR"


class InvalidPartitionsError(AnnalError):
    """The partition count is not a positive integer within limits."""

    code = 37
    reason = "INVALID_PARTITIONS"


class InvalidConfigError(AnnalError):
    """A topic or broker configuration value is unknown or out of range."""

    code = 40
    reason = "INVALID_CONFIG"


class InvalidRequestError(AnnalError):
    """The request is malformed (bad framing, bad field values)."""

    code = 42
    reason = "INVALID_REQUEST"


class StorageError(AnnalError):
    """The broker's disk failed the operation (for example ENOSPC); earlier data is intact."""

    code = 56
    retriable = True
    reason = "KAFKA_STORAGE_ERROR"


class UnsupportedCompressionTypeError(AnnalError):
    """The batch uses a codec Annal does not support (only none and lz4 are)."""

    code = 76
    reason = "UNSUPPORTED_COMPRESSION_TYPE"


class InvalidRecordError(AnnalError):
    """The batch is well-formed bytes but breaks a rule (wrong magic, bad record count...)."""

    code = 87
    reason = "INVALID_RECORD"


class UnsupportedVersionError(AnnalError):
    """The request's API or version is not one the broker answers (Kafka listener)."""

    code = 35
    reason = "UNSUPPORTED_VERSION"


class OutOfOrderSequenceNumberError(AnnalError):
    """An idempotent producer's batch does not follow the last sequence the leader has."""

    code = 45
    reason = "OUT_OF_ORDER_SEQUENCE_NUMBER"


class InvalidProducerEpochError(AnnalError):
    """An idempotent producer's epoch is older than the one the leader has seen."""

    code = 47
    reason = "INVALID_PRODUCER_EPOCH"


class BrokerShuttingDownError(AnnalError):
    """The broker is stopping and takes no new requests; retry on another broker or later."""

    code = 1001
    retriable = True
    reason = "BROKER_SHUTTING_DOWN"


class GroupError(AnnalError):
    """A consumer-group operation failed (for example committing a partition not owned)."""

    code = 1002
    reason = "GROUP_ERROR"


# Client-local errors (never sent by a broker).


class KafkaTimeoutError(AnnalError):
    """A client-side deadline passed (delivery_timeout_ms, max_block_ms, a get() timeout)."""

    code = -3
    retriable = True
    reason = "CLIENT_TIMEOUT"


class ProducerClosedError(LocalUsageError):
    """send() was called on a closed producer."""

    code = -4
    reason = "PRODUCER_CLOSED"


class ConsumerClosedError(LocalUsageError):
    """A consumer method was called after close()."""

    code = -5
    reason = "CONSUMER_CLOSED"


class BufferExhaustedError(KafkaTimeoutError):
    """send() waited max_block_ms for buffer_memory to free up and gave up."""

    code = -6
    reason = "BUFFER_EXHAUSTED"


_BY_CODE: dict[int, type[AnnalError]] = {}
for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, AnnalError) and _cls is not AnnalError:
        _BY_CODE.setdefault(_cls.code, _cls)
_BY_REASON: dict[str, type[AnnalError]] = {c.reason: c for c in _BY_CODE.values()}


def for_code(code: int) -> type[AnnalError]:
    """The error class for a wire error code; unknown codes map to UnknownServerError."""
    return _BY_CODE.get(code, UnknownServerError)


def for_reason(reason: str) -> type[AnnalError]:
    """The error class for a machine-readable reason string (as sent in gRPC trailers)."""
    return _BY_REASON.get(reason, UnknownServerError)
