"""Sans-I/O framing of Annal's binary data port (``--fetch-port``): FETCH and PRODUCE.

Nothing here touches a socket. Bytes go in through ``FrameReader.receive_data`` (or straight
into the reader's buffer with ``get_buffer``/``buffer_updated``, the shape of asyncio's
``BufferedProtocol`` and ``socket.recv_into``) and whole frames come out of ``next_frame``; the
``encode_*`` functions turn values into bytes and the ``decode_*`` functions turn one frame back
into values. The broker's data port (``annal.broker.server.data_port``) and the client SDK's network
layer both drive this module, the way h11 is driven by its servers and clients.

Wire layout (all integers big-endian; ``string`` = int16 length + UTF-8 bytes; the full text is
in docs/protocol.md)::

    frame            length int32 (bytes that follow) | payload
    request payload  api_key int16 | api_version int16 | correlation_id int32 | body
    response payload correlation_id int32 | error_code int16 | body (empty when error_code != 0)

    FETCH request    max_wait_ms int32 | min_bytes int32 | partition_count int32 |
                     [topic string | partition int32 | offset int64 | max_bytes int32]*
    FETCH request v1 replica_id int32 | then as v0 (a follower's fetch: replica_id is its
                     broker id, and the leader reads past the high watermark for it)
    FETCH response   partition_count int32 |
                     [topic string | partition int32 | error_code int16 | error_message string |
                      high_watermark int64 | log_start_offset int64 | records_bytes int32 |
                      records]*
    PRODUCE request  acks int16 | timeout_ms int32 | partition_count int32 |
                     [topic string | partition int32 | records_bytes int32 | records]*
    PRODUCE response partition_count int32 |
                     [topic string | partition int32 | error_code int16 | error_message string |
                      base_offset int64 | log_end_offset int64 | leader_id int32]*
    OFFSET_FOR_LEADER_EPOCH request   partition_count int32 |
                     [topic string | partition int32 | leader_epoch int32]*
    OFFSET_FOR_LEADER_EPOCH response  partition_count int32 |
                     [topic string | partition int32 | error_code int16 | leader_epoch int32 |
                      end_offset int64]*

Copies: a frame is received into its own ``bytearray`` (``get_buffer`` hands out that very
buffer once the length prefix is known, so ``recv_into`` fills it with no copy at all), and the
decoders return the record bytes of a PRODUCE request or a FETCH response as ``memoryview``
slices of that frame. A FETCH response is built by the broker as fixed fields
(``encode_fetch_response_head`` + ``encode_fetch_partition_head``) followed by the record bytes
it sends with ``sendfile``; ``encode_fetch_response`` builds the same bytes in memory.

Errors: a malformed request raises ``annal.errors.InvalidRequestError`` (the broker answers it
with that code), a malformed response ``annal.errors.RemoteProtocolError`` (the client drops the
connection); both carry ``correlation_id`` in ``details`` when it could be read. A
``FrameReader`` raises the class it was made with (``error_cls``). A connection closed in the
middle of a frame raises ``NetworkError``.
Thread-safety: ``FrameReader`` is not thread-safe (one per connection, used by one thread); the
functions are pure.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import NamedTuple, Sequence, Union

from annal.errors import InvalidRequestError, NetworkError, RemoteProtocolError

__all__ = [
    "API_PRODUCE",
    "API_FETCH",
    "API_OFFSET_FOR_LEADER_EPOCH",
    "EpochPartition",
    "EpochRequest",
    "EpochPartitionResult",
    "EpochResponse",
    "encode_epoch_request",
    "encode_epoch_response",
    "decode_epoch_response",
    "API_VERSION",
    "LENGTH_SIZE",
    "REQUEST_HEADER_SIZE",
    "RESPONSE_HEADER_SIZE",
    "DEFAULT_MAX_FRAME_BYTES",
    "RequestHeader",
    "FetchPartition",
    "FetchRequest",
    "ProducePartition",
    "ProduceRequest",
    "FetchPartitionResult",
    "FetchResponse",
    "ProducePartitionResult",
    "ProduceResponse",
    "Request",
    "FrameReader",
    "encode_fetch_request",
    "encode_produce_request",
    "produce_request_parts",
    "encode_fetch_response",
    "encode_fetch_response_head",
    "encode_fetch_partition_head",
    "fetch_partition_head_size",
    "encode_produce_response",
    "encode_error_response",
    "decode_request_header",
    "decode_request",
    "decode_response_header",
    "decode_fetch_response",
    "decode_produce_response",
    "encode_string",
]

API_PRODUCE = 0
API_FETCH = 1
API_OFFSET_FOR_LEADER_EPOCH = 2
API_VERSION = 0
FETCH_REPLICA_VERSION = 1  # FETCH with a replica id

LENGTH_SIZE = 4
REQUEST_HEADER_SIZE = 8  # api_key, api_version, correlation_id
RESPONSE_HEADER_SIZE = 6  # correlation_id, error_code
# Kafka's socket.request.max.bytes: the largest frame a broker accepts by default.
DEFAULT_MAX_FRAME_BYTES = 100 * 1024 * 1024
MAX_STRING_BYTES = 0x7FFF
_RECYCLE_MIN_BYTES = 64 * 1024  # smaller frames are cheap to allocate
_INITIAL_FRAME_BYTES = 4 * 1024 * 1024  # larger frames grow as their bytes arrive
_MAX_SPARES = 8  # recycled frame buffers kept per reader

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_REQ_HEADER = struct.Struct(">hhi")
_RESP_HEADER = struct.Struct(">ih")
_FRAME_RESP_HEADER = struct.Struct(">iih")  # length, correlation_id, error_code
_FETCH_REQ_HEAD = struct.Struct(">iii")  # max_wait_ms, min_bytes, partition_count
_FETCH_REQ_PART = struct.Struct(">iqi")  # partition, offset, max_bytes
_FETCH_REQ_WAIT = struct.Struct(">ii")  # max_wait_ms, min_bytes
_PRODUCE_REQ_ACKS = struct.Struct(">hi")  # acks, timeout_ms
_FETCH_RESP_PART_A = struct.Struct(">ih")  # partition, error_code
_FETCH_RESP_PART_B = struct.Struct(">qqi")  # high_watermark, log_start_offset, records_bytes
_PRODUCE_REQ_HEAD = struct.Struct(">hii")  # acks, timeout_ms, partition_count
_PRODUCE_REQ_PART = struct.Struct(">ii")  # partition, records_bytes
_PRODUCE_RESP_PART_A = struct.Struct(">ih")  # partition, error_code
_PRODUCE_RESP_PART_B = struct.Struct(">qqi")  # base_offset, log_end_offset, leader_id
_EPOCH_REQ_PART = struct.Struct(">ii")  # partition, leader_epoch
_EPOCH_RESP_PART = struct.Struct(">ihiq")  # partition, error_code, leader_epoch, end_offset

Buffer = Union[bytes, bytearray, memoryview]


# --------------------------------------------------------------------------- values
# NamedTuples rather than dataclasses: they are built per request on hot paths, and a
# NamedTuple is several times cheaper to construct than a frozen dataclass.


class RequestHeader(NamedTuple):
    api_key: int
    api_version: int
    correlation_id: int


class FetchPartition(NamedTuple):
    """One partition of a FETCH request: read from ``offset``, at most ``max_bytes``
    (but always at least one whole batch)."""

    topic: str
    partition: int
    offset: int
    max_bytes: int


class FetchRequest(NamedTuple):
    correlation_id: int
    max_wait_ms: int
    min_bytes: int
    partitions: Sequence[FetchPartition]
    replica_id: int = -1  # >= 0: a follower's fetch (FETCH v1)


class EpochPartition(NamedTuple):
    topic: str
    partition: int
    leader_epoch: int


class EpochRequest(NamedTuple):
    """OffsetsForLeaderEpoch (KIP-101): for each partition, the end offset of the largest
    leader epoch <= ``leader_epoch`` in the leader's log."""

    correlation_id: int
    partitions: Sequence[EpochPartition]


