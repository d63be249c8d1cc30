"""The binary data port (``--fetch-port``): FETCH with long-poll answered by ``sendfile``, and
PRODUCE. The bytes are specified in docs/protocol.md and built/parsed by
``annal.protocol.framing``; this module only moves them.

Each connection is an asyncio ``BufferedProtocol`` whose transport receives straight into the
frame being assembled (``FrameReader.get_buffer``), so a PRODUCE request's batches are appended
from the very buffer the kernel filled, and the socket stays registered with epoll for its whole
life. Requests are answered in order (pipelining): ``_pump`` takes the next complete frame when
the connection is not busy (a FETCH being answered, or too many produces on the pool).

The common case is handled in plain callbacks, with no task or future per request: a FETCH that
can be answered from fixed fields alone (errors, no new data) is answered synchronously, and a
long-poll is a ``_LongPoll`` object holding one timer and a wake-up registered with the broker
for the partitions it named (any append to one of them calls it, from whatever thread
appended). An idle long-poll costs a timer and a few dict entries, no CPU; when the timer fires
with no append since the last read, that (empty) read is the answer. Only answers that move
bytes run as tasks: a FETCH with records (the fixed fields, then the batches with
``os.sendfile`` straight from the segment file (``sendfile.py``), so record bytes never pass
through Python).

The loop does no log work: every PRODUCE is handed, partition by partition, to the
request-handler pool (``request_handlers.py``, ``num_io_threads`` threads), which validates,
appends, rolls segments and fdatasyncs, coalescing the appends queued for one partition; the
answer is built back on the loop (``loop_mailbox.py``: one wake-up of the loop for every answer
finished while it was busy). Up to ``MAX_PRODUCES_IN_FLIGHT``
produces of one connection are on the pool at once, answered in request order; a FETCH behind
them waits for them (answers leave in request order). A FETCH is read on the loop (index
lookups and the batches' length fields) unless its range holds bytes of an older segment not yet
CRC-checked since the broker started: that first read checks every batch, reading the range
from disk when it is not cached, so it runs on a worker thread (``_read_off_loop``) and the
answer continues on the loop.

Request memory is bounded broker-wide (``queued_max_request_bytes``, ``request_memory.py``,
shared with the Kafka listener): the bytes of frames being read, complete but not yet taken,
or being answered, over all connections. At the bound, a connection whose next read would need
new memory reads into a small hold buffer and is muted (reading paused); answers that free
memory unmute connections, oldest first.

Failure handling: a frame whose length prefix is out of bounds, or that does not parse, is
answered with INVALID_REQUEST and the connection closed; a peer that stops in the middle of a
frame is disconnected after ``request_timeout_ms``; a peer that disconnects mid-``sendfile`` only
ends its own connection. Nothing a client sends can take the broker down.

Thread-safety: everything here runs on the event loop thread, except ``_LongPoll.wake`` and the
produce completions, which hop onto the loop through its ``LoopMailbox`` from other threads.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections import deque
from typing import Any, Callable

from annal.errors import (
    AnnalError,
    BrokerShuttingDownError,
    InvalidRequestError,
    NetworkError,
    NotLeaderForPartitionError,
    OffsetOutOfRangeError,
    StorageError,
    UnknownServerError,
    for_code,
)
from annal.protocol import framing as fr
from annal.broker.server.broker import Broker, read_result_size, release_read
from annal.broker.server.loop_mailbox import LoopMailbox
from annal.broker.server.request_handlers import RequestHandlerPool
from annal.broker.server.request_memory import DEFAULT_BOUND, RequestMemory
from annal.broker.server.sendfile import send_file_range
from annal.broker.storage import NeedsVerification

__all__ = ["DataPortServer"]

log = logging.getLogger("annal.data_port")

ReadResults = list[tuple[fr.FetchPartition, Any, "AnnalError | None"]]


class _Connection(asyncio.BufferedProtocol):
    """One data port connection. The transport reads straight into the ``FrameReader``'s
    buffers; every event (bytes in, EOF, write buffer drained, an answer finished) calls
    ``DataPortServer._pump``, which answers the next frame when the connection is not busy.
    Reading pauses while unanswered frames pile up (a client pipelining faster than it is
    served) and resumes as they are taken."""

    # Pause reading while this much is received but not yet answered.
    MAX_PENDING_BYTES = 16 * 1024 * 1024
    MAX_PENDING_FRAMES = 64
    SEND_BUFFER_BYTES = 4 * 1024 * 1024

    def __init__(self, server: "DataPortServer") -> None:
        self.server = server
        self.reader = fr.FrameReader(max_frame_bytes=server.max_request_bytes, min_frame_bytes=fr.REQUEST_HEADER_SIZE)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.busy = False  # an answer is in progress (long-poll, sendfile, produce)
        self.pumping = False
        self.closed = False
        self.lost = False
        self.timer: asyncio.TimerHandle | None = None  # read timeout of a partial frame
        self.poll: _LongPoll | None = None
        self.task: asyncio.Task[None] | None = None
        self.write_paused = False
        self.read_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        # The broker-wide request memory bound (DataPortServer docstring): bytes counted for
        # this connection, whether it is muted, bytes it read into the hold buffer meanwhile.
        self.mem = 0
        self.inflight = 0  # bytes of the fetch request being answered
        # PRODUCE requests handed to the request-handler pool, answered in this order; a FETCH
        # that arrives behind them waits in ``deferred`` (answers go out in request order).
        self.produces: deque[_Produce] = deque()
        self.produce_bytes = 0
        self.deferred: tuple[fr.FetchRequest | fr.EpochRequest, memoryview] | None = None
        self.muted = False
        self.holding = False
        self.held = bytearray()

    # -- protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # A bigger send buffer means fewer wake-ups per sendfile'd megabyte (the kernel
            # doubles the value; autotuning stops at tcp_wmem's maximum, 4 MiB by default).
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.SEND_BUFFER_BYTES)
                # Likewise on the way in: a large PRODUCE arrives in fewer, larger reads.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.SEND_BUFFER_BYTES)
                # A FETCH answer is written as its fixed fields, then sendfile: without this,
                # Nagle holds the sendfile'd batch until the client ACKs the fields, and a
                # delayed ACK makes that ~40 ms per answer.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.server._connection_made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        memory = self.server.memory
        if memory.full and self.reader.next_read_allocates:
            # Over the broker-wide bound, and these bytes would need new memory: take at most
            # a small hold buffer's worth, then stop reading (buffer_updated) until memory frees.
            self.holding = True
            return memory.hold_view
        self.holding = False
        return self.reader.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        if self.holding:
            self.holding = False
            self.held += self.server.memory.hold_view[:nbytes]
            self.server._mute(self)
            return
        r = self.reader
        r.buffer_updated(nbytes)
        self.server._account(self)
        if not r.pending_frames and r.in_frame:
            # The middle of a frame (a large PRODUCE arrives in many reads): nothing to answer
            # yet; only make sure a stalled frame will time out.
            if self.timer is None and not self.busy and not self.closed:
                self.server._arm_read_timeout(self)
            return
        if r.pending_frames >= self.MAX_PENDING_FRAMES or r.pending_bytes >= self.MAX_PENDING_BYTES:
            self.pause_reading()
        self.server._pump(self)

    def eof_received(self) -> bool:
        self.reader.receive_data(b"")
        self.server._pump(self)
        return True  # keep the write side open: requests received before the EOF get answers

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.closed = True
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(ConnectionResetError("connection lost"))
        self.server._connection_lost(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        self.server._pump(self)

    # -- helpers

    def pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.muted:
            return  # the memory bound resumes it (unmute)
        if self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    def unmute(self) -> None:
        """Request memory fell below the bound (``RequestMemory``): take back the bytes read
        into the hold buffer, read again, and answer what is complete."""
        self.muted = False
        if self.closed:
            return
        held, self.held = bytes(self.held), bytearray()
        server = self.server
        if held:
            self.reader.receive_data(held)
            server._account(self)
        self.resume_reading()
        server._pump(self)

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise ConnectionResetError("connection closed")
        self.transport.write(data)

    async def drain(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.closed:
            raise ConnectionResetError("connection closed")
        if self.write_paused:
            self._drain_waiter = loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    def close(self) -> None:
        """Close after whatever is already written has been sent."""
        if not self.closed:
            self.closed = True
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            if self.transport is not None:
                self.transport.close()


class _Produce:
    """A PRODUCE request on the request-handler pool; ``results`` is set (on the loop) once
    every partition has its answer."""

    __slots__ = ("req", "frame", "started", "results")

    def __init__(self, req: fr.ProduceRequest, frame: memoryview, started: float) -> None:
        self.req = req
        self.frame = frame
        self.started = started
        self.results: list[fr.ProducePartitionResult] | None = None


class _LongPoll:
    """A FETCH waiting for ``min_bytes``: one timer for ``max_wait_ms`` and one wake-up per
    append to a named partition. Lives on the event loop; ``wake`` may be called from any
    thread."""

    __slots__ = ("server", "conn", "req", "started", "keys", "timer", "results", "woken", "expired",
                 "done", "scheduled", "counted", "reading", "_wake")

    def __init__(self, server: "DataPortServer", conn: _Connection, req: fr.FetchRequest, started: float) -> None:
        self.server = server
        self.conn = conn
        self.req = req
        self.started = started
        self.keys = [(p.topic, p.partition) for p in req.partitions]
        self.timer: asyncio.TimerHandle | None = None
        self.results: ReadResults | None = None  # an empty read kept for the expiry answer
        self.woken = False
        self.expired = False
        self.done = False
        self.scheduled = False
        self.counted = False
        self.reading = False  # a read is on a worker thread (bytes to CRC-check first)
        self._wake = self.wake  # one bound method: the same object for add and remove

    def start(self) -> None:
        server = self.server
        loop = server._loop
        assert loop is not None
        self.conn.poll = self
        # Registered before the first read: an append after that read always wakes us.
        server.broker.add_waiter(self.keys, self._wake)
        self.timer = loop.call_later(self.req.max_wait_ms / 1000, self.expire)
        self.check()

    def wake(self) -> None:
        """Called by the broker after an append to one of our partitions (any thread)."""
        self.woken = True
        server = self.server
        loop = server._loop
        if loop is None:
            return
        if threading.get_ident() == server._loop_thread:
            if not self.scheduled and not self.done:
                self.scheduled = True
                loop.call_soon(self.check)
        elif server._mailbox is not None:
            server._mailbox.post(self._wake_on_loop)

    def _wake_on_loop(self) -> None:
        if not self.scheduled and not self.done:
            self.scheduled = True
            self.check()

    def expire(self) -> None:
        self.expired = True
        if self.done or self.reading:
            return  # the read on the worker answers when it is back (``expired`` is set)
        if self.results is not None and not self.woken:
            results, self.results = self.results, None
            self.finish(results)  # no append since the last read: that empty read stands
        else:
            self.check()

    def check(self) -> None:
        self.scheduled = False
        if self.done or self.reading:
            return
        server = self.server
        self.woken = False
        self.results = None
        results = server._read_all(self.req)
        if results is None:
            self.reading = True
            server._read_off_loop(self.req, self._read_back)
            return
        self._checked(results)

    def _read_back(self, results: ReadResults) -> None:
        """The read that ran on a worker thread, back on the loop."""
        self.reading = False
        if self.done:  # cancelled meanwhile: the connection went away
            for _, r, _ in results:
                release_read(r)
            return
        self._checked(results)

    def _checked(self, results: ReadResults) -> None:
        server = self.server
        if (self.expired or server.broker.shutting_down or server._closing
                or any(err is not None for _, _, err in results)):
            self.finish(results)
            return
        available = sum(read_result_size(r) for _, r, _ in results if r is not None)
        if available >= self.req.min_bytes:
            self.finish(results)
            return
        if available:
            for _, r, _ in results:  # do not pin segment handles while waiting
                release_read(r)
        else:
            self.results = results  # empty reads hold no handles
        if not self.counted:
            self.counted = True
            server._long_polls += 1
        if self.woken and not self.scheduled:  # an append while the read was on a worker
            self.scheduled = True
            assert server._loop is not None
            server._loop.call_soon(self.check)

    def _stop(self) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        self.server.broker.remove_waiter(self.keys, self._wake)
        if self.counted:
            self.counted = False
            self.server._long_polls -= 1
        if self.conn.poll is self:
            self.conn.poll = None

    def finish(self, results: ReadResults) -> None:
        self._stop()
        self.server._answer_then_free(self.conn, self.req, results, self.started)

    def cancel(self) -> None:
        """The connection went away: drop the poll without answering."""
        if not self.done:
            self._stop()
            self.results = None


class DataPortServer:
    """Serves the data port on one event loop. Not thread-safe: call its methods from the loop.

    Request memory is bounded broker-wide by ``memory`` (``request_memory.py``; one is made
    from ``queued_max_request_bytes`` unless given, to share with the Kafka listener).
    """

    MAX_PRODUCES_IN_FLIGHT = 8  # per connection, on the request-handler pool

    def __init__(
        self,
        broker: Broker,
        host: str,
        port: int,
        *,
        request_timeout_ms: int,
        max_request_bytes: int,
        fetch_max_bytes: int = 64 * 1024 * 1024,
        queued_max_request_bytes: int = DEFAULT_BOUND,
        num_io_threads: int = 2,
        queued_max_requests: int = 500,
        memory: RequestMemory | None = None,
    ) -> None:
        self.broker = broker
        self.handlers = RequestHandlerPool(broker, num_io_threads, queued_max_requests)
        # Kafka's queued.max.request.bytes (request_memory.py).
        self.memory = memory if memory is not None else RequestMemory(queued_max_request_bytes, max_request_bytes)
        self.host = host
        self.port = port
        self.request_timeout = request_timeout_ms / 1000
        self.max_request_bytes = max_request_bytes
        self.fetch_max_bytes = fetch_max_bytes
        self._lsock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._mailbox: LoopMailbox | None = None  # calls from worker threads onto the loop
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[_Connection] = set()
        self._all_closed: asyncio.Event | None = None
        self._closing = False
        self._long_polls = 0  # fetches waiting now (event loop thread only)
        metrics = broker.metrics
        metrics.long_poll_sources.append(lambda: self._long_polls)
        metrics.connection_sources.append(lambda: len(self._conns))
        metrics.watch_request_memory(self.memory)
        self._observe_fetch = metrics.request_observer("Fetch", "data")
        self._observe_produce = metrics.request_observer("Produce", "data")

    # ------------------------------------------------------------------ lifecycle

    def bind(self) -> int:
        """Create the listening socket; returns the bound port (useful with port 0)."""
        lsock = socket.create_server((self.host, self.port), backlog=1024, reuse_port=False)
        lsock.setblocking(False)
        self._lsock = lsock
        self.port = lsock.getsockname()[1]
        return self.port

    async def start(self) -> None:
        """Start accepting connections (after ``bind``)."""
        assert self._lsock is not None, "bind() first"
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._mailbox = LoopMailbox(self._loop)
        self._all_closed = asyncio.Event()
        self._server = await self._loop.create_server(
            lambda: _Connection(self), sock=self._lsock, backlog=1024, start_serving=True
        )

    async def close(self, timeout: float = 10.0) -> None:
        """Stop accepting, close idle connections, let answers in progress finish (up to
        ``timeout`` seconds; long-polls are woken by ``Broker.begin_shutdown``), then close the
        rest."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            if not conn.busy and not conn.produces:
                conn.close()
            elif conn.poll is not None and self._loop is not None:
                self._loop.call_soon(conn.poll.check)
        if self._conns and self._all_closed is not None:
            try:
                await asyncio.wait_for(self._all_closed.wait(), timeout)
            except asyncio.TimeoutError:
                log.warning("data port: %d connection(s) still busy after %.0f s; closing them",
                            len(self._conns), timeout)
        for conn in list(self._conns):
            if conn.task is not None:
                conn.task.cancel()
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.get_running_loop().run_in_executor(None, self.handlers.close)

    # ------------------------------------------------------------------ connections

    def _connection_made(self, conn: _Connection) -> None:
        if self._closing:
            conn.close()
            return
        self._conns.add(conn)

    # ------------------------------------------------------------------ request memory bound

    def _account(self, conn: _Connection) -> None:
        """Bring ``conn``'s share of the request memory up to date; unmute others if it fell."""
        if not conn.busy:
            conn.inflight = 0
        if conn.lost:
            self.memory.set(conn, 0)
            return
        memory = self.memory
        memory.set(conn, conn.reader.allocated_bytes + conn.inflight + conn.produce_bytes)
        if memory.full:
            conn.reader.drop_spares()
            memory.set(conn, conn.reader.allocated_bytes + conn.inflight + conn.produce_bytes)

    def _mute(self, conn: _Connection) -> None:
        if not conn.muted and not conn.closed:
            conn.muted = True
            self.memory.mute(conn)
            if not conn.read_paused and conn.transport is not None:
                conn.read_paused = True
                conn.transport.pause_reading()

    def _connection_lost(self, conn: _Connection) -> None:
        self.memory.forget(conn)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if conn.poll is not None:
            conn.poll.cancel()
        self._conns.discard(conn)
        if self._closing and not self._conns and self._all_closed is not None:
            self._all_closed.set()

    def _request_done(self, conn: _Connection) -> None:
        """The answer task of ``conn`` ended (answered, failed or cancelled): the connection
        is free again, so answer its next complete frame, if any."""
        conn.task = None
        conn.busy = False
        self._pump(conn)

    def _pump(self, conn: _Connection) -> None:
        """Answer complete frames in order while the connection is free. Re-entrant calls
        (an answer finishing synchronously inside the loop below) return at once: the outer
        loop carries on."""
        if conn.pumping:
            return
        conn.pumping = True
        try:
            reader = conn.reader
            while not conn.busy and not conn.closed and not conn.write_paused:
                try:
                    frame = reader.next_frame()
                except InvalidRequestError as err:  # bad length prefix: correlation id unknown
                    log.info("data port %s: %s; closing the connection", conn.peer, err.message)
                    conn.write(fr.encode_error_response(-1, err.code))
                    conn.close()
                    return
                except NetworkError as err:  # EOF in the middle of a frame
                    log.info("data port %s: %s", conn.peer, err.message)
                    conn.close()
                    return
                if frame is None:
                    if reader.eof or self._closing:
                        conn.close()
                    elif reader.in_frame:
                        if conn.timer is None:
                            self._arm_read_timeout(conn)
                        conn.resume_reading()
                    else:
                        conn.resume_reading()
                    return
                if conn.timer is not None and not reader.in_frame:
                    conn.timer.cancel()
                    conn.timer = None
                if conn.read_paused and reader.pending_frames < _Connection.MAX_PENDING_FRAMES // 2 \
                        and reader.pending_bytes < _Connection.MAX_PENDING_BYTES // 2:
                    conn.resume_reading()
                if self._closing:
                    conn.close()
                    return
                self._dispatch(conn, frame)
        except (ConnectionError, OSError) as err:
            log.info("data port %s: connection lost: %s", conn.peer, err)
            conn.close()
        except Exception:
            log.exception("data port %s: unexpected error; closing the connection", conn.peer)
            conn.close()
        finally:
            conn.pumping = False
            self._account(conn)

    def _dispatch(self, conn: _Connection, frame: memoryview) -> None:
        try:
            req = fr.decode_request(frame)
        except InvalidRequestError as err:
            cid = int(err.details.get("correlation_id", -1))
            log.info("data port %s: bad request (correlation id %d): %s; closing the connection",
                     conn.peer, cid, err.message)
            conn.write(fr.encode_error_response(cid, err.code))
            conn.close()
            return
        if isinstance(req, (fr.FetchRequest, fr.EpochRequest)):
            conn.busy = True
            if conn.produces:  # answered after the produces before it
                conn.deferred = (req, frame)
                return
            self._start_fetch(conn, req, frame)
        else:
            self._produce_on_workers(conn, req, frame)
            # Up to MAX_PRODUCES_IN_FLIGHT produces of one connection are on the pool at once
            # (a pipelining producer keeps the workers busy, and their appends coalesce).
            conn.busy = len(conn.produces) >= self.MAX_PRODUCES_IN_FLIGHT

    def _start_fetch(self, conn: _Connection, req: fr.FetchRequest | fr.EpochRequest, frame: memoryview) -> None:
        conn.inflight = len(frame)
        if isinstance(req, fr.EpochRequest):
            conn.write(fr.encode_epoch_response(self._offsets_for_leader_epoch(req)))
            conn.busy = False
            return
        started = time.perf_counter()
        if req.max_wait_ms > 0 and req.min_bytes > 0 and req.partitions and not self.broker.shutting_down:
            _LongPoll(self, conn, req, started).start()
            return
        results = self._read_all(req)
        if results is None:
            self._read_off_loop(req, lambda results: self._fetch_read_back(conn, req, results, started))
        elif self._answer_fetch(conn, req, results, started):
            conn.busy = False

    def _fetch_read_back(self, conn: _Connection, req: fr.FetchRequest, results: ReadResults, started: float) -> None:
        """A FETCH read on a worker thread (``_read_off_loop``), back on the loop: answer it."""
        if conn.closed:
            for _, r, _ in results:
                release_read(r)
            return
        self._answer_then_free(conn, req, results, started)

    def _answer_then_free(self, conn: _Connection, req: fr.FetchRequest, results: ReadResults, started: float) -> None:
        """Answer a FETCH that was not answered where it arrived (a long-poll, a read on a
        worker); when the answer is complete, take the connection's next request."""
        try:
            done = self._answer_fetch(conn, req, results, started)
        except (ConnectionError, OSError) as err:
            log.info("data port %s: connection lost before a fetch answer: %s", conn.peer, err)
            conn.close()
            return
        if done:
            conn.busy = False
            self._pump(conn)

    def _arm_read_timeout(self, conn: _Connection) -> None:
        if self._loop is not None:
            conn.timer = self._loop.call_later(self.request_timeout, self._on_read_timeout, conn)

    def _on_read_timeout(self, conn: _Connection) -> None:
        conn.timer = None
        # A connection muted in the middle of a frame is cut too: several large frames that
        # each hold part of the request memory and all need more would otherwise wait for
        # each other for ever; cutting one frees its share.
        if not conn.busy and conn.reader.in_frame and not conn.closed:
            log.info(
                "data port %s: no complete request within request_timeout_ms=%d (%d bytes of a frame received); "
                "closing the connection",
                conn.peer, int(self.request_timeout * 1000), conn.reader.buffered_bytes,
            )
            conn.close()

    # ------------------------------------------------------------------ FETCH

    def _offsets_for_leader_epoch(self, req: fr.EpochRequest) -> fr.EpochResponse:
        """A follower asks where its latest leader epoch ends in this leader's log (KIP-101);
        answered from the epoch cache in memory, on the loop."""
        out = []
        for p in req.partitions:
            try:
                epoch, end = self.broker.offset_for_leader_epoch(p.topic, p.partition, p.leader_epoch)
                out.append(fr.EpochPartitionResult(p.topic, p.partition, 0, epoch, end))
            except AnnalError as err:
                out.append(fr.EpochPartitionResult(p.topic, p.partition, err.code))
        return fr.EpochResponse(req.correlation_id, 0, out)

    def _read_all(self, req: fr.FetchRequest, verify: bool = False) -> ReadResults | None:
        """Every partition's read. On the loop (``verify=False``): None, holding nothing, when
        one of them has bytes to CRC-check first; ``_read_off_loop`` then reads them all on a
        worker thread."""
        out: ReadResults = []
        broker = self.broker
        cap = self.fetch_max_bytes
        for p in req.partitions:
            try:
                out.append((p, broker.read(p.topic, p.partition, p.offset, min(p.max_bytes, cap), req.replica_id,
                                           verify=verify), None))
            except AnnalError as err:
                out.append((p, None, err))
            except NeedsVerification:
                for _, r, _ in out:
                    release_read(r)
                return None
        return out

    def _read_off_loop(self, req: fr.FetchRequest, then: Callable[[ReadResults], None]) -> None:
        """Read ``req``'s partitions on a worker thread, CRC-checking what was never checked
        since start-up, and call ``then(results)`` back on the loop."""
        loop = self._loop
        assert loop is not None
        self.broker.metrics.first_reads.labels("data").inc()

        def back(fut: "asyncio.Future[ReadResults | None]") -> None:
            try:
                results = fut.result()
            except Exception as err:  # a bug: answer the partitions rather than leave the fetch hanging
                log.exception("data port: a fetch read on a worker failed")
                failure = UnknownServerError(f"read failed: {err!r}")
                results = [(p, None, failure) for p in req.partitions]
            assert results is not None
            then(results)

        loop.run_in_executor(None, self._read_all, req, True).add_done_callback(back)

    def _answer_fetch(self, conn: _Connection, req: fr.FetchRequest, results: ReadResults, started: float) -> bool:
        """Send the answer; True when it is complete (no records to send), False when a task
        sends the records and will free the connection when done."""
        heads: list[bytes] = []
        sizes: list[int] = []
        budget = self.fetch_max_bytes
        have_data = False
        for i, (p, r, err) in enumerate(results):
            if err is not None:
                hw = lso = -1
                if isinstance(err, OffsetOutOfRangeError):
                    hw = err.log_end_offset if err.log_end_offset is not None else -1
                    lso = err.log_start_offset if err.log_start_offset is not None else -1
                heads.append(fr.encode_fetch_partition_head(p.topic, p.partition, err.code, err.message, hw, lso, 0))
                sizes.append(0)
                if not isinstance(err, (NotLeaderForPartitionError, OffsetOutOfRangeError)) and not err.retriable:
                    log.info("data port %s: fetch %s-%d: %s", conn.peer, p.topic[:100], p.partition, err.message)
                continue
            size = read_result_size(r)
            if have_data and size > budget:
                # Over the response budget: answer this partition empty (no error); the
                # consumer asks again. The first partition with data is always sent whole.
                release_read(r)
                results[i] = (p, None, None)
                size = 0
            budget -= size
            have_data = have_data or size > 0
            heads.append(fr.encode_fetch_partition_head(p.topic, p.partition, 0, "", r.high_watermark,
                                                        r.log_start_offset, size))
            sizes.append(size)
        body = sum(len(h) for h in heads) + sum(sizes)
        head = fr.encode_fetch_response_head(req.correlation_id, body, len(heads))
        if not have_data:
            try:
                conn.write(head + b"".join(heads))
            finally:
                for _, r, _ in results:
                    release_read(r)
                self._observe_fetch("NONE", time.perf_counter() - started)
            return True
        assert self._loop is not None
        conn.task = self._loop.create_task(self._send_records(conn, head, heads, sizes, results, started))
        return False

    async def _send_records(self, conn: _Connection, head: bytes, heads: list[bytes], sizes: list[int],
                            results: ReadResults, started: float) -> None:
        loop = self._loop
        assert loop is not None
        outcome = "NONE"
        try:
            pending = [head]
            for (p, r, _), phead, size in zip(results, heads, sizes):
                pending.append(phead)
                if size:
                    conn.write(b"".join(pending))
                    pending = []
                    for chunk in r.chunks:
                        await self._sendfile(conn, chunk.fd, chunk.position, chunk.size)
                    self.broker.metrics.record_fetch(p.topic, size)
            if pending:
                conn.write(b"".join(pending))
            await conn.drain(loop)
        except (ConnectionError, TimeoutError, OSError) as err:
            outcome = "NETWORK_EXCEPTION"
            log.info("data port %s: connection lost while sending records: %s", conn.peer, err)
            conn.close()
        except StorageError as err:
            outcome = err.reason
            log.warning("data port %s: %s; closing the connection", conn.peer, err.message)
            conn.close()
        except asyncio.CancelledError:
            outcome = "NETWORK_EXCEPTION"
            conn.close()
            raise
        except Exception:
            outcome = "UNKNOWN_SERVER_ERROR"
            log.exception("data port %s: sending a fetch answer failed", conn.peer)
            conn.close()
        finally:
            for _, r, _ in results:
                release_read(r)
            self._observe_fetch(outcome, time.perf_counter() - started)
            self._request_done(conn)

    async def _sendfile(self, conn: _Connection, fd: int, offset: int, count: int) -> None:
        """Send ``count`` bytes of file ``fd`` from ``offset`` (``sendfile.py``)."""
        if conn.closed or conn.transport is None:
            raise ConnectionResetError("connection closed")
        sent = await send_file_range(conn.transport, fd, offset, count)
        if sent != count:
            # The file is shorter than the index said: this frame can no longer be completed,
            # so the connection must be dropped.
            raise StorageError(f"segment file ended {count - sent} bytes early during sendfile")

    # ------------------------------------------------------------------ PRODUCE

    def _produce_answer(self, conn: _Connection, req: fr.ProduceRequest,
                        results: list[fr.ProducePartitionResult]) -> tuple[str, bytes | None]:
        """The outcome label for the metrics and the answer to send (None for acks=0; with
        acks=0 and a refused partition the connection is closed instead, as Kafka does, so that
        the producer notices). Refusals are logged."""
        outcome = self._produce_outcome(conn, results)
        if req.acks == 0:
            if outcome != "NONE":
                log.info("data port %s: closing the acks=0 connection after a refused produce", conn.peer)
                conn.close()
            return outcome, None
        return outcome, fr.encode_produce_response(fr.ProduceResponse(req.correlation_id, 0, results))

    def _produce_outcome(self, conn: _Connection, results: list[fr.ProducePartitionResult]) -> str:
        """The metrics label of an answered produce (its first refusal's protocol name, or
        NONE); refusals other than routine ones are logged."""
        outcome = "NONE"
        errors = [r for r in results if r.error_code]
        if errors:
            outcome = for_code(errors[0].error_code).reason  # the protocol name, as on gRPC
            for r in errors:
                # Unknown partition / not leader are routine; storage errors (a full disk) are
                # logged by the broker's StorageHealth, once per episode.
                if r.error_code not in (3, 6, StorageError.code):
                    log.info("data port %s: produce to %s-%d refused: %s", conn.peer, r.topic[:100],
                             r.partition, r.error_message)
        return outcome

    def _produce_on_workers(self, conn: _Connection, req: fr.ProduceRequest, frame: memoryview) -> None:
        """Hand each partition of the request to the request-handler pool (the loop does no
        log work: validation, writes, rolls and fdatasyncs run there); the answer is built on
        the loop once every partition has its result, and sent in request order."""
        entry = _Produce(req, frame, time.perf_counter())
        conn.produces.append(entry)
        conn.produce_bytes += len(frame)
        parts = req.partitions
        if not parts:
            self._produce_answered(conn, entry, [])
            return
        results: list[Any] = [None] * len(parts)
        left = [len(parts)]
        lock = threading.Lock()
        mailbox = self._mailbox
        assert mailbox is not None

        def done_at(i: int) -> Any:
            def done(result: Any) -> None:  # on a worker thread
                results[i] = result
                with lock:
                    left[0] -= 1
                    last = left[0] == 0
                if last:
                    mailbox.post(self._produce_answered, conn, entry, results)
            return done

        for i, p in enumerate(parts):
            try:
                self.handlers.submit(p.topic, p.partition, p.records, req.acks, done_at(i), req.timeout_ms)
            except RuntimeError as err:  # the pool is closed: shutting down
                done_at(i)(BrokerShuttingDownError(str(err)))

    def _produce_answered(self, conn: _Connection, entry: _Produce, appended: list[Any]) -> None:
        out = []
        for p, r in zip(entry.req.partitions, appended):
            if isinstance(r, AnnalError):
                leader = r.details.get("leader") if isinstance(r, NotLeaderForPartitionError) else None
                out.append(fr.ProducePartitionResult(
                    p.topic, p.partition, r.code, r.message, -1, -1,
                    getattr(leader, "broker_id", -1) if leader is not None else -1))
            else:
                base = r.base_offsets[0] if r.base_offsets else -1
                out.append(fr.ProducePartitionResult(p.topic, p.partition, 0, "", base, r.log_end_offset, -1))
        entry.results = out
        # Answers leave in request order: send every finished one at the head.
        while conn.produces and conn.produces[0].results is not None:
            e = conn.produces.popleft()
            conn.produce_bytes -= len(e.frame)
            outcome, answer = "NONE", None
            try:
                # The log has copied the batches into its file: the frame's buffer can take
                # the next large request (saves allocating and zeroing it).
                conn.reader.recycle(e.frame)
                if not conn.closed:
                    outcome, answer = self._produce_answer(conn, e.req, e.results)  # type: ignore[arg-type]
            except Exception:
                outcome = "UNKNOWN_SERVER_ERROR"
                log.exception("data port %s: produce failed", conn.peer)
                conn.close()
            # Counted before the answer leaves: a client that reads its answer, then the
            # metrics, finds it there.
            self._observe_produce(outcome, time.perf_counter() - e.started)
            if answer is not None:
                try:
                    conn.write(answer)
                except (ConnectionError, OSError) as err:
                    log.info("data port %s: connection lost before a produce answer: %s", conn.peer, err)
                    conn.close()
        if conn.closed:
            self._account(conn)
            return
        if conn.deferred is not None:
            if not conn.produces:
                req, frame = conn.deferred
                conn.deferred = None
                self._start_fetch(conn, req, frame)
        elif len(conn.produces) < self.MAX_PRODUCES_IN_FLIGHT:
            conn.busy = False
        if not conn.busy:
            self._pump(conn)
        else:
            self._account(conn)
