"""The Kafka listener (``--kafka-port``): Apache Kafka's wire protocol on its own port, so that
Kafka clients (librdkafka/confluent-kafka, kafka-python, aiokafka, kcat, the Java client, log
shippers) produce and consume through the same ``Broker`` core as gRPC and the data port.

One asyncio task per connection reads frames (``annal.protocol.framing.FrameReader``: the same
length-prefixed framing as the data port), decodes them with ``annal.kafka`` and answers them
in order, as Kafka does (a client may pipeline; answers go back in request order). The APIs are
answered by ``handlers.KafkaHandlers``; the bytes of a Fetch answer's records go to the socket
with ``loop.sendfile`` straight from the segment files (the data port's path), never through
Python.

Failure handling: a frame whose length prefix is negative or over ``max_request_bytes`` is
logged and the connection closed (its correlation id is unknown, nothing can be answered); a
request for an unknown API key or an unsupported version is answered with UNSUPPORTED_VERSION
(ApiVersions: as version 0, with the supported ranges, so the client can negotiate) and, for
APIs other than ApiVersions, the connection closed after the answer because the client cannot
read an answer to a version it chose wrongly; a request body that does not parse is answered
with a frame holding INVALID_REQUEST and the connection closed. Nothing of a bad request is
written to a log. A peer that stalls in the middle of a frame is disconnected after
``request_timeout_ms``.

Thread-safety: everything runs on the event loop thread; handlers that may block on the disk
(an append with acks=-1) run on the loop's executor threads.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import time
from typing import Any

from annal.errors import InvalidRequestError, NetworkError
from annal.kafka import ApiKey, ErrorCode, UnsupportedVersion, decode_request, encode_response
from annal.kafka.apis import SUPPORTED
from annal.kafka.header import read_header
from annal.protocol.framing import FrameReader
from annal.broker.server.broker import Broker, release_read
from annal.broker.server.kafka.handlers import KafkaHandlers, NoResponse

__all__ = ["KafkaListener"]

log = logging.getLogger("annal.kafka_listener")


class KafkaListener:
    """Serves the Kafka protocol on one event loop. Call its methods from the loop."""

    READ_BYTES = 256 * 1024

    def __init__(self, broker: Broker, host: str, port: int, *, request_timeout_ms: int, max_request_bytes: int,
                 handlers: KafkaHandlers | None = None) -> None:
        self.broker = broker
        self.host = host
        self.port = port
        self.request_timeout = request_timeout_ms / 1000
        self.max_request_bytes = max_request_bytes
        self.handlers = handlers if handlers is not None else KafkaHandlers(broker)
        self._lsock: socket.socket | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        metrics = broker.metrics
        self._observers = {key: metrics.request_observer(api.name, "kafka") for key, api in SUPPORTED.items()}

    def bind(self) -> int:
        lsock = socket.create_server((self.host, self.port), backlog=1024, reuse_port=False)
        lsock.setblocking(False)
        self._lsock = lsock
        self.port = lsock.getsockname()[1]
        self.handlers.kafka_port = self.port
        if self.handlers.groups is not None:
            self.handlers.groups.kafka_port = self.port
        return self.port

    async def start(self) -> None:
        assert self._lsock is not None, "bind() first"
        self.handlers.loop = asyncio.get_running_loop()
        for part in (self.handlers.producers, self.handlers.groups):
            if part is not None:
                part.loop = self.handlers.loop
        self._server = await asyncio.start_server(self._serve, sock=self._lsock, limit=self.READ_BYTES)

    async def close(self, timeout: float) -> None:
        """Stop accepting; let answers in flight finish for up to ``timeout`` s, then cut."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        self.handlers.close()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()

    # ------------------------------------------------------------------ one connection

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
            except OSError:
                pass
        peer_t = writer.get_extra_info("peername")
        peer = f"{peer_t[0]}:{peer_t[1]}" if isinstance(peer_t, tuple) else str(peer_t)
        frames = FrameReader(max_frame_bytes=self.max_request_bytes, min_frame_bytes=8)
        try:
            while not self._closing:
                frame = frames.next_frame()
                if frame is None:
                    if frames.eof:
                        return
                    timeout = self.request_timeout if frames.in_frame else None
                    try:
                        data = await asyncio.wait_for(reader.read(self.READ_BYTES), timeout)
                    except asyncio.TimeoutError:
                        log.info("kafka %s: no complete request within request_timeout_ms=%d; closing",
                                 peer, int(self.request_timeout * 1000))
                        return
                    frames.receive_data(data)
                    continue
                if not await self._answer(peer, writer, frame):
                    return
        except InvalidRequestError as err:  # bad length prefix
            log.info("kafka %s: %s; closing the connection", peer, err.message)
        except NetworkError as err:  # EOF in the middle of a frame
            log.info("kafka %s: %s", peer, err.message)
        except (ConnectionError, OSError, asyncio.SendfileNotAvailableError) as err:
            # (asyncio reports a peer gone before the first sendfile byte as "not available")
            log.info("kafka %s: connection lost: %s", peer, err)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("kafka %s: unexpected error; closing the connection", peer)
        finally:
            self._tasks.discard(task)
            try:
                writer.close()
            except Exception:
                pass

    async def _answer(self, peer: str, writer: asyncio.StreamWriter, frame: memoryview) -> bool:
        """Answer one request. False when the connection must be closed afterwards."""
        started = time.perf_counter()
        try:
            header, body = decode_request(frame)
        except UnsupportedVersion as exc:
            h = exc.header
            log.info("kafka %s: api key %d version %d not supported (client %r); answering UNSUPPORTED_VERSION",
                     peer, h.api_key, h.api_version, h.client_id)
            writer.write(self._unsupported_answer(h.api_key, h.correlation_id))
            await writer.drain()
            return h.api_key == ApiKey.API_VERSIONS
        except InvalidRequestError as err:
            cid = int(err.details.get("correlation_id", -1))
            try:
                api = read_header(frame)[0]
                what = f"api key {api.api_key} version {api.api_version}"
            except InvalidRequestError:
                what = "unreadable header"
            log.info("kafka %s: bad request (%s, correlation id %d): %s; closing the connection",
                     peer, what, cid, err.message)
            writer.write((6).to_bytes(4, "big") + cid.to_bytes(4, "big", signed=True)
                         + int(ErrorCode.INVALID_REQUEST).to_bytes(2, "big"))
            await writer.drain()
            return False
        outcome = "NONE"
        result: Any = None
        try:
            result = self.handlers.handle(header, body)
            if inspect.isawaitable(result):
                result = await result
            if result is NoResponse.NONE:
                return True
            if result is NoResponse.CLOSE:
                return False
            parts = encode_response(header.api_key, header.api_version, header.correlation_id, result)
            await self._send(writer, parts)
        except (ConnectionError, OSError):
            outcome = "NETWORK_EXCEPTION"
            raise
        finally:
            if isinstance(result, dict):
                for r in result.pop("_reads", ()):
                    release_read(r)
            observe = self._observers.get(header.api_key)
            if observe is not None:
                observe(outcome, time.perf_counter() - started)
        return True

    async def _send(self, writer: asyncio.StreamWriter, parts: list[Any]) -> None:
        if len(parts) == 1:
            writer.write(parts[0])
            await writer.drain()
            return
        loop = asyncio.get_running_loop()
        transport = writer.transport
        for part in parts:
            if isinstance(part, bytes):
                if part:
                    writer.write(part)
                continue
            for chunk in part.chunks:
                with os.fdopen(chunk.fd, "rb", buffering=0, closefd=False) as f:
                    sent = await loop.sendfile(transport, f, chunk.position, chunk.size, fallback=False)
                if sent != chunk.size:
                    raise ConnectionResetError(f"segment file ended {chunk.size - sent} bytes early during sendfile")
        await writer.drain()

    def _unsupported_answer(self, api_key: int, correlation_id: int) -> bytes:
        if api_key == ApiKey.API_VERSIONS:
            parts = encode_response(ApiKey.API_VERSIONS, 0, correlation_id, self.handlers.api_versions_body(
                int(ErrorCode.UNSUPPORTED_VERSION)))
            return b"".join(parts)
        # No schema can be trusted for a version the client should not have sent: the answer
        # is the correlation id and the error code, then the connection is closed.
        body = int(ErrorCode.UNSUPPORTED_VERSION).to_bytes(2, "big", signed=True)
        return (4 + len(body)).to_bytes(4, "big") + correlation_id.to_bytes(4, "big", signed=True) + body
