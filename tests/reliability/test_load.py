"""Load: 200 concurrent data port connections (150 long-polling fetchers, 50 producers) against
one broker for 12 s here and 60 s in the slow run, while its resident memory and open
descriptors are sampled from /proc.

What must hold: no error at all (every answer error-free at request and partition level, no
connection dropped, no request without an answer in 30 s), every batch a fetcher gets passes
validate_batch (CRC included) and follows the previous one, the producers' acknowledged record
count equals what the partitions hold, and the broker's descriptors stay within its baseline
plus one per connection (plus a small margin) and fall back to the baseline once the clients
leave. Anonymous memory (heap, not the mapped segment files, which grow with the data) must not
keep growing: its peak over the last third of the run stays within 1.5x + 32 MiB of its peak
over the first third. The figures are printed (docs/reliability.md has the ones of recorded
runs).

The clients are raw asyncio connections speaking ``annal.protocol.framing`` in the test
process, so the load generator costs one thread, not 200.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from annal.protocol import framing as fr
from annal.record import LOG_OVERHEAD, encode_batch, validate_batch
from annal.client import Admin, NewTopic
from harness.faults import ProcessSampler, count_fds
from harness.zookeeper import wait_until

PARTITIONS = 8
PRODUCERS = 50
FETCHERS = 150
ANSWER_TIMEOUT_S = 30.0


def read_rss_anon_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.frames = fr.FrameReader(max_frame_bytes=1 << 26, min_frame_bytes=fr.RESPONSE_HEADER_SIZE)

    async def request(self, data: bytes) -> memoryview:
        self.writer.write(data)
        await self.writer.drain()
        while True:
            frame = self.frames.next_frame()
            if frame is not None:
                return frame
            chunk = await asyncio.wait_for(self.reader.read(1 << 16), ANSWER_TIMEOUT_S)
            if not chunk:
                raise ConnectionError("broker closed the connection")
            view = memoryview(chunk)
            while view:
                buf = self.frames.get_buffer()
                n = min(len(buf), len(view))
                buf[:n] = view[:n]
                self.frames.buffer_updated(n)
                view = view[n:]


async def _producer(addr, topic: str, partition: int, stop: float, stats: dict) -> None:
    conn = _Conn(*await asyncio.open_connection(*addr))
    cid = 0
    try:
        while time.monotonic() < stop:
            cid += 1
            batch = encode_batch([(int(time.time() * 1000), None, b"p%d-%d-" % (partition, cid) + b"x" * 90, None)
                                  for _ in range(10)])
            frame = await conn.request(fr.encode_produce_request(
                fr.ProduceRequest(cid, 1, 30000, [fr.ProducePartition(topic, partition, batch)])))
            resp = fr.decode_produce_response(frame)
            assert resp.correlation_id == cid
            p = resp.partitions[0]
            if p.error_code:
                stats["errors"].append(f"produce {topic}-{partition}: {p.error_code} {p.error_message}")
                return
            stats["acked"] += 10
            stats["produce_requests"] += 1
            await asyncio.sleep(0.05)
    finally:
        conn.writer.close()


async def _fetcher(addr, topic: str, partition: int, stop: float, stats: dict) -> None:
    conn = _Conn(*await asyncio.open_connection(*addr))
    offset = 0
    cid = 0
    try:
        while time.monotonic() < stop:
            cid += 1
            frame = await conn.request(fr.encode_fetch_request(fr.FetchRequest(
                cid, 500, 32 << 10, [fr.FetchPartition(topic, partition, offset, 256 << 10)])))
            resp = fr.decode_fetch_response(frame)
            assert resp.correlation_id == cid
            p = resp.partitions[0]
            if p.error_code:
                stats["errors"].append(f"fetch {topic}-{partition}@{offset}: {p.error_code} {p.error_message}")
                return
            data = bytes(p.records)
            pos = 0
            while pos < len(data):
                h = validate_batch(data, pos)
                if not h.base_offset <= offset < h.next_offset:
                    stats["errors"].append(f"fetch {topic}-{partition}: batch [{h.base_offset}, {h.next_offset}) at {offset}")
                    return
                offset = h.next_offset
                pos += h.batch_length + LOG_OVERHEAD
            stats["fetch_responses"] += 1
            stats["fetched_bytes"] += len(data)
    finally:
        conn.writer.close()


async def _run_clients(addr, topic: str, duration_s: float, stats: dict) -> None:
    stop = time.monotonic() + duration_s
    tasks = [_producer(addr, topic, i % PARTITIONS, stop, stats) for i in range(PRODUCERS)]
    tasks += [_fetcher(addr, topic, i % PARTITIONS, stop, stats) for i in range(FETCHERS)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            stats["errors"].append(f"{type(r).__name__}: {r}")


def run_load(broker, duration_s: float, name: str) -> dict:
    topic = "load-" + uuid.uuid4().hex[:8]
    with Admin(broker.bootstrap) as admin:
        admin.create_topics([NewTopic(topic, PARTITIONS)])
    pid = broker.pid
    baseline_fds = count_fds(pid)
    sampler = ProcessSampler(pid, interval_s=0.25).start()
    anon: list[tuple[float, int]] = []
    stats: dict = {"errors": [], "acked": 0, "produce_requests": 0, "fetch_responses": 0, "fetched_bytes": 0}
    t0 = time.monotonic()

    async def main() -> None:
        async def sample_anon() -> None:
            while time.monotonic() < t0 + duration_s:
                anon.append((time.monotonic(), read_rss_anon_kib(pid)))
                await asyncio.sleep(0.25)

        await asyncio.gather(_run_clients(broker.fetch_address, topic, duration_s, stats), sample_anon())

    asyncio.run(main())
    # Once every client is gone the broker must give its descriptors back.
    wait_until(lambda: count_fds(pid) <= baseline_fds + 8, 30, "descriptors back to the baseline")
    summary = sampler.stop()
    assert not stats["errors"], stats["errors"][:20]
    assert broker.running
    with Admin(broker.bootstrap) as admin:
        desc = admin.describe_topics([topic])[0]
    stored = sum(p.log_end_offset for p in desc.partitions)
    assert stored == stats["acked"], (stored, stats["acked"])
    assert stats["fetch_responses"] > 0 and stats["produce_requests"] > 0
    connections = PRODUCERS + FETCHERS
    assert summary.fds_max <= baseline_fds + connections + 64, summary
    third = duration_s / 3
    early = max(k for t, k in anon if t <= t0 + third)
    late = max(k for t, k in anon if t >= t0 + 2 * third)
    assert late <= early * 1.5 + 32 * 1024, f"anonymous memory grew from {early} KiB to {late} KiB"
    figures = {
        "duration_s": duration_s, "connections": connections, "records_acked": stats["acked"],
        "produce_requests": stats["produce_requests"], "fetch_responses": stats["fetch_responses"],
        "fetched_mib": round(stats["fetched_bytes"] / 2**20, 1), "errors": 0,
        "baseline_fds": baseline_fds, "rss_anon_kib_first_third_max": early, "rss_anon_kib_last_third_max": late,
    }
    print(f"[{name}] " + " ".join(f"{k}={v}" for k, v in figures.items()))
    print(f"[{name}] broker {summary.line()}")
    return figures


@pytest.mark.timeout(120)
def test_load_200_connections_12s_no_errors_bounded_memory_and_fds(broker):
    run_load(broker, 12.0, "load-12s")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_load_200_connections_60s_no_errors_bounded_memory_and_fds(broker):
    run_load(broker, 60.0, "load-60s")
