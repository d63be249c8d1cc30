"""The Kafka listener at the byte level: idempotent produce (a retried batch is written once,
across a broker restart too; a sequence gap is refused), and bad frames (garbage, truncated,
oversized, unknown API key, unsupported version) answered or cut with a log line and nothing
written."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from annal.client.admin import Admin
from annal.client.structs import NewTopic
from annal.kafka import ApiKey, ErrorCode
from annal.kafka.header import decode_response, encode_request
from annal.record import BatchBuilder
from harness.batches import make_batch
from harness.broker import BrokerProcess

pytestmark = pytest.mark.timeout(120)


class Raw:
    """One Kafka connection driven by hand, with Annal's codec."""

    def __init__(self, broker: BrokerProcess) -> None:
        self.sock = socket.create_connection(("127.0.0.1", broker.kafka_port), timeout=20)
        self.cid = 0

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self) -> bytes | None:
        head = self._exact(4)
        if head is None:
            return None
        body = self._exact(int.from_bytes(head, "big"))
        return body

    def _exact(self, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                return None if not buf else buf
            buf += chunk
        return buf

    def call(self, api_key: int, version: int, body: dict[str, Any]) -> dict[str, Any]:
        self.cid += 1
        self.send(encode_request(api_key, version, self.cid, "raw-test", body))
        frame = self.read_frame()
        assert frame is not None, "connection closed without an answer"
        cid, resp = decode_response(api_key, version, frame)
        assert cid == self.cid
        return resp

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, socket.timeout):
            return True

    def close(self) -> None:
        self.sock.close()


