"""DataConnection against a scripted peer on a real loopback socket: request/answer matching,
partial frames, and failures."""

from __future__ import annotations

import select
import socket
import struct
import threading

import pytest

from annal.errors import NetworkError
from annal.protocol.framing import (
    ProducePartitionResult,
    ProduceResponse,
    decode_produce_response,
    encode_produce_response,
)
from annal.client._connection import DataConnection, InFlight


@pytest.fixture
def server():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    yield srv
    srv.close()


def wait_readable(conn: DataConnection, timeout: float = 5.0) -> None:
    r, _, _ = select.select([conn], [], [], timeout)
    assert r, "no answer in time"


def read_answers(conn: DataConnection, n: int) -> list:
    out: list = []
    while len(out) < n:
        wait_readable(conn)
        out += conn.receive()
    return out


@pytest.mark.timeout(30)
def test_answers_matched_in_order_even_when_split(server):
    conn = DataConnection(1, "127.0.0.1", server.getsockname()[1])
    peer, _ = server.accept()
    for cid in (conn.next_correlation_id(), conn.next_correlation_id()):
        conn.send([b"ignored by the peer"], InFlight(cid, f"ctx{cid}"))
    answers = b"".join(
        encode_produce_response(ProduceResponse(cid, 0, [ProducePartitionResult("t", 0, 0, "", 5 * cid, 9, -1)]))
        for cid in (1, 2)
    )
    for i in range(0, len(answers), 7):  # dribble the bytes
        peer.sendall(answers[i : i + 7])
    got = read_answers(conn, 2)
    assert [req.context for req, _ in got] == ["ctx1", "ctx2"]
    assert [decode_produce_response(f).partitions[0].base_offset for _, f in got] == [5, 10]
    assert not conn.in_flight
    peer.close()
    conn.close()


@pytest.mark.timeout(30)
def test_wrong_correlation_id_and_peer_close_raise_network_error(server):
    conn = DataConnection(1, "127.0.0.1", server.getsockname()[1])
    peer, _ = server.accept()
    conn.send([b"x"], InFlight(conn.next_correlation_id(), None))
    peer.sendall(encode_produce_response(ProduceResponse(99, 0, [])))
    wait_readable(conn)
    with pytest.raises(NetworkError, match="expected 1"):
        conn.receive()
    assert conn.closed
    peer.close()

    conn = DataConnection(2, "127.0.0.1", server.getsockname()[1])
    peer, _ = server.accept()
    conn.send([b"x"], InFlight(conn.next_correlation_id(), None))
    peer.sendall(struct.pack(">i", 100) + b"partial")
    peer.close()
    with pytest.raises(NetworkError):
        read_answers(conn, 1)
    assert conn.closed and len(conn.in_flight) == 1  # left for the owner to fail over


def test_connect_refused_is_network_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(NetworkError, match="cannot connect"):
        DataConnection(3, "127.0.0.1", port, connect_timeout_ms=2000)


@pytest.mark.timeout(30)
def test_large_request_is_written_whole(server):
    conn = DataConnection(1, "127.0.0.1", server.getsockname()[1])
    peer, _ = server.accept()
    payload = bytes(range(256)) * 40000  # 10 MB: more than the socket buffers hold
    received = bytearray()

    def drain():
        while len(received) < len(payload):
            chunk = peer.recv(1 << 20)
            if not chunk:
                break
            received.extend(chunk)

    t = threading.Thread(target=drain)
    t.start()
    conn.send([payload[:5], payload[5:]], InFlight(conn.next_correlation_id(), None, expects_response=False))
    t.join(20)
    assert bytes(received) == payload and not conn.in_flight
    peer.close()
    conn.close()
