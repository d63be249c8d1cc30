"""Kafka request and response headers, and whole request/response frames. No I/O.

Layouts (Kafka's ``RequestHeader.json`` / ``ResponseHeader.json``)::

    frame               length int32 | header | body
    request header v1   api_key int16 | api_version int16 | correlation_id int32 | client_id string (int16 length, nullable)
    request header v2   v1 | tagged fields                        (flexible request versions)
    response header v0  correlation_id int32
    response header v1  correlation_id int32 | tagged fields      (flexible response versions)

ApiVersions is the exception Kafka makes so that any client can negotiate: its response header
is always v0, and a request for an ApiVersions version the broker does not know is answered as
version 0 (error UNSUPPORTED_VERSION plus the supported ranges).

``decode_request`` raises ``UnsupportedVersion`` (with the header read) for an API or version
outside ``apis.SUPPORTED``, ``InvalidRequestError`` for bytes that do not parse. Pure functions.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from annal.errors import InvalidRequestError
from annal.kafka._primitives import Reader
from annal.kafka._schema import Encoder, message
from annal.kafka.apis import SUPPORTED, ApiKey

__all__ = ["RequestHeader", "UnsupportedVersion", "read_header", "decode_request", "encode_response",
           "encode_request", "decode_response",
           "REQUEST_HEADER_MIN_BYTES"]

REQUEST_HEADER_MIN_BYTES = 10  # api_key, api_version, correlation_id, client_id length


class RequestHeader(NamedTuple):
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


class UnsupportedVersion(Exception):
    """A request for an API or version Annal does not answer; carries its header."""

    def __init__(self, header: RequestHeader) -> None:
        super().__init__(f"api key {header.api_key} version {header.api_version} is not supported")
        self.header = header


_FIXED_HEAD = struct.Struct(">hhi")  # api_key, api_version, correlation_id


def read_header(frame: bytes | bytearray | memoryview) -> tuple[RequestHeader, Reader]:
    r = Reader(frame)
    if r.end >= _FIXED_HEAD.size:
        api_key, api_version, correlation_id = _FIXED_HEAD.unpack_from(r.buf, 0)
        r.pos = _FIXED_HEAD.size
    else:
        api_key = r.int16()
        api_version = r.int16()
        correlation_id = r.int32()
    try:
        client_id = r.string(nullable=True)
    except InvalidRequestError as err:
        err.details["correlation_id"] = correlation_id
        raise
    return RequestHeader(api_key, api_version, correlation_id, client_id), r


def decode_request(frame: bytes | bytearray | memoryview) -> tuple[RequestHeader, dict[str, Any]]:
    """Header and body (a dict, see ``_schema``) of one request frame (without its length)."""
    header, r = read_header(frame)
    decoder = _REQUEST_DECODERS.get((header.api_key, header.api_version))
    if decoder is None:
        decoder = _request_decoder(header)
    msg, flexible = decoder
    try:
        if flexible:
            buf, pos = r.buf, r.pos
            if pos < r.end and buf[pos] == 0:  # header tagged fields: usually none
                r.pos = pos + 1
            else:
                for _ in range(r.uvarint()):  # none that Annal uses
                    r.uvarint()
                    r.raw(r.uvarint())
        body = msg.decode(r, header.api_version)
    except InvalidRequestError as err:
        err.details["correlation_id"] = header.correlation_id
        raise
    return header, body


# (api_key, api_version) -> (request Message, flexible), for the versions Annal answers.
_REQUEST_DECODERS: dict[tuple[int, int], tuple[Any, bool]] = {}


def _request_decoder(header: RequestHeader) -> tuple[Any, bool]:
    api = SUPPORTED.get(header.api_key)
    if api is None or not api.min_version <= header.api_version <= api.max_version:
        raise UnsupportedVersion(header)
    msg = message(api.name + "Request")
    entry = _REQUEST_DECODERS[(header.api_key, header.api_version)] = (msg, msg.is_flexible(header.api_version))
    return entry


def encode_request(api_key: int, api_version: int, correlation_id: int, client_id: str | None,
                   body: dict[str, Any]) -> bytes:
    """One request frame (length prefix included), as a client sends it."""
    msg = message(SUPPORTED[api_key].name + "Request")
    enc = Encoder()
    cid = None if client_id is None else client_id.encode()
    enc.cur += api_key.to_bytes(2, "big") + api_version.to_bytes(2, "big", signed=True)
    enc.cur += correlation_id.to_bytes(4, "big", signed=True)
    enc.cur += (-1).to_bytes(2, "big", signed=True) if cid is None else len(cid).to_bytes(2, "big") + cid
    if msg.is_flexible(api_version):
        enc.cur.append(0)  # request header v2: no tagged fields
    msg.encode(body, api_version, enc)
    data = enc.tobytes()
    return len(data).to_bytes(4, "big") + data


# (api_key, api_version) -> (the response's generated encoder, whether its header is v1).
_RESPONSE_ENCODERS: dict[tuple[int, int], tuple[Any, bool]] = {}
_CORRELATION = struct.Struct(">ii")  # the length (filled in last) and the correlation id


def decode_response(api_key: int, api_version: int, frame: bytes | bytearray | memoryview) -> tuple[int, dict[str, Any]]:
    """``(correlation_id, body)`` of one response frame (without its length prefix)."""
    msg = message(SUPPORTED[api_key].name + "Response")
    r = Reader(frame)
    correlation_id = r.int32()
    if api_key != ApiKey.API_VERSIONS and msg.is_flexible(api_version):
        for _ in range(r.uvarint()):
            r.uvarint()
            r.raw(r.uvarint())
    return correlation_id, msg.decode(r, api_version)


def encode_response(api_key: int, api_version: int, correlation_id: int, body: dict[str, Any]) -> list[Any]:
    """The whole response frame as parts: ``bytes`` and the records holes given in ``body``
    (see ``_schema``); the length prefix counts the holes' sizes."""
    encoder = _RESPONSE_ENCODERS.get((api_key, api_version))
    if encoder is None:
        msg = message(SUPPORTED[api_key].name + "Response")
        # The response header is v1 (tagged fields) in flexible versions, ApiVersions' always v0.
        encoder = _RESPONSE_ENCODERS[(api_key, api_version)] = (
            msg.encoder(api_version), api_key != ApiKey.API_VERSIONS and msg.is_flexible(api_version))
    encode, header_v1 = encoder
    enc = Encoder()
    enc.cur += _CORRELATION.pack(0, correlation_id)
    if header_v1:
        enc.cur.append(0)  # response header v1: no tagged fields
    encode(enc, body)
    size = enc.size - 4
    parts = enc.finish()
    parts[0] = size.to_bytes(4, "big") + parts[0][4:]
    return parts