def _batch(values: list[bytes], pid: int, epoch: int, seq: int) -> bytes:
    b = BatchBuilder()
    for v in values:
        b.append(int(time.time() * 1000), None, v, None)
    return b.build(producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def _produce(raw: Raw, topic: str, records: bytes, version: int = 9) -> dict[str, Any]:
    resp = raw.call(ApiKey.PRODUCE, version, {"acks": -1, "timeout_ms": 10000, "topic_data": [
        {"name": topic, "partition_data": [{"index": 0, "records": records}]}]})
    return resp["responses"][0]["partition_responses"][0]


def _end_offset(broker: BrokerProcess, topic: str) -> int:
    with Admin(bootstrap_servers=broker.bootstrap) as admin:
        [t] = admin.describe_topics([topic])
    return int(t.partitions[0].log_end_offset)


def test_a_retried_batch_is_written_once_even_across_a_restart(broker: BrokerProcess) -> None:
    with Admin(bootstrap_servers=broker.bootstrap) as admin:
        admin.create_topics([NewTopic("idem", 1)])
    raw = Raw(broker)
    init = raw.call(ApiKey.INIT_PRODUCER_ID, 1, {"transactional_id": None, "transaction_timeout_ms": 60000})
    assert init["error_code"] == 0
    pid, epoch = init["producer_id"], init["producer_epoch"]
    first = _batch([b"a", b"b", b"c"], pid, epoch, 0)
    r1 = _produce(raw, "idem", first)
    assert (r1["error_code"], r1["base_offset"]) == (0, 0)
    second = _batch([b"d"], pid, epoch, 3)
    # The answer to this one is "lost": the producer retries on a new connection.
    raw.send(encode_request(ApiKey.PRODUCE, 9, 99, "raw-test", {"acks": -1, "timeout_ms": 10000, "topic_data": [
        {"name": "idem", "partition_data": [{"index": 0, "records": second}]}]}))
    raw.close()
    deadline = time.monotonic() + 20
    while _end_offset(broker, "idem") != 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    raw = Raw(broker)
    r2 = _produce(raw, "idem", second)
    assert (r2["error_code"], r2["base_offset"]) == (0, 3)
    assert _end_offset(broker, "idem") == 4
    raw.close()

    broker.restart()  # the producer state is rebuilt from the log
    raw = Raw(broker)
    r3 = _produce(raw, "idem", first)
    assert (r3["error_code"], r3["base_offset"]) == (0, 0)
    r4 = _produce(raw, "idem", second)
    assert (r4["error_code"], r4["base_offset"]) == (0, 3)
    gap = _produce(raw, "idem", _batch([b"f"], pid, epoch, 7))
    assert gap["error_code"] == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    old = _produce(raw, "idem", _batch([b"g"], pid, epoch - 1 if epoch else -5, 4)) if epoch else None
    if old is not None:
        assert old["error_code"] == ErrorCode.INVALID_PRODUCER_EPOCH
    ok = _produce(raw, "idem", _batch([b"e"], pid, epoch, 4))
    assert (ok["error_code"], ok["base_offset"]) == (0, 4)
    assert _end_offset(broker, "idem") == 5
    fresh = raw.call(ApiKey.INIT_PRODUCER_ID, 1, {"transactional_id": None, "transaction_timeout_ms": 60000})
    assert fresh["producer_id"] != pid  # ids are never handed out twice, restarts included
    raw.close()


def test_api_versions_negotiation_and_unsupported_versions(broker: BrokerProcess) -> None:
    raw = Raw(broker)
    resp = raw.call(ApiKey.API_VERSIONS, 3, {"client_software_name": "raw", "client_software_version": "1"})
    ranges = {a["api_key"]: (a["min_version"], a["max_version"]) for a in resp["api_keys"]}
    assert ranges[ApiKey.FETCH] == (4, 12) and ranges[ApiKey.PRODUCE] == (3, 12)
    # An ApiVersions version from the future: answered as v0 with the ranges.
    frame = bytearray(encode_request(ApiKey.API_VERSIONS, 3, 41, "raw", {}))
    frame[6:8] = (77).to_bytes(2, "big")
    raw.send(bytes(frame))
    cid, v0 = decode_response(ApiKey.API_VERSIONS, 0, raw.read_frame() or b"")
    assert cid == 41 and v0["error_code"] == ErrorCode.UNSUPPORTED_VERSION and v0["api_keys"]
    # Fetch v13 (topic ids): UNSUPPORTED_VERSION, then the connection is closed.
    frame = bytearray(encode_request(ApiKey.FETCH, 12, 42, "raw", {}))
    frame[6:8] = (13).to_bytes(2, "big")
    raw.send(bytes(frame))
    answer = raw.read_frame()
    assert answer is not None and answer[:4] == (42).to_bytes(4, "big")
    assert int.from_bytes(answer[4:6], "big") == ErrorCode.UNSUPPORTED_VERSION
    assert raw.closed()
    broker.wait_for_log("api key 1 version 13 not supported")


@pytest.mark.parametrize("case", ["garbage", "unknown_api", "truncated_body", "oversized", "negative_length",
                                  "stalled"])
def test_bad_frames_get_an_answer_or_a_close_and_nothing_is_written(broker: BrokerProcess, case: str) -> None:
    with Admin(bootstrap_servers=broker.bootstrap) as admin:
        admin.create_topics([NewTopic("bad", 1)])
    raw = Raw(broker)
    good = encode_request(ApiKey.PRODUCE, 9, 5, "raw", {"acks": 1, "timeout_ms": 1000, "topic_data": [
        {"name": "bad", "partition_data": [{"index": 0, "records": _batch([b"x"], -1, -1, -1)}]}]})
    if case == "garbage":
        raw.send((20).to_bytes(4, "big") + b"\x00\x00\x00\x09" + b"\xff" * 16)
        answer = raw.read_frame()
        assert answer is not None and int.from_bytes(answer[4:6], "big", signed=True) == ErrorCode.INVALID_REQUEST
        pattern = "bad request"
    elif case == "unknown_api":
        frame = bytearray(good)
        frame[4:6] = (4242).to_bytes(2, "big")
        raw.send(bytes(frame))
        answer = raw.read_frame()
        assert answer is not None and int.from_bytes(answer[4:6], "big") == ErrorCode.UNSUPPORTED_VERSION
        pattern = "api key 4242 version 9 not supported"
    elif case == "truncated_body":
        body = good[4:-30]
        raw.send(len(body).to_bytes(4, "big") + body)
        answer = raw.read_frame()
        assert answer is not None and answer[:4] == (5).to_bytes(4, "big")
        assert int.from_bytes(answer[4:6], "big") == ErrorCode.INVALID_REQUEST
        pattern = "bad request"
    elif case == "oversized":
        raw.send((2**31 - 1).to_bytes(4, "big") + good[4:])
        pattern = "closing the connection"
    elif case == "negative_length":
        raw.send(b"\xff\xff\xff\xfe" + good[4:])
        pattern = "closing the connection"
    else:  # half a frame, then nothing: cut after request_timeout_ms
        raw.send(good[:20])
        pattern = "no complete request"
    if case != "stalled":
        assert raw.closed()
        broker.wait_for_log(pattern)
    assert _end_offset(broker, "bad") == 0
    raw.close()
    # The broker still serves.
    raw = Raw(broker)
    ok = _produce(raw, "bad", _batch([b"y"], -1, -1, -1))
    assert ok["error_code"] == 0
    raw.close()


def test_stalled_frame_is_cut_after_the_request_timeout(broker_factory: Any) -> None:
    b = broker_factory("stall", extra_args=["--request-timeout-ms", "500"])
    raw = Raw(b)
    raw.send(encode_request(ApiKey.METADATA, 1, 1, "raw", {"topics": []})[:9])
    assert raw.closed()
    b.wait_for_log("no complete request within request_timeout_ms=500")
    raw.close()


def _produce_request(cid: int, topic: str, records: bytes, acks: int = 1) -> bytes:
    return encode_request(ApiKey.PRODUCE, 9, cid, "raw", {"acks": acks, "timeout_ms": 10000, "topic_data": [
        {"name": topic, "partition_data": [{"index": 0, "records": records}]}]})


def test_pipelined_produces_are_answered_in_request_order(broker: BrokerProcess) -> None:
    """A client with many produce requests in flight on one connection (librdkafka keeps 5),
    all sent before any answer is read: every one is answered, in request order, each with
    the offsets of its own batch, and a request of another API sent behind them after them."""
    with Admin(bootstrap_servers=broker.bootstrap) as admin:
        admin.create_topics([NewTopic("piped", 1), NewTopic("piped2", 1)])
    raw = Raw(broker)
    sizes = [1 + (i * 7) % 13 for i in range(40)]
    out = b""
    for i, n in enumerate(sizes):
        # Two partitions' worth of topics interleaved: answers must still come back in order.
        topic = "piped" if i % 3 else "piped2"
        out += _produce_request(100 + i, topic, _batch([b"v%d-%d" % (i, j) for j in range(n)], -1, -1, -1))
    out += encode_request(ApiKey.API_VERSIONS, 3, 999, "raw", {"client_software_name": "raw",
                                                               "client_software_version": "1"})
    raw.send(out)  # every request at once
    next_offset = {"piped": 0, "piped2": 0}
    for i, n in enumerate(sizes):
        frame = raw.read_frame()
        assert frame is not None
        cid, resp = decode_response(ApiKey.PRODUCE, 9, frame)
        assert cid == 100 + i
        topic = "piped" if i % 3 else "piped2"
        part = resp["responses"][0]["partition_responses"][0]
        assert resp["responses"][0]["name"] == topic
        assert (part["error_code"], part["base_offset"]) == (0, next_offset[topic])
        next_offset[topic] += n
    frame = raw.read_frame()
    assert frame is not None
    cid, versions = decode_response(ApiKey.API_VERSIONS, 3, frame)
    assert cid == 999 and versions["error_code"] == 0
    raw.close()
    assert _end_offset(broker, "piped") == next_offset["piped"]
    assert _end_offset(broker, "piped2") == next_offset["piped2"]


def test_a_bad_request_behind_pipelined_produces_is_answered_after_them(broker: BrokerProcess) -> None:
    """The INVALID_REQUEST answer of a malformed produce waits for the answers of the produces
    sent before it; then the connection closes, and nothing of the bad request is written."""
    with Admin(bootstrap_servers=broker.bootstrap) as admin:
        admin.create_topics([NewTopic("piped-bad", 1)])
    raw = Raw(broker)
    good = [_produce_request(10 + i, "piped-bad", _batch([b"g%d" % i] * 50, -1, -1, -1)) for i in range(6)]
    bad = _produce_request(77, "piped-bad", _batch([b"b"], -1, -1, -1))
    bad = len(bad[4:-30]).to_bytes(4, "big") + bad[4:-30]  # a truncated body
    raw.send(b"".join(good) + bad)
    for i in range(6):
        frame = raw.read_frame()
        assert frame is not None
        cid, resp = decode_response(ApiKey.PRODUCE, 9, frame)
        assert cid == 10 + i and resp["responses"][0]["partition_responses"][0]["error_code"] == 0
    answer = raw.read_frame()
    assert answer is not None and answer[:4] == (77).to_bytes(4, "big")
    assert int.from_bytes(answer[4:6], "big") == ErrorCode.INVALID_REQUEST
    assert raw.closed()
    raw.close()
    assert _end_offset(broker, "piped-bad") == 6 * 50


def test_a_produce_request_larger_than_the_pending_frames_bound_is_read_whole(broker: BrokerProcess) -> None:
    """A request bigger than what a connection may keep unanswered (16 MiB of complete frames)
    is still read to its end and answered: the pause is for complete frames piling up, never
    for the one still arriving (which could then never complete)."""
    with Admin(bootstrap_servers=broker.bootstrap) as admin:
        admin.create_topics([NewTopic("big-request", 24)])
    batches = [make_batch(1000, value_size=1000) for _ in range(24)]  # ~1 MB each
    request = encode_request(ApiKey.PRODUCE, 9, 7, "raw", {"acks": 1, "timeout_ms": 10000, "topic_data": [
        {"name": "big-request", "partition_data": [{"index": i, "records": b} for i, b in enumerate(batches)]}]})
    assert len(request) > 20 << 20
    raw = Raw(broker)
    raw.send(request)
    frame = raw.read_frame()
    assert frame is not None, "connection closed without an answer"
    cid, resp = decode_response(ApiKey.PRODUCE, 9, frame)
    assert cid == 7
    parts = resp["responses"][0]["partition_responses"]
    assert sorted((p["index"], p["error_code"], p["base_offset"]) for p in parts) == [(i, 0, 0) for i in range(24)]
    raw.close()
