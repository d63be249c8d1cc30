"""The Apache Kafka wire protocol, as pure code: primitives (``_primitives``), message schemas
read from Kafka's own definitions (``_schema``, ``messages/``), headers and frames
(``header``), the supported APIs and error codes (``apis``). The broker's Kafka listener
(``annal.broker.server.kafka_listener``) drives it; nothing here touches a socket."""

from annal.kafka.apis import SUPPORTED, ApiKey, ErrorCode, kafka_error_code
from annal.kafka.header import RequestHeader, UnsupportedVersion, decode_request, encode_response

__all__ = ["SUPPORTED", "ApiKey", "ErrorCode", "kafka_error_code", "RequestHeader", "UnsupportedVersion",
           "decode_request", "encode_response"]