class EpochPartitionResult(NamedTuple):
    topic: str
    partition: int
    error_code: int = 0
    leader_epoch: int = -1
    end_offset: int = -1


class EpochResponse(NamedTuple):
    correlation_id: int
    error_code: int = 0
    partitions: Sequence[EpochPartitionResult] = ()


class ProducePartition(NamedTuple):
    """One partition of a PRODUCE request: ``records`` is one or more whole batches."""

    topic: str
    partition: int
    records: Buffer


class ProduceRequest(NamedTuple):
    correlation_id: int
    acks: int
    timeout_ms: int
    partitions: Sequence[ProducePartition]


class FetchPartitionResult(NamedTuple):
    """One partition of a FETCH response. ``records`` holds whole batches (a ``memoryview``
    of the received frame when decoded)."""

    topic: str
    partition: int
    error_code: int = 0
    error_message: str = ""
    high_watermark: int = -1
    log_start_offset: int = -1
    records: Buffer = b""


class FetchResponse(NamedTuple):
    correlation_id: int
    error_code: int = 0
    partitions: Sequence[FetchPartitionResult] = ()


class ProducePartitionResult(NamedTuple):
    topic: str
    partition: int
    error_code: int = 0
    error_message: str = ""
    base_offset: int = -1
    log_end_offset: int = -1
    leader_id: int = -1


