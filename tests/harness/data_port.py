"""A minimal blocking client of the broker's data port, for tests and benchmarks.

It speaks the framing of ``annal.protocol.framing`` over one plain socket and exposes the raw
pieces (``send_raw``, ``recv_frame``) so tests can also send malformed bytes. Received frames
land in their own buffer (``recv_into``), so FETCH records come back as a ``memoryview`` of it.
Not thread-safe.
"""

from __future__ import annotations

import itertools
import socket
from typing import Sequence

from annal.protocol import framing as fr
from annal.client._connection import send_parts

__all__ = ["DataPortClient"]


class DataPortClient:
    def __init__(self, host: str, port: int, timeout: float = 30.0, max_frame_bytes: int = 2**31 - 1) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = fr.FrameReader(max_frame_bytes=max_frame_bytes, min_frame_bytes=fr.RESPONSE_HEADER_SIZE)
        self._ids = itertools.count(1)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "DataPortClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_id(self) -> int:
        return next(self._ids)

    # -- raw

    def send_raw(self, data: bytes | Sequence[bytes | memoryview]) -> None:
        if isinstance(data, (bytes, bytearray, memoryview)):
            self.sock.sendall(data)
        else:
            for part in data:
                self.sock.sendall(part)

    def recv_frame(self) -> memoryview | None:
        """The next response frame, or None when the broker closed the connection."""
        while True:
            frame = self.reader.next_frame()
            if frame is not None:
                return frame
            if self.reader.eof:
                return None
            buf = self.reader.get_buffer()
            n = self.sock.recv_into(buf)
            self.reader.buffer_updated(n)

    def closed_by_peer(self) -> bool:
        """True when the broker has closed the connection (reads to EOF; blocks until then)."""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True

    # -- requests

    def send_fetch(self, partitions: Sequence[tuple[str, int, int, int]], max_wait_ms: int = 0,
                   min_bytes: int = 0, correlation_id: int | None = None) -> int:
        cid = self.next_id() if correlation_id is None else correlation_id
        req = fr.FetchRequest(cid, max_wait_ms, min_bytes, [fr.FetchPartition(*p) for p in partitions])
        self.sock.sendall(fr.encode_fetch_request(req))
        return cid

    def fetch(self, partitions: Sequence[tuple[str, int, int, int]], max_wait_ms: int = 0,
              min_bytes: int = 0) -> fr.FetchResponse:
        """``partitions``: (topic, partition, offset, max_bytes) tuples."""
        cid = self.send_fetch(partitions, max_wait_ms, min_bytes)
        return self.recv_fetch(cid)

    def recv_fetch(self, cid: int | None = None) -> fr.FetchResponse:
        frame = self.recv_frame()
        if frame is None:
            raise ConnectionError("broker closed the connection")
        resp = fr.decode_fetch_response(frame)
        if cid is not None and resp.correlation_id != cid:
            raise AssertionError(f"correlation id {resp.correlation_id} != {cid}")
        return resp

    def send_produce(self, partitions: Sequence[tuple[str, int, bytes | memoryview]], acks: int = 1,
                     timeout_ms: int = 30000, correlation_id: int | None = None) -> int:
        cid = self.next_id() if correlation_id is None else correlation_id
        req = fr.ProduceRequest(cid, acks, timeout_ms, [fr.ProducePartition(*p) for p in partitions])
        send_parts(self.sock, fr.produce_request_parts(req))
        return cid

    def produce(self, partitions: Sequence[tuple[str, int, bytes | memoryview]], acks: int = 1,
                timeout_ms: int = 30000) -> fr.ProduceResponse:
        """``partitions``: (topic, partition, records) tuples."""
        cid = self.send_produce(partitions, acks, timeout_ms)
        return self.recv_produce(cid)

    def recv_produce(self, cid: int | None = None) -> fr.ProduceResponse:
        frame = self.recv_frame()
        if frame is None:
            raise ConnectionError("broker closed the connection")
        resp = fr.decode_produce_response(frame)
        if cid is not None and resp.correlation_id != cid:
            raise AssertionError(f"correlation id {resp.correlation_id} != {cid}")
        return resp
