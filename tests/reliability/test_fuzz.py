"""Bad input at scale: random and mutated frames at the data port, random and mutated batches at
Produce (data port and gRPC), against one real broker process.

Inputs start from well-formed FETCH and PRODUCE frames (``annal.protocol.framing``) and
RecordBatch v2 batches (``annal.record.encode_batch``) and are then mutated: bit flips,
truncation, a lying length prefix or partition count, spliced frames, inserted or deleted bytes,
random bytes; batches also get header fields rewritten with the CRC fixed up so the input gets
past the CRC check into the deeper rules. Hypothesis draws each case's target, mutation and
byte seed (seeded from ``seeded_rng``, no example database) and reports a failing case as that
triple, which replays it exactly.

Each input goes over its own connection, which the test half-closes after sending; the broker
must answer with whole response frames and/or close the connection within a deadline (a hang
fails the test). Every 250 inputs, and at the end, the broker process must be alive and serve a
normal produce and fetch. At the end the broker is stopped and every segment of every partition
is scanned: nothing torn, every batch CRC-valid, offsets contiguous.

CI runs a few thousand inputs; the slow run 100,000 (``-m slow``).
"""

from __future__ import annotations

import collections
import random
import socket
import struct
import time
import uuid

import grpc
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from annal.protocol import annal_pb2, annal_pb2_grpc
from annal.protocol import framing as fr
from annal.record import encode_batch
from annal.client import Admin, NewTopic
from harness.batches import damage
from harness.data_port import DataPortClient
from harness.faults import fetch_all, scan_data_dir, seeded_rng

INPUT_DEADLINE_S = 10.0
HEALTH_EVERY = 250

MUTATIONS = ["none", "bitflip", "truncate", "length_lie", "count_lie", "splice", "insert", "delete",
             "random", "random_framed", "batch_fields", "batch_bitflip"]


def _batch(rnd, lz4: bool = False) -> bytes:
    from annal.record import CODEC_LZ4, CODEC_NONE

    n = rnd.randint(1, 8)
    records = [(1_700_000_000_000 + rnd.randrange(10**6),
                None if rnd.random() < 0.3 else rnd.randbytes(rnd.randint(0, 12)),
                None if rnd.random() < 0.1 else rnd.randbytes(rnd.randint(0, 64)),
                [("h", rnd.randbytes(3))] if rnd.random() < 0.2 else None) for _ in range(n)]
    return encode_batch(records, CODEC_LZ4 if lz4 else CODEC_NONE)


def _mutate_batch(batch: bytes, rnd) -> bytes:
    """Header fields rewritten (CRC fixed so the deeper checks run), or bits flipped in the
    records with the CRC fixed, or a byte flipped with the CRC left wrong."""
    choice = rnd.randrange(4)
    if choice == 0:
        field = rnd.choice(["batch_length", "magic", "attributes", "last_offset_delta", "records_count"])
        value = rnd.choice([-1, 0, 1, 2, 7, 0x7FFF, 2**31 - 1, -(2**31), rnd.randrange(-1000, 1000)])
        if field in ("magic",):
            value = max(-128, min(127, value))
        if field == "attributes":
            value = max(-(2**15), min(2**15 - 1, value))
        return damage(batch, **{field: value})
    if choice == 1 and len(batch) > 61:
        return damage(batch, flip_byte_at=rnd.randrange(61, len(batch)))  # records garbled, CRC fixed
    if choice == 2:
        return damage(batch, fix_crc=False, flip_byte_at=rnd.randrange(len(batch)))
    return batch[: rnd.randrange(len(batch))]


def _base_frame(kind: str, rnd, topic: str) -> bytes:
    topics = [topic, topic, "nope-" + str(rnd.randrange(5)), "", "x" * rnd.randint(1, 300)]
    if kind == "fetch":
        parts: list[fr.FetchPartition] = []
        for _ in range(rnd.randint(0, 3)):
            parts.append(fr.FetchPartition(rnd.choice(topics), rnd.choice([0, 1, 2, -1, 99]),
                                           rnd.choice([0, 1, 5, -1, -2, 2**62, rnd.randrange(100)]),
                                           rnd.choice([1, 100, 65536, 0, -5, 2**31 - 1])))
        fetch = fr.FetchRequest(rnd.randrange(2**31), rnd.choice([0, 0, 1, 50, -1]), rnd.choice([0, 1, 10**6, -1]), parts)
        return fr.encode_fetch_request(fetch)
    pparts: list[fr.ProducePartition] = []
    for _ in range(rnd.randint(0, 3)):
        batches = b"".join(_batch(rnd, lz4=rnd.random() < 0.2) for _ in range(rnd.randint(1, 3)))
        pparts.append(fr.ProducePartition(rnd.choice(topics), rnd.choice([0, 1, 0, -1, 7]), batches))
    produce = fr.ProduceRequest(rnd.randrange(2**31), rnd.choice([1, 1, -1, 0, 2, -7]), rnd.choice([1000, 0, -1]), pparts)
    return fr.encode_produce_request(produce)


