"""The Kafka listener (``--kafka-port``): Apache Kafka's wire protocol on its own port, so that
Kafka clients (librdkafka/confluent-kafka, kafka-python, aiokafka, kcat, the Java client, log
shippers) produce and consume through the same ``Broker`` core as gRPC and the data port.

Each connection is an asyncio ``BufferedProtocol`` whose transport receives straight into the
frame being assembled (``annal.protocol.framing.FrameReader``: the same length-prefixed framing
as the data port, so a Produce's batches are appended from the buffer the kernel filled), and
one task per connection takes whole frames, decodes them with ``annal.kafka`` and answers them
in order, as Kafka does (a client may pipeline; answers go back in request order). The APIs are
answered by ``handlers.KafkaHandlers``; the bytes of a Fetch answer's records go to the socket
with ``os.sendfile`` straight from the segment files (``sendfile.py``, the data port's path),
never through Python.

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
(appends, topic changes) run on the request-handler pool or the loop's executor threads.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
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
from annal.broker.server.request_memory import RequestMemory
from annal.broker.server.sendfile import send_file_range

__all__ = ["KafkaListener"]

log = logging.getLogger("annal.kafka_listener")


class _Connection(asyncio.BufferedProtocol):
    """The transport receives straight into the ``FrameReader``'s buffers (no copy through a
    stream buffer: a large Produce lands in its own frame); the connection's task takes whole
    frames in order. Reading pauses while unanswered frames pile up, and while the broker-wide
    request memory is at its bound (``request_memory.py``, shared with the data port)."""

    MAX_PENDING_FRAMES = 64
    MAX_PENDING_BYTES = 16 * 1024 * 1024

    def __init__(self, listener: "KafkaListener") -> None:
        self.listener = listener
        self.frames = FrameReader(max_frame_bytes=listener.max_request_bytes, min_frame_bytes=8)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.lost = False
        self.read_paused = False
        self.write_paused = False
        self.wakeup: asyncio.Future[None] | None = None
        self.drained: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.error: Exception | None = None
        # The broker-wide request memory bound: bytes counted for this connection, the size of
        # the frame being answered, whether it is muted, bytes it read into the hold buffer.
        self.mem = 0
        self.answering = 0
        self.muted = False
        self.holding = False
        self.held = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                # Record bytes follow their fields with sendfile: without NODELAY, Nagle holds
                # them until the client ACKs the fields (see data_port.py).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            except OSError:
                pass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.listener._conns.add(self)
        self.task = asyncio.get_running_loop().create_task(self.listener._serve(self))

    def get_buffer(self, sizehint: int) -> memoryview:
        memory = self.listener.memory
        if memory.full and self.frames.next_read_allocates:
            # Over the broker-wide bound, and these bytes would need new memory: take at most
            # a small hold buffer's worth, then stop reading until memory frees (unmute).
            self.holding = True
            return memory.hold_view
        self.holding = False
        return self.frames.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        if self.holding:
            self.holding = False
            memory = self.listener.memory
            self.held += memory.hold_view[:nbytes]
            if not self.muted and not self.lost:
                self.muted = True
                memory.mute(self)
                if self.transport is not None:
                    self.transport.pause_reading()
            return
        try:
            self.frames.buffer_updated(nbytes)
        except Exception as err:  # a bad length prefix: the task reports it
            self.error = err
        self.account()
        f = self.frames
        # Complete frames only: pausing for a large frame still arriving would never let it
        # complete (taking frames is what resumes reading).
        if f.pending_frames >= self.MAX_PENDING_FRAMES or f.ready_bytes >= self.MAX_PENDING_BYTES:
            if not self.read_paused and self.transport is not None:
                self.read_paused = True
                self.transport.pause_reading()
        # Every read wakes the task: a whole frame to answer, a bad length prefix to report, or
        # a frame just begun, whose request_timeout_ms starts now.
        self._wake()

    def eof_received(self) -> bool:
        try:
            self.frames.receive_data(b"")
        except Exception as err:
            self.error = err
        self._wake()
        return True  # requests received before the EOF still get answers

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.listener._conns.discard(self)
        self.listener.memory.forget(self)
        self._wake()
        if self.drained is not None and not self.drained.done():
            self.drained.set_exception(ConnectionResetError("connection lost"))

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def account(self) -> None:
        """Bring this connection's share of the request memory up to date."""
        if self.lost:
            return  # forgotten by connection_lost
        memory = self.listener.memory
        memory.set(self, self.frames.allocated_bytes + self.answering)
        if memory.full:
            self.frames.drop_spares()
            memory.set(self, self.frames.allocated_bytes + self.answering)

    def unmute(self) -> None:
        """Request memory fell below the bound: take back the held bytes and read again."""
        self.muted = False
        if self.lost:
            return
        held, self.held = bytes(self.held), bytearray()
        if held:
            try:
                self.frames.receive_data(held)
            except Exception as err:
                self.error = err
            self.account()
        if not self.read_paused and self.transport is not None:
            self.transport.resume_reading()
        self._wake()

    def _wake(self) -> None:
        if self.wakeup is not None and not self.wakeup.done():
            self.wakeup.set_result(None)

    async def next_frame(self, timeout: float) -> memoryview | None:
        """The next whole frame; None at EOF or when the peer is gone. Raises the framing
        error of a bad length prefix, ``TimeoutError`` when a started frame stalls."""
        loop = asyncio.get_running_loop()
        while True:
            if self.error is not None:
                raise self.error
            frame = self.frames.next_frame()
            if frame is not None:
                f = self.frames
                if self.read_paused and f.pending_frames < self.MAX_PENDING_FRAMES // 2 \
                        and f.ready_bytes < self.MAX_PENDING_BYTES // 2 and self.transport is not None:
                    self.read_paused = False
                    if not self.muted:
                        self.transport.resume_reading()
                return frame
            if self.lost or self.frames.eof or self.listener._closing:
                return None
            self.wakeup = loop.create_future()
            try:
                if self.frames.in_frame:
                    # Muted or not: large frames that each hold part of the request memory and
                    # all need more would otherwise wait for each other for ever (data_port.py).
                    await asyncio.wait_for(self.wakeup, timeout)
                else:
                    await self.wakeup
            finally:
                self.wakeup = None

    def write(self, data: bytes) -> None:
        if self.lost or self.transport is None:
            raise ConnectionResetError("connection closed")
        self.transport.write(data)

    async def drain(self) -> None:
        if self.lost:
            raise ConnectionResetError("connection closed")
        if self.write_paused:
            self.drained = asyncio.get_running_loop().create_future()
            try:
                await self.drained
            finally:
                self.drained = None


