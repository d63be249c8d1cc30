"""The Kafka APIs Annal answers, with the version range of each, and Kafka's error codes.

``SUPPORTED`` is what ApiVersions advertises and what the listener accepts: a request for an
API outside it, or at a version outside its range, is answered with UNSUPPORTED_VERSION (35).
Each range is the intersection of what Apache Kafka 4.x defines (``messages/*.json``
``validVersions``) and what Annal implements: it stops before the versions that replace topic
names with topic ids (Fetch 13, Produce 13, OffsetCommit 10, DeleteTopics 6), that batch groups
(OffsetFetch 8) or that only serve KRaft, tiered storage or the KIP-848 group protocol. Pure data.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

__all__ = ["ApiKey", "ApiRange", "SUPPORTED", "ErrorCode", "kafka_error_code"]


class ApiKey(IntEnum):
    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    INIT_PRODUCER_ID = 22
    DESCRIBE_CONFIGS = 32
    DESCRIBE_CLUSTER = 60


class ApiRange(NamedTuple):
    name: str  # the message name without Request/Response, as in messages/
    min_version: int
    max_version: int


SUPPORTED: dict[int, ApiRange] = {
    ApiKey.PRODUCE: ApiRange("Produce", 3, 12),
    ApiKey.FETCH: ApiRange("Fetch", 4, 12),
    ApiKey.LIST_OFFSETS: ApiRange("ListOffsets", 1, 7),
    ApiKey.METADATA: ApiRange("Metadata", 0, 12),
    ApiKey.OFFSET_COMMIT: ApiRange("OffsetCommit", 2, 9),
    ApiKey.OFFSET_FETCH: ApiRange("OffsetFetch", 1, 7),
    ApiKey.FIND_COORDINATOR: ApiRange("FindCoordinator", 0, 4),
    ApiKey.JOIN_GROUP: ApiRange("JoinGroup", 0, 7),
    ApiKey.HEARTBEAT: ApiRange("Heartbeat", 0, 4),
    ApiKey.LEAVE_GROUP: ApiRange("LeaveGroup", 0, 4),
    ApiKey.SYNC_GROUP: ApiRange("SyncGroup", 0, 5),
    ApiKey.API_VERSIONS: ApiRange("ApiVersions", 0, 4),
    ApiKey.CREATE_TOPICS: ApiRange("CreateTopics", 2, 7),
    ApiKey.DELETE_TOPICS: ApiRange("DeleteTopics", 1, 5),
    ApiKey.INIT_PRODUCER_ID: ApiRange("InitProducerId", 0, 4),
    ApiKey.DESCRIBE_CONFIGS: ApiRange("DescribeConfigs", 1, 4),
    ApiKey.DESCRIBE_CLUSTER: ApiRange("DescribeCluster", 0, 1),
}


class ErrorCode(IntEnum):
    """Kafka's wire error codes (``org.apache.kafka.common.protocol.Errors``) that Annal sends."""

    UNKNOWN_SERVER_ERROR = -1
    NONE = 0
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    LEADER_NOT_AVAILABLE = 5
    NOT_LEADER_OR_FOLLOWER = 6
    REQUEST_TIMED_OUT = 7
    MESSAGE_TOO_LARGE = 10
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    INVALID_TOPIC_EXCEPTION = 17
    INVALID_REQUIRED_ACKS = 21
    ILLEGAL_GENERATION = 22
    INCONSISTENT_GROUP_PROTOCOL = 23
    INVALID_GROUP_ID = 24
    UNKNOWN_MEMBER_ID = 25
    INVALID_SESSION_TIMEOUT = 26
    REBALANCE_IN_PROGRESS = 27
    UNSUPPORTED_VERSION = 35
    TOPIC_ALREADY_EXISTS = 36
    INVALID_PARTITIONS = 37
    INVALID_REPLICATION_FACTOR = 38
    INVALID_CONFIG = 40
    INVALID_REQUEST = 42
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45
    DUPLICATE_SEQUENCE_NUMBER = 46
    INVALID_PRODUCER_EPOCH = 47
    KAFKA_STORAGE_ERROR = 56
    UNKNOWN_PRODUCER_ID = 59
    GROUP_ID_NOT_FOUND = 69
    UNSUPPORTED_COMPRESSION_TYPE = 76
    MEMBER_ID_REQUIRED = 79
    INVALID_RECORD = 87


def kafka_error_code(annal_code: int) -> int:
    """The Kafka code for an ``AnnalError.code``. Annal's codes below 1000 are Kafka's own;
    its private ones map to the Kafka code a client treats the same way (a broker shutting
    down: NOT_LEADER_OR_FOLLOWER, so the client refreshes metadata and retries)."""
    if 0 <= annal_code < 1000:
        return annal_code
    if annal_code == 1001:
        return ErrorCode.NOT_LEADER_OR_FOLLOWER
    return ErrorCode.UNKNOWN_SERVER_ERROR