class ProduceResponse(NamedTuple):
    correlation_id: int
    error_code: int = 0
    partitions: Sequence[ProducePartitionResult] = ()


Request = Union[FetchRequest, ProduceRequest, EpochRequest]


# --------------------------------------------------------------------------- frame reader


class FrameReader:
    """Splits a byte stream into frames, validating each length prefix.

    ``min_frame_bytes``/``max_frame_bytes`` bound the length prefix (a broker uses
    ``REQUEST_HEADER_SIZE`` and its ``max_request_bytes``; a client ``RESPONSE_HEADER_SIZE``
    and a bound of its own). A prefix out of bounds makes ``next_frame`` raise
    ``error_cls`` (``InvalidRequestError`` on a broker, ``RemoteProtocolError`` on a client) once
    the complete frames received before it have been handed out;
    after that the reader ignores further input (the connection must be closed).

    Two ways in: ``receive_data(data)`` copies ``data`` into the frame being assembled (an
    empty ``data`` means the peer closed the connection), or ``get_buffer()`` returns a
    writable ``memoryview`` to ``recv_into`` and ``buffer_updated(n)`` says how many bytes
    landed there. Once a length prefix is known, ``get_buffer`` returns the frame's own buffer
    so large frames are received with no copy.

    Not thread-safe: one reader per connection.
    """

    __slots__ = (
        "min_frame_bytes",
        "max_frame_bytes",
        "_prefix",
        "_frame",
        "_filled",
        "_ready",
        "_error",
        "_eof",
        "_scratch",
        "_scratch_view",
        "_frames_started",
        "_frame_len",
        "_spares",
        "error_cls",
    )

    def __init__(
        self,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        min_frame_bytes: int = REQUEST_HEADER_SIZE,
        scratch_bytes: int = 65536,
        error_cls: type[InvalidRequestError] | type[RemoteProtocolError] = InvalidRequestError,
    ) -> None:
        if min_frame_bytes < 0 or max_frame_bytes < min_frame_bytes:
            raise ValueError("need 0 <= min_frame_bytes <= max_frame_bytes")
        self.min_frame_bytes = min_frame_bytes
        self.max_frame_bytes = max_frame_bytes
        self._prefix = bytearray()  # up to 4 bytes of a length prefix
        self._frame: bytearray | None = None  # the frame being filled (may be longer than it)
        self._frame_len = 0
        # Recycled buffers for the next large frames: several, since a broker may have several
        # requests of one connection in progress (each holds its frame until it is answered).
        self._spares: list[bytearray] = []
        self._filled = 0
        self._ready: deque[memoryview] = deque()
        self.error_cls = error_cls
        self._error: InvalidRequestError | RemoteProtocolError | None = None
        self._eof = False
        self._scratch = bytearray(scratch_bytes)
        self._scratch_view = memoryview(self._scratch)
        self._frames_started = 0

    # -- input

    def receive_data(self, data: Buffer) -> None:
        """Feed bytes received from the peer; ``b""`` means end of stream."""
        if len(data) == 0:
            self._eof = True
            return
        if self._error is not None or self._eof:
            return
        mv = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
        pos, end = 0, len(mv)
        while pos < end:
            if self._frame is None and not self._prefix and end - pos >= LENGTH_SIZE:
                # Fast path: a whole length prefix here, and often the whole (small) frame.
                (length,) = _I32.unpack_from(mv, pos)
                if self.min_frame_bytes <= length <= end - pos - LENGTH_SIZE and length <= self.max_frame_bytes:
                    self._frames_started += 1
                    self._ready.append(memoryview(bytearray(mv[pos + LENGTH_SIZE : pos + LENGTH_SIZE + length])))
                    pos += LENGTH_SIZE + length
                    continue
            if self._frame is None:
                need = LENGTH_SIZE - len(self._prefix)
                take = min(need, end - pos)
                self._prefix += mv[pos : pos + take]
                pos += take
                if len(self._prefix) < LENGTH_SIZE:
                    return
                length = _I32.unpack(self._prefix)[0]
                self._prefix.clear()
                if not self._start_frame(length):
                    return
                if self._frame is None:  # a zero-length frame completed at once
                    continue
            if self._filled == len(self._frame):  # type: ignore[arg-type]
                self._grow()
            frame = self._frame
            assert frame is not None
            take = min(len(frame) - self._filled, end - pos)
            frame[self._filled : self._filled + take] = mv[pos : pos + take]
            self._filled += take
            pos += take
            if self._filled == self._frame_len:
                self._finish_frame()

    def get_buffer(self) -> memoryview:
        """A writable buffer for the next ``recv_into``; follow with ``buffer_updated(n)``."""
        if self._frame is not None:
            if self._filled == len(self._frame):
                self._grow()
            return memoryview(self._frame)[self._filled : self._frame_len]
        return self._scratch_view

    def _grow(self) -> None:
        """Double the buffer of a large frame that has filled what it has (a new buffer and
        one copy: the old one may still be exported by the caller's last ``recv_into``)."""
        assert self._frame is not None
        old = self._frame
        new = bytearray(min(self._frame_len, 2 * len(old)))
        new[: self._filled] = old[: self._filled]
        self._frame = new

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` were written at the start of the buffer last returned by ``get_buffer``."""
        if nbytes == 0:
            self._eof = True
            return
        if self._frame is not None:
            self._filled += nbytes
            if self._filled == self._frame_len:
                self._finish_frame()
            return
        self.receive_data(self._scratch_view[:nbytes])

    def _start_frame(self, length: int) -> bool:
        if length < self.min_frame_bytes or length > self.max_frame_bytes:
            self._error = self.error_cls(
                f"frame length {length} outside [{self.min_frame_bytes}, {self.max_frame_bytes}]",
                frame_length=length,
            )
            return False
        self._frames_started += 1
        if length == 0:
            self._ready.append(memoryview(b""))
            return True
        spares = self._spares
        if spares and length >= _RECYCLE_MIN_BYTES and len(spares[-1]) >= length:
            self._frame = spares.pop()
        else:
            # A length prefix alone must not make us allocate max_frame_bytes: frames above
            # _INITIAL_FRAME_BYTES start there and double as their bytes actually arrive.
            self._frame = bytearray(min(length, _INITIAL_FRAME_BYTES))
        self._frame_len = length
        self._filled = 0
        return True

    def _finish_frame(self) -> None:
        assert self._frame is not None
        frame = self._frame
        self._ready.append(memoryview(frame) if len(frame) == self._frame_len else memoryview(frame)[: self._frame_len])
        self._frame = None
        self._filled = 0

    def recycle(self, frame: memoryview) -> None:
        """Give back a large frame that is no longer used (no view of it will be read again):
        its buffer receives a later frame, which saves allocating and zeroing megabytes per
        request. Only for callers that know every view of the frame is dead (the broker after
        an append); a client handing records to users must not call it."""
        buf = frame.obj
        if isinstance(buf, bytearray) and len(buf) >= _RECYCLE_MIN_BYTES:
            spares = self._spares
            if len(spares) < _MAX_SPARES:
                spares.append(buf)
            elif len(buf) > len(spares[0]):
                spares[0] = buf
            spares.sort(key=len)  # the largest last: it fits the most frames

    # -- output

    def next_frame(self) -> memoryview | None:
        """The next complete frame's payload (without the length prefix), or ``None`` when
        more bytes are needed. Raises ``InvalidRequestError`` for a bad length prefix and
        ``NetworkError`` when the stream ended in the middle of a frame."""
        if self._ready:
            return self._ready.popleft()
        if self._error is not None:
            raise self._error
        if self._eof and self.in_frame:
            raise NetworkError(
                f"connection closed mid-frame ({self.buffered_bytes} bytes of a frame received)"
            )
        return None

    @property
    def in_frame(self) -> bool:
        """True while part of a frame (or of its length prefix) has been received."""
        return self._frame is not None or bool(self._prefix)

    @property
    def buffered_bytes(self) -> int:
        """Bytes of the frame being assembled received so far (prefix included)."""
        if self._frame is not None:
            return LENGTH_SIZE + self._filled
        return len(self._prefix)

    @property
    def allocated_bytes(self) -> int:
        """Bytes of frame buffers this reader holds: the frame being assembled, complete
        frames not yet taken, the recycled spares (the fixed scratch buffer is not counted)."""
        n = len(self._frame) if self._frame is not None else 0
        for f in self._ready:
            n += f.nbytes
        for b in self._spares:
            n += len(b)
        return n

    @property
    def next_read_allocates(self) -> bool:
        """Whether bytes received next may make the reader allocate: a new frame (its buffer
        is allocated when its length prefix arrives) or a frame whose buffer is full (it
        grows). False while a frame's buffer still has room."""
        return self._frame is None or self._filled == len(self._frame)

    def drop_spares(self) -> None:
        """Forget the recycled buffers (memory is short)."""
        self._spares.clear()

    @property
    def frame_bytes_expected(self) -> int:
        """Payload size of the frame being assembled, or -1 when no prefix is known yet."""
        return -1 if self._frame is None else self._frame_len

    @property
    def eof(self) -> bool:
        return self._eof

    @property
    def pending_frames(self) -> int:
        """Complete frames received but not yet taken by ``next_frame``."""
        return len(self._ready)

    @property
    def pending_bytes(self) -> int:
        """Bytes held by complete frames not yet taken plus the frame being assembled."""
        return sum(len(f) for f in self._ready) + (self._frame_len if self._frame is not None else 0)

    @property
    def ready_bytes(self) -> int:
        """Bytes of the complete frames not yet taken (the frame being assembled not counted:
        a reader that paused for it could never complete it)."""
        return sum(len(f) for f in self._ready)


# --------------------------------------------------------------------------- encoding


def encode_string(s: str) -> bytes:
    """int16 length + UTF-8 bytes; longer strings are cut at a character boundary."""
    raw = s.encode("utf-8")
    if len(raw) > MAX_STRING_BYTES:
        raw = raw[:MAX_STRING_BYTES].decode("utf-8", "ignore").encode("utf-8")
    return _I16.pack(len(raw)) + raw


def _frame(parts: list[Buffer]) -> bytes:
    body = b"".join(parts)
    return _I32.pack(len(body)) + body


def encode_fetch_request(req: FetchRequest) -> bytes:
    if req.replica_id >= 0:
        parts: list[Buffer] = [
            _REQ_HEADER.pack(API_FETCH, FETCH_REPLICA_VERSION, req.correlation_id),
            _I32.pack(req.replica_id),
            _FETCH_REQ_HEAD.pack(req.max_wait_ms, req.min_bytes, len(req.partitions)),
        ]
    else:
        parts = [
            _REQ_HEADER.pack(API_FETCH, API_VERSION, req.correlation_id),
            _FETCH_REQ_HEAD.pack(req.max_wait_ms, req.min_bytes, len(req.partitions)),
        ]
    for p in req.partitions:
        parts.append(encode_string(p.topic))
        parts.append(_FETCH_REQ_PART.pack(p.partition, p.offset, p.max_bytes))
    return _frame(parts)


def produce_request_parts(req: ProduceRequest) -> list[Buffer]:
    """The frame of a PRODUCE request as a list of buffers (for ``socket.sendmsg`` /
    ``writelines``): the record bytes are passed through, not copied."""
    parts: list[Buffer] = [
        b"",  # length, filled in below
        _REQ_HEADER.pack(API_PRODUCE, API_VERSION, req.correlation_id),
        _PRODUCE_REQ_HEAD.pack(req.acks, req.timeout_ms, len(req.partitions)),
    ]
    for p in req.partitions:
        parts.append(encode_string(p.topic))
        parts.append(_PRODUCE_REQ_PART.pack(p.partition, len(p.records)))
        if len(p.records):
            parts.append(p.records)
    parts[0] = _I32.pack(sum(len(x) for x in parts))
    return parts


def encode_produce_request(req: ProduceRequest) -> bytes:
    return b"".join(produce_request_parts(req))


def encode_error_response(correlation_id: int, error_code: int) -> bytes:
    """A whole frame answering a request with a request-level error and an empty body."""
    return _FRAME_RESP_HEADER.pack(RESPONSE_HEADER_SIZE, correlation_id, error_code)


def fetch_partition_head_size(topic: str, error_message: str = "") -> int:
    """Bytes of one partition's fixed fields in a FETCH response (before its records)."""
    return len(encode_string(topic)) + len(encode_string(error_message)) + 6 + 20


_NO_ERROR_TAIL = struct.Struct(">ihhqqi")  # partition, error_code 0, empty message, hw, lso, size


def encode_fetch_partition_head(
    topic: str,
    partition: int,
    error_code: int,
    error_message: str,
    high_watermark: int,
    log_start_offset: int,
    records_bytes: int,
) -> bytes:
    """One partition's fixed fields in a FETCH response; ``records_bytes`` of records follow."""
    if not error_code and not error_message:
        return _encode_topic(topic) + _NO_ERROR_TAIL.pack(
            partition, 0, 0, high_watermark, log_start_offset, records_bytes
        )
    return b"".join(
        (
            encode_string(topic),
            _FETCH_RESP_PART_A.pack(partition, error_code),
            encode_string(error_message),
            _FETCH_RESP_PART_B.pack(high_watermark, log_start_offset, records_bytes),
        )
    )


_topic_cache: dict[str, bytes] = {}


def _encode_topic(topic: str) -> bytes:
    """``encode_string`` for topic names, cached (a broker answers the same few names all day;
    the cache is bounded so that arbitrary names from clients cannot grow it without limit)."""
    b = _topic_cache.get(topic)
    if b is None:
        b = encode_string(topic)
        if len(_topic_cache) < 100_000:
            _topic_cache[topic] = b
    return b


def encode_fetch_response_head(correlation_id: int, body_bytes: int, partition_count: int) -> bytes:
    """Length prefix, response header and partition count of a FETCH response whose
    partitions (heads and records) take ``body_bytes`` bytes."""
    return _FRAME_RESP_HEADER.pack(RESPONSE_HEADER_SIZE + 4 + body_bytes, correlation_id, 0) + _I32.pack(
        partition_count
    )


def encode_fetch_response(resp: FetchResponse) -> bytes:
    """A whole FETCH response frame built in memory (tests, the gRPC-less paths)."""
    if resp.error_code:
        return encode_error_response(resp.correlation_id, resp.error_code)
    parts: list[Buffer] = []
    for p in resp.partitions:
        parts.append(
            encode_fetch_partition_head(
                p.topic, p.partition, p.error_code, p.error_message, p.high_watermark,
                p.log_start_offset, len(p.records),
            )
        )
        parts.append(p.records)
    body = b"".join(parts)
    return encode_fetch_response_head(resp.correlation_id, len(body), len(resp.partitions)) + body


def encode_produce_response(resp: ProduceResponse) -> bytes:
    if resp.error_code:
        return encode_error_response(resp.correlation_id, resp.error_code)
    parts: list[Buffer] = [_RESP_HEADER.pack(resp.correlation_id, 0), _I32.pack(len(resp.partitions))]
    for p in resp.partitions:
        parts.append(encode_string(p.topic))
        parts.append(_PRODUCE_RESP_PART_A.pack(p.partition, p.error_code))
        parts.append(encode_string(p.error_message))
        parts.append(_PRODUCE_RESP_PART_B.pack(p.base_offset, p.log_end_offset, p.leader_id))
    return _frame(parts)


# --------------------------------------------------------------------------- decoding


class _Cursor:
    """Reads fields from one frame, raising ``error_cls`` (InvalidRequestError for a request,
    RemoteProtocolError for a response) on any overrun."""

    __slots__ = ("buf", "pos", "end", "correlation_id", "error_cls")

    def __init__(
        self,
        buf: memoryview,
        pos: int = 0,
        correlation_id: int | None = None,
        error_cls: type[InvalidRequestError] | type[RemoteProtocolError] = InvalidRequestError,
    ) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf)
        self.correlation_id = correlation_id
        self.error_cls = error_cls

    def fail(self, what: str) -> InvalidRequestError | RemoteProtocolError:
        if self.correlation_id is None:
            return self.error_cls(what)
        return self.error_cls(what, correlation_id=self.correlation_id)

    def unpack(self, st: struct.Struct, what: str) -> tuple:
        if self.end - self.pos < st.size:
            raise self.fail(f"frame ends inside {what} (at byte {self.pos} of {self.end})")
        v = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return v

    def string(self, what: str) -> str:
        (n,) = self.unpack(_I16, what)
        if n < 0 or self.end - self.pos < n:
            raise self.fail(f"{what} length {n} does not fit in the frame")
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8") from None

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.end - self.pos < n:
            raise self.fail(f"{what} length {n} does not fit in the frame")
        v = self.buf[self.pos : self.pos + n]
        self.pos += n
        return v

    def count(self, what: str, min_item_bytes: int) -> int:
        (n,) = self.unpack(_I32, what)
        # Bound the count by what the rest of the frame could hold before allocating anything.
        if n < 0 or n * min_item_bytes > self.end - self.pos:
            raise self.fail(f"{what} {n} is impossible for a frame of {self.end} bytes")
        return n

    def done(self) -> None:
        if self.pos != self.end:
            raise self.fail(f"{self.end - self.pos} unexpected bytes after the body")


def _as_view(frame: Buffer) -> memoryview:
    mv = frame if isinstance(frame, memoryview) else memoryview(frame)
    return mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv


def decode_request_header(frame: Buffer) -> RequestHeader:
    """The header of a request frame (payload without the length prefix)."""
    mv = _as_view(frame)
    if len(mv) < REQUEST_HEADER_SIZE:
        raise InvalidRequestError(f"request of {len(mv)} bytes is shorter than its header")
    return RequestHeader(*_REQ_HEADER.unpack_from(mv, 0))


def decode_request(frame: Buffer) -> Request:
    """Decode one request frame into a ``FetchRequest`` or ``ProduceRequest``.

    Raises ``InvalidRequestError`` (with ``details['correlation_id']`` once the header could
    be read) for an unknown api_key or version, a body that does not parse, or trailing bytes.
    The records of a PRODUCE request are ``memoryview`` slices of ``frame``.
    """
    mv = _as_view(frame)
    if len(mv) >= REQUEST_HEADER_SIZE + 12 + 2:
        fast = _decode_single_fetch(mv)
        if fast is not None:
            return fast
    hdr = decode_request_header(mv)
    cur = _Cursor(mv, REQUEST_HEADER_SIZE, hdr.correlation_id)
    replica_id = -1
    if hdr.api_key == API_FETCH and hdr.api_version == FETCH_REPLICA_VERSION:
        (replica_id,) = cur.unpack(_I32, "replica_id")
    elif hdr.api_version != API_VERSION:
        raise cur.fail(f"api_version {hdr.api_version} is not supported (only {API_VERSION})")
    if hdr.api_key == API_OFFSET_FOR_LEADER_EPOCH:
        n = cur.count("partition_count", 2 + _EPOCH_REQ_PART.size)
        eparts = []
        for _ in range(n):
            topic = cur.string("topic")
            partition, epoch = cur.unpack(_EPOCH_REQ_PART, "epoch partition")
            eparts.append(EpochPartition(topic, partition, epoch))
        cur.done()
        return EpochRequest(hdr.correlation_id, eparts)
    if hdr.api_key == API_FETCH:
        max_wait_ms, min_bytes = cur.unpack(_FETCH_REQ_WAIT, "fetch header")
        n = cur.count("partition_count", 2 + _FETCH_REQ_PART.size)
        fparts = []
        for _ in range(n):
            topic = cur.string("topic")
            partition, offset, max_bytes = cur.unpack(_FETCH_REQ_PART, "fetch partition")
            fparts.append(FetchPartition(topic, partition, offset, max_bytes))
        cur.done()
        return FetchRequest(hdr.correlation_id, max_wait_ms, min_bytes, fparts, replica_id)
    if hdr.api_key == API_PRODUCE:
        acks, timeout_ms = cur.unpack(_PRODUCE_REQ_ACKS, "produce header")
        n = cur.count("partition_count", 2 + _PRODUCE_REQ_PART.size)
        pparts = []
        for _ in range(n):
            topic = cur.string("topic")
            partition, records_bytes = cur.unpack(_PRODUCE_REQ_PART, "produce partition")
            records = cur.take(records_bytes, "records")
            pparts.append(ProducePartition(topic, partition, records))
        cur.done()
        return ProduceRequest(hdr.correlation_id, acks, timeout_ms, pparts)
    raise cur.fail(f"unknown api_key {hdr.api_key}")


_FETCH1_HEAD = struct.Struct(">hhiiiih")  # header, wait, min, count, topic length
_FETCH1_HEAD_SIZE = _FETCH1_HEAD.size  # 22


def _decode_single_fetch(mv: memoryview) -> FetchRequest | None:
    """The common FETCH of one partition, parsed with two struct calls; None when the frame is
    anything else (the general decoder then parses it, with full error reporting)."""
    api_key, version, cid, max_wait_ms, min_bytes, count, tlen = _FETCH1_HEAD.unpack_from(mv, 0)
    if api_key != API_FETCH or version != API_VERSION or count != 1 or tlen < 0:
        return None
    end = _FETCH1_HEAD_SIZE + tlen
    if len(mv) != end + _FETCH_REQ_PART.size:
        return None
    try:
        topic = str(mv[_FETCH1_HEAD_SIZE:end], "utf-8")
    except UnicodeDecodeError:
        return None
    partition, offset, max_bytes = _FETCH_REQ_PART.unpack_from(mv, end)
    return FetchRequest(cid, max_wait_ms, min_bytes, (FetchPartition(topic, partition, offset, max_bytes),))


def decode_response_header(frame: Buffer) -> tuple[int, int]:
    """``(correlation_id, error_code)`` of a response frame."""
    mv = _as_view(frame)
    if len(mv) < RESPONSE_HEADER_SIZE:
        raise RemoteProtocolError(f"response of {len(mv)} bytes is shorter than its header")
    cid, code = _RESP_HEADER.unpack_from(mv, 0)
    return cid, code


def decode_fetch_response(frame: Buffer) -> FetchResponse:
    """Decode a FETCH response frame; each partition's ``records`` is a ``memoryview`` of
    ``frame`` (no copy)."""
    mv = _as_view(frame)
    cid, code = decode_response_header(mv)
    cur = _Cursor(mv, RESPONSE_HEADER_SIZE, cid, RemoteProtocolError)
    if code:
        cur.done()
        return FetchResponse(cid, code, ())
    n = cur.count("partition_count", 2 + 6 + 2 + _FETCH_RESP_PART_B.size)
    parts = []
    for _ in range(n):
        topic = cur.string("topic")
        partition, error_code = cur.unpack(_FETCH_RESP_PART_A, "fetch result")
        message = cur.string("error_message")
        hw, lso, nbytes = cur.unpack(_FETCH_RESP_PART_B, "fetch result")
        records = cur.take(nbytes, "records")
        parts.append(FetchPartitionResult(topic, partition, error_code, message, hw, lso, records))
    cur.done()
    return FetchResponse(cid, 0, parts)


def decode_produce_response(frame: Buffer) -> ProduceResponse:
    mv = _as_view(frame)
    cid, code = decode_response_header(mv)
    cur = _Cursor(mv, RESPONSE_HEADER_SIZE, cid, RemoteProtocolError)
    if code:
        cur.done()
        return ProduceResponse(cid, code, ())
    n = cur.count("partition_count", 2 + 6 + 2 + _PRODUCE_RESP_PART_B.size)
    parts = []
    for _ in range(n):
        topic = cur.string("topic")
        partition, error_code = cur.unpack(_PRODUCE_RESP_PART_A, "produce result")
        message = cur.string("error_message")
        base, leo, leader = cur.unpack(_PRODUCE_RESP_PART_B, "produce result")
        parts.append(ProducePartitionResult(topic, partition, error_code, message, base, leo, leader))
    cur.done()
    return ProduceResponse(cid, 0, parts)


def encode_epoch_request(req: EpochRequest) -> bytes:
    parts: list[Buffer] = [
        _REQ_HEADER.pack(API_OFFSET_FOR_LEADER_EPOCH, API_VERSION, req.correlation_id),
        _I32.pack(len(req.partitions)),
    ]
    for p in req.partitions:
        parts.append(encode_string(p.topic))
        parts.append(_EPOCH_REQ_PART.pack(p.partition, p.leader_epoch))
    return _frame(parts)


def encode_epoch_response(resp: EpochResponse) -> bytes:
    parts: list[Buffer] = [_RESP_HEADER.pack(resp.correlation_id, resp.error_code)]
    if not resp.error_code:
        parts.append(_I32.pack(len(resp.partitions)))
        for p in resp.partitions:
            parts.append(encode_string(p.topic))
            parts.append(_EPOCH_RESP_PART.pack(p.partition, p.error_code, p.leader_epoch, p.end_offset))
    return _frame(parts)


def decode_epoch_response(frame: Buffer) -> EpochResponse:
    mv = _as_view(frame)
    cid, code = decode_response_header(mv)
    cur = _Cursor(mv, RESPONSE_HEADER_SIZE, cid, RemoteProtocolError)
    if code:
        cur.done()
        return EpochResponse(cid, code, ())
    n = cur.count("partition_count", 2 + _EPOCH_RESP_PART.size)
    parts = []
    for _ in range(n):
        topic = cur.string("topic")
        partition, error_code, epoch, end = cur.unpack(_EPOCH_RESP_PART, "epoch result")
        parts.append(EpochPartitionResult(topic, partition, error_code, epoch, end))
    cur.done()
    return EpochResponse(cid, 0, parts)