def _mutate(frame: bytes, mutation: str, rnd, other: bytes) -> bytes:
    b = bytearray(frame)
    if mutation == "none":
        return frame
    if mutation == "bitflip":
        for _ in range(rnd.randint(1, 8)):
            i = rnd.randrange(len(b))
            b[i] ^= 1 << rnd.randrange(8)
        return bytes(b)
    if mutation == "truncate":
        return bytes(b[: rnd.randrange(len(b))])
    if mutation == "length_lie":
        struct.pack_into(">i", b, 0, rnd.choice([0, 1, 7, 8, len(b) - 5, len(b) - 3, len(b) + 100, 2**31 - 1,
                                                 -1, -(2**31), 200 * 1024 * 1024, rnd.randrange(2**31)]))
        return bytes(b)
    if mutation == "count_lie" and len(b) >= 24:
        # partition_count: at 20 in a FETCH (after max_wait_ms, min_bytes), at 18 in a PRODUCE
        # (after acks, timeout_ms); the api_key low byte is at 5
        struct.pack_into(">i", b, 20 if b[5] == 1 else 18, rnd.choice([-1, 0, 1, 1000, 2**31 - 1, -(2**31)]))
        return bytes(b)
    if mutation == "splice":
        cut = rnd.randrange(len(b))
        return bytes(b[:cut]) + other[rnd.randrange(len(other)):]
    if mutation == "insert":
        i = rnd.randrange(len(b) + 1)
        return bytes(b[:i]) + rnd.randbytes(rnd.randint(1, 16)) + bytes(b[i:])
    if mutation == "delete":
        i = rnd.randrange(len(b))
        return bytes(b[:i]) + bytes(b[i + rnd.randint(1, 16):])
    if mutation == "random":
        return rnd.randbytes(rnd.randint(0, 300))
    if mutation == "random_framed":
        body = struct.pack(">hhi", rnd.choice([0, 1, 2, -1]), rnd.choice([0, 0, 1]), rnd.randrange(2**31))
        body += rnd.randbytes(rnd.randint(0, 300))
        return struct.pack(">i", len(body)) + body
    return frame


def _batch_produce_frame(rnd, topic: str) -> bytes:
    batches = [_batch(rnd, lz4=rnd.random() < 0.2) for _ in range(rnd.randint(1, 3))]
    i = rnd.randrange(len(batches))
    batches[i] = _mutate_batch(batches[i], rnd)
    req = fr.ProduceRequest(rnd.randrange(2**31), rnd.choice([1, -1]), 1000,
                            [fr.ProducePartition(topic, rnd.choice([0, 1]), b"".join(batches))])
    return fr.encode_produce_request(req)