class KafkaListener:
    """Serves the Kafka protocol on one event loop. Call its methods from the loop."""

    def __init__(self, broker: Broker, host: str, port: int, *, request_timeout_ms: int, max_request_bytes: int,
                 handlers: KafkaHandlers | None = None, memory: RequestMemory | None = None) -> None:
        """``memory``: the broker-wide request memory bound, shared with the data port (by
        default one of its own, of ``queued_max_request_bytes``' default size)."""
        self.broker = broker
        self.memory = memory if memory is not None else RequestMemory(max_request_bytes=max_request_bytes)
        broker.metrics.watch_request_memory(self.memory)
        self.host = host
        self.port = port
        self.request_timeout = request_timeout_ms / 1000
        self.max_request_bytes = max_request_bytes
        self.handlers = handlers if handlers is not None else KafkaHandlers(broker)
        self._lsock: socket.socket | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._conns: set[_Connection] = set()
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
        self._server = await self.handlers.loop.create_server(lambda: _Connection(self), sock=self._lsock,
                                                              backlog=1024, start_serving=True)

    async def close(self, timeout: float) -> None:
        """Stop accepting; let answers in flight finish for up to ``timeout`` s, then cut."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        self.handlers.close()
        for conn in list(self._conns):
            conn._wake()  # idle connections end now; answers in flight finish first
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()

    # ------------------------------------------------------------------ one connection

    async def _serve(self, conn: _Connection) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = conn.peer
        try:
            while not self._closing:
                try:
                    frame = await conn.next_frame(self.request_timeout)
                except asyncio.TimeoutError:
                    log.info("kafka %s: no complete request within request_timeout_ms=%d; closing",
                             peer, int(self.request_timeout * 1000))
                    return
                if frame is None:
                    return
                conn.answering = frame.nbytes  # held until answered (a Produce's until appended)
                conn.account()
                try:
                    if not await self._answer(conn, frame):
                        return
                finally:
                    conn.answering = 0
                    conn.account()
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
            if conn.transport is not None:
                conn.transport.close()

    async def _answer(self, conn: _Connection, frame: memoryview) -> bool:
        """Answer one request. False when the connection must be closed afterwards."""
        started = time.perf_counter()
        peer = conn.peer
        try:
            header, body = decode_request(frame)
        except UnsupportedVersion as exc:
            h = exc.header
            log.info("kafka %s: api key %d version %d not supported (client %r); answering UNSUPPORTED_VERSION",
                     peer, h.api_key, h.api_version, h.client_id)
            conn.write(self._unsupported_answer(h.api_key, h.correlation_id))
            await conn.drain()
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
            conn.write((6).to_bytes(4, "big") + cid.to_bytes(4, "big", signed=True)
                       + int(ErrorCode.INVALID_REQUEST).to_bytes(2, "big"))
            await conn.drain()
            return False
        outcome = "NONE"
        result: Any = None
        observe = self._observers.get(header.api_key)
        try:
            result = self.handlers.handle(header, body)
            if inspect.isawaitable(result):
                result = await result
            if header.api_key == ApiKey.PRODUCE:
                # The log has copied the batches: the frame's buffer can take the next request.
                conn.frames.recycle(frame)
            if result is NoResponse.NONE:
                return True
            if result is NoResponse.CLOSE:
                return False
            parts = encode_response(header.api_key, header.api_version, header.correlation_id, result)
            # Counted before the answer leaves: a client that reads its answer, then the
            # metrics, finds it there.
            if observe is not None:
                observe(outcome, time.perf_counter() - started)
                observe = None
            await self._send(conn, parts)
        except (ConnectionError, OSError):
            outcome = "NETWORK_EXCEPTION"
            raise
        finally:
            if isinstance(result, dict):
                for r in result.pop("_reads", ()):
                    release_read(r)
            if observe is not None:
                observe(outcome, time.perf_counter() - started)
        return True

    async def _send(self, conn: _Connection, parts: list[Any]) -> None:
        if len(parts) == 1:
            conn.write(parts[0])
            await conn.drain()
            return
        for part in parts:
            if isinstance(part, bytes):
                if part:
                    conn.write(part)
                continue
            for chunk in part.chunks:
                if conn.lost or conn.transport is None:
                    raise ConnectionResetError("connection closed")
                sent = await send_file_range(conn.transport, chunk.fd, chunk.position, chunk.size)
                if sent != chunk.size:
                    raise ConnectionResetError(f"segment file ended {chunk.size - sent} bytes early during sendfile")
        await conn.drain()

    def _unsupported_answer(self, api_key: int, correlation_id: int) -> bytes:
        if api_key == ApiKey.API_VERSIONS:
            parts = encode_response(ApiKey.API_VERSIONS, 0, correlation_id, self.handlers.api_versions_body(
                int(ErrorCode.UNSUPPORTED_VERSION)))
            return b"".join(parts)
        # No schema can be trusted for a version the client should not have sent: the answer
        # is the correlation id and the error code, then the connection is closed.
        body = int(ErrorCode.UNSUPPORTED_VERSION).to_bytes(2, "big", signed=True)
        return (4 + len(body)).to_bytes(4, "big") + correlation_id.to_bytes(4, "big", signed=True) + body