class Exchange:
    """Send one input on a fresh connection, half-close, read answers until EOF (deadline)."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.outcomes: collections.Counter[str] = collections.Counter()

    def run(self, data: bytes) -> None:
        deadline = time.monotonic() + INPUT_DEADLINE_S
        s = socket.create_connection(self.address, timeout=INPUT_DEADLINE_S)
        try:
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                self.outcomes["closed while sending"] += 1
                return
            reader = fr.FrameReader(max_frame_bytes=1 << 30, min_frame_bytes=fr.RESPONSE_HEADER_SIZE)
            frames = 0
            while True:
                left = deadline - time.monotonic()
                assert left > 0, f"no answer and no close within {INPUT_DEADLINE_S} s for input {data[:200]!r}"
                s.settimeout(left)
                try:
                    buf = reader.get_buffer()
                    n = s.recv_into(buf)
                except socket.timeout:
                    raise AssertionError(f"broker hung on input {data[:200]!r}") from None
                except ConnectionResetError:
                    self.outcomes["reset"] += 1
                    return
                reader.buffer_updated(n)
                while (frame := reader.next_frame()) is not None:
                    cid, code = fr.decode_response_header(frame)
                    frames += 1
                    self.outcomes["answer" if code == 0 else f"error {code}"] += 1
                if reader.eof:
                    if frames == 0:
                        self.outcomes["closed without answer"] += 1
                    return
        finally:
            s.close()


def _healthy(broker, topic: str) -> None:
    assert broker.running, f"broker died:\n{broker.log_text()[-5000:]}"
    host, port = broker.fetch_address
    with DataPortClient(host, port, timeout=10) as c:
        r = c.produce([(topic, 0, encode_batch([(0, None, b"health", None)]))], acks=1).partitions[0]
        assert r.error_code == 0, r
        f = c.fetch([(topic, 0, r.base_offset, 1 << 16)]).partitions[0]
        assert f.error_code == 0 and len(f.records) > 0, f


def _grpc_produce(stub, rnd, topic: str) -> str:
    batches = [_batch(rnd, lz4=rnd.random() < 0.2) for _ in range(rnd.randint(1, 3))]
    i = rnd.randrange(len(batches))
    choice = rnd.randrange(3)
    if choice == 0:
        batches[i] = _mutate_batch(batches[i], rnd)
    elif choice == 1:
        batches[i] = rnd.randbytes(rnd.randint(0, 200))
    else:
        b = bytearray(batches[i])
        for _ in range(rnd.randint(1, 4)):
            b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
        batches[i] = bytes(b)
    req = annal_pb2.ProduceRequest(acks=rnd.choice([1, -1, 0, 3]), timeout_ms=1000, partitions=[
        annal_pb2.ProducePartition(topic=rnd.choice([topic, topic, "nope"]), partition=rnd.choice([0, 1, -1, 5]),
                                   batches=batches)])
    try:
        resp = stub.Produce(req, timeout=INPUT_DEADLINE_S)
    except grpc.RpcError as e:
        assert e.code() != grpc.StatusCode.DEADLINE_EXCEEDED, "gRPC Produce hung"
        return f"grpc status {e.code().name}"
    codes = {p.error_code for p in resp.results}
    return "grpc " + ",".join(str(c) for c in sorted(codes))


def run_fuzz(broker, inputs: int, name: str) -> dict[str, int]:
    _, seed_value = seeded_rng(name)
    topic = "fz-" + uuid.uuid4().hex[:6]
    with Admin(broker.bootstrap) as admin:
        admin.create_topics([NewTopic(topic, 2, {"segment_bytes": 256 << 10})])
    exchange = Exchange(broker.fetch_address)
    channel = grpc.insecure_channel(broker.bootstrap)
    stub = annal_pb2_grpc.AnnalStub(channel)
    count = [0]

    @seed(seed_value)
    @settings(max_examples=inputs, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(target=st.sampled_from(["data_fetch", "data_produce", "data_batches", "data_batches", "grpc_batches"]),
           mutation=st.sampled_from(MUTATIONS), case_seed=st.integers(0, 2**64 - 1))
    def one(target: str, mutation: str, case_seed: int) -> None:
        # Hypothesis draws the target, the mutation and a per-case seed; the bytes come from
        # random.Random(case_seed) (drawing every byte through Hypothesis is ~30x slower).
        rnd = random.Random(case_seed)
        count[0] += 1
        if target == "grpc_batches":
            exchange.outcomes[_grpc_produce(stub, rnd, topic)] += 1
        else:
            if target == "data_batches":
                frame = _batch_produce_frame(rnd, topic)
                mutation = rnd.choice(["none", "none", "none", "bitflip", "truncate", "length_lie"])
            else:
                frame = _base_frame("fetch" if target == "data_fetch" else "produce", rnd, topic)
            other = _base_frame(rnd.choice(["fetch", "produce"]), rnd, topic)
            exchange.run(_mutate(frame, mutation, rnd, other))
        if count[0] % HEALTH_EVERY == 0:
            _healthy(broker, topic)

    try:
        one()
    finally:
        channel.close()
    _healthy(broker, topic)
    for p in (0, 1):
        # Every batch served is CRC-valid and offsets are contiguous.
        fetch_all(broker.fetch_address, topic, p, decode=False)
    broker.stop()
    scans = scan_data_dir(broker.data_dir, records=True)
    bad = {k: s.problems for k, s in scans.items() if not s.ok}
    assert not bad, bad
    tracebacks = broker.log_text().count("Traceback")
    figures = {"seed": seed_value, "inputs": count[0], "broker_crashes": 0, "corrupt_segments": 0,
               "partitions_scanned": len(scans),
               "records_appended": sum((s.next_offset or 0) - (s.first_offset or 0) for s in scans.values()),
               "tracebacks_logged": tracebacks,
               # CRC-valid batches whose records do not parse (CRC fixed after garbling them):
               # the broker walks every record on append, so none may be stored.
               "stored_batches_failing_record_check": sum(s.record_invalid_batches for s in scans.values())}
    print(f"[{name}] " + " ".join(f"{k}={v}" for k, v in figures.items()))
    print(f"[{name}] outcomes: " + ", ".join(f"{k}: {v}" for k, v in exchange.outcomes.most_common()))
    assert figures["stored_batches_failing_record_check"] == 0, figures
    assert tracebacks == 0, "the broker logged unexpected exceptions:\n" + broker.log_text()[-8000:]
    return figures


@pytest.mark.timeout(240)
def test_fuzz_3000_inputs_no_crash_no_hang_no_corrupt_segment(broker):
    figures = run_fuzz(broker, 3000, "fuzz-3000")
    assert figures["inputs"] >= 2500  # hypothesis may stop a little early if it runs out of new cases


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_fuzz_100000_inputs_no_crash_no_hang_no_corrupt_segment(broker):
    figures = run_fuzz(broker, 100_000, "fuzz-100000")
    assert figures["inputs"] >= 90_000
