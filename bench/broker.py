"""Broker benchmarks: the three produce paths, data port fetch against a bare ``sendfile`` loop,
and the CPU cost of idle long-polls. Each figure is measured ``--runs`` times (median reported)
against a real broker process (``annal.bench._local_broker.LocalBroker``) on 127.0.0.1.

    .venv/bin/python -m annal.bench.broker all --runs 3            # everything
    .venv/bin/python -m annal.bench.broker produce --runs 3        # gRPC unary, gRPC stream, data port
    .venv/bin/python -m annal.bench.broker fetch --runs 3          # data port vs bare os.sendfile
    .venv/bin/python -m annal.bench.broker idle --runs 3           # 200 idle long-polling clients
    .venv/bin/python -m annal.bench.broker longpoll --runs 3       # long-poll p99, idle vs rolls + 1 GiB delete
    .venv/bin/python -m annal.bench.broker firstread --runs 3      # long-poll p99 while old data is read cold

produce: already-encoded ~1 MiB batches (one batch per request), acks=1, one partition,
``--window`` requests in flight on one connection, ``--produce-mib`` MiB per run; MB/s = record
bytes / wall time (1 MB = 10^6 bytes). Each run also measures the machine's ceiling for the same
bytes: ``os.write`` of the batches into a new file (fresh page-cache pages, as an append gets).
fetch: a 1 GiB partition (written first, so it is in the page cache) read from offset 0 to its
end by one client with ``--fetch-max-mib`` (default 64) per request, one request in flight; the baseline is a
separate process doing ``os.sendfile`` of the same segment files to one socket, read by the same
kind of client loop (``recv_into`` a reused buffer of the fetch size, filled front to back), in
the same run.
idle: ``--clients`` connections, each long-polling its own empty partition (max_wait_ms 500, as
Kafka's fetch.max.wait.ms, min_bytes 1, re-sent as soon as answered); broker CPU % of one core
from /proc/<pid>/stat (utime + stime) over ``--window-s`` seconds after a warm-up.

longpoll: the time from a 100-byte acks=1 PRODUCE to the answer of the FETCH it wakes (a
long-poll parked at the log end on another connection, one at a time, each checked to carry
that PRODUCE's record), idle, then while another process produces ~1 MiB batches into a topic
with 16 MiB segments (a roll every 16 requests) and retention deletes a 1 GiB segment;
``--load-mbps`` paces that load (default 0: as fast as the broker takes ``--window`` requests
in flight, which on a 2-core machine keeps both cores busy). p99 of each, and their ratio.

firstread: a 1 GiB partition (64 MiB segments) written, the broker restarted and, when this runs
as root, the page cache dropped; then another process reads it from offset 0 with 64 MiB fetches
(every byte is CRC-checked on its first read since start-up, from disk) while the long-poll
latency of ``longpoll`` is measured on another partition; against the idle p99 of the same run.

Prints one line per run and a JSON summary at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pathlib
import selectors
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

import grpc

from annal.protocol import annal_pb2 as pb
from annal.protocol import annal_pb2_grpc
from annal.protocol import framing as fr
from annal.record import encode_batch, iter_batch_positions, parse_header
from annal.client._connection import send_parts

from annal.bench._local_broker import LocalBroker, add_broker_pythonpath_option, use_broker_pythonpath


MB = 1_000_000
MiB = 1 << 20
_I32 = struct.Struct(">i")


def one_mib_batch() -> bytes:
    """A RecordBatch v2 of 1000-byte values, as close to 1 MiB as fits."""
    value = os.urandom(1000)
    n = 1024
    while True:
        batch = encode_batch([(int(time.time() * 1000), None, value, None)] * n)
        if len(batch) <= MiB:
            return batch
        n -= 1


def _stub(b: LocalBroker) -> annal_pb2_grpc.AnnalStub:
    ch = grpc.insecure_channel(b.bootstrap, options=[("grpc.max_send_message_length", 64 * MiB),
                                                      ("grpc.max_receive_message_length", 64 * MiB)])
    return annal_pb2_grpc.AnnalStub(ch)


def create_topic(b: LocalBroker, name: str, partitions: int = 1, **config: int) -> None:
    r = _stub(b).CreateTopics(pb.CreateTopicsRequest(
        topics=[pb.NewTopic(name=name, partitions=partitions, config=pb.TopicConfig(**config))]))
    if r.results[0].error_code:
        raise RuntimeError(r.results[0].error_message)


def delete_topic(b: LocalBroker, name: str) -> None:
    _stub(b).DeleteTopics(pb.DeleteTopicsRequest(names=[name]))


# ---------------------------------------------------------------------- data port plumbing


def _recv_exact_into(sock: socket.socket, view: memoryview) -> None:
    while len(view):
        n = sock.recv_into(view)
        if n == 0:
            raise ConnectionError("connection closed")
        view = view[n:]


def _recv_frame(sock: socket.socket, buf: bytearray) -> memoryview:
    """One frame into ``buf`` (grown when needed); returns a view of its payload."""
    head = bytearray(4)
    _recv_exact_into(sock, memoryview(head))
    (n,) = _I32.unpack(head)
    if n > len(buf):
        buf.extend(bytes(n - len(buf)))
    view = memoryview(buf)[:n]
    _recv_exact_into(sock, view)
    return view


class _Port:
    """Where ``produce_data_port`` connects, for a process that has no ``LocalBroker``."""

    def __init__(self, fetch_port: int) -> None:
        self.fetch_port = fetch_port


def pipelined(send: Callable[[int], None], receive: Callable[[], None], count: int, window: int,
              interval_s: float = 0.0) -> float:
    """Send requests ``0 .. count-1`` with ``send(i)``, at most ``window`` unanswered, taking
    each answer in order with ``receive()``; with ``interval_s``, request ``i`` leaves no
    earlier than ``i * interval_s`` after the first (a client's own pace, replayed). Returns
    the seconds from the first send to the last answer."""
    sent = received = 0
    started = time.perf_counter()
    while received < count:
        while sent < count and sent - received < window:
            if interval_s:
                ahead = started + sent * interval_s - time.perf_counter()
                if ahead > 0:
                    if sent > received:
                        break  # an answer is due first
                    time.sleep(ahead)
            send(sent)
            sent += 1
        receive()
        received += 1
    return time.perf_counter() - started


def produce_data_port(b: LocalBroker | _Port, topic: str, batch: bytes, count: int, window: int,
                      acks: int = 1) -> float:
    """``count`` produce requests of ``batch`` over the data port, ``window`` in flight."""
    return replay_data_port(b, topic, [batch] * count, window, acks=acks)


def replay_data_port(b: LocalBroker | _Port, topic: str, batches: "list[bytes]", window: int,
                     interval_s: float = 0.0, acks: int = 1) -> float:
    """One produce request per batch of ``batches`` over the data port, ``window`` in flight,
    ``interval_s`` apart when given (``pipelined``)."""
    sock = socket.create_connection(("127.0.0.1", b.fetch_port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(4096)

    def send(i: int) -> None:
        send_parts(sock, fr.produce_request_parts(fr.ProduceRequest(i, acks, 30000, [fr.ProducePartition(topic, 0, batches[i])])))

    def receive() -> None:
        resp = fr.decode_produce_response(_recv_frame(sock, buf))
        if resp.error_code or resp.partitions[0].error_code:
            raise RuntimeError(f"produce failed: {resp}")

    try:
        return pipelined(send, receive, len(batches), window, interval_s)
    finally:
        sock.close()


def produce_grpc_unary(b: LocalBroker, topic: str, batch: bytes, count: int, window: int) -> float:
    stub = _stub(b)
    req = pb.ProduceRequest(acks=1, partitions=[pb.ProducePartition(topic=topic, partition=0, batches=[batch])])
    pending: list[Any] = []
    started = time.perf_counter()
    for _ in range(count):
        if len(pending) >= window:
            r = pending.pop(0).result()
            if r.results[0].error_code:
                raise RuntimeError(str(r))
        pending.append(stub.Produce.future(req))
    for f in pending:
        if f.result().results[0].error_code:
            raise RuntimeError("produce failed")
    return time.perf_counter() - started


def produce_grpc_stream(b: LocalBroker, topic: str, batch: bytes, count: int, window: int) -> float:
    stub = _stub(b)
    slots = threading.Semaphore(window)

    def requests():
        for i in range(count):
            slots.acquire()
            yield pb.ProduceRequest(acks=1, correlation_id=i,
                                    partitions=[pb.ProducePartition(topic=topic, partition=0, batches=[batch])])

    started = time.perf_counter()
    n = 0
    for resp in stub.ProduceStream(requests()):
        if resp.results[0].error_code:
            raise RuntimeError(str(resp))
        slots.release()
        n += 1
    assert n == count
    return time.perf_counter() - started


def write_ceiling(directory: pathlib.Path, batch: bytes, count: int) -> float:
    """Seconds to ``os.write`` ``count`` blocks of ``len(batch)`` bytes into a new file: what
    appending to fresh page-cache pages costs on this machine right now (no network, no Python
    per-request work)."""
    path = directory / "ceiling.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        started = time.perf_counter()
        for _ in range(count):
            os.write(fd, batch)
        return time.perf_counter() - started
    finally:
        os.close(fd)
        os.unlink(path)


def warm_free_memory(directory: pathlib.Path, block: bytes, count: int) -> None:
    """Write ``count`` blocks into a scratch file and unlink it, just before a timed produce.

    On a virtual machine whose host takes back the guest's free memory (virtio-balloon free
    page reporting, as on the machine of docs/benchmarks.md), the first write into a page the
    host took back costs about 8x: ``os.write`` of 1 GiB into a new file measured 4.0-4.9 GB/s
    right after another such file was deleted and 0.47-0.76 GB/s after 5 s of pause, and the
    broker's produce runs swung between about 0.5 and 1.7 GB/s with it, whatever the broker
    code. Freeing a run's worth of just-written page cache first gives the timed run pages the
    host still backs, so runs compare the broker, not the host's memory reclaim."""
    path = directory / "warm.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(count):
            os.write(fd, block)
    finally:
        os.close(fd)
        os.unlink(path)


def bench_produce(args: argparse.Namespace, b: LocalBroker, out: dict[str, Any]) -> None:
    batch = one_mib_batch()
    count = args.produce_mib
    paths: dict[str, Callable[..., float]] = {
        "grpc_unary": produce_grpc_unary,
        "grpc_stream": produce_grpc_stream,
        "data_port": produce_data_port,
    }
    if getattr(args, "paths", None):
        paths = {k: v for k, v in paths.items() if k in args.paths.split(",")}
    runs: dict[str, list[float]] = {name: [] for name in [*paths, "write_ceiling"]}
    for run in range(args.runs):
        # Each run measures every path and the machine's write ceiling back to back, so that
        # they can be compared within a run on this shared, noisy machine.
        for name, fn in paths.items():
            topic = f"produce-{name}-{run}"
            create_topic(b, topic, max_message_bytes=2 * MiB)
            fn(b, topic, batch, 16, args.window)  # warm-up: connection, first segment
            if args.warm_memory:
                warm_free_memory(pathlib.Path(b.data_dir).parent, batch, count + count // 8)
            elapsed = fn(b, topic, batch, count, args.window)
            rate = count * len(batch) / elapsed / MB
            runs[name].append(rate)
            print(f"produce {name:<13} run {run + 1}: {count} x {len(batch)} B in {elapsed:.2f} s = {rate:.0f} MB/s",
                  flush=True)
            delete_topic(b, topic)
        elapsed = write_ceiling(pathlib.Path(b.data_dir).parent, batch, count)
        rate = count * len(batch) / elapsed / MB
        runs["write_ceiling"].append(rate)
        print(f"produce write_ceiling run {run + 1}: os.write of {count} x {len(batch)} B into a new file = "
              f"{rate:.0f} MB/s", flush=True)
    for name, values in runs.items():
        out[f"produce_{name}_MBps"] = {"median": statistics.median(values), "runs": values}


# ---------------------------------------------------------------------- fetch


def pace_reads(started: float, done_bytes: int, gap_s: float, rate_bps: float) -> None:
    """Before a fetch: sleep ``gap_s``, or until ``done_bytes`` would have taken this long at
    ``rate_bps`` bytes/s since ``started`` (a client's own reading pace, replayed)."""
    if gap_s:
        time.sleep(gap_s)
    if rate_bps:
        ahead = started + done_bytes / rate_bps - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)


def fetch_data_port(b: "LocalBroker | _Port", topic: str, end_offset: int, max_bytes: int,
                    gap_s: float = 0.0, rate_bps: float = 0.0,
                    keep: "list[bytes] | None" = None) -> tuple[float, int]:
    """Read ``topic``-0 from offset 0 to ``end_offset`` over the data port, one fetch in flight,
    paced by ``gap_s`` or ``rate_bps`` (``pace_reads``); each batch read is appended to
    ``keep`` when given. Returns the seconds and the record bytes read."""
    sock = socket.create_connection(("127.0.0.1", b.fetch_port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(max_bytes + 2 * MiB)
    offset = 0
    total = 0
    cid = 0
    started = time.perf_counter()
    while offset < end_offset:
        cid += 1
        pace_reads(started, total, gap_s, rate_bps)
        sock.sendall(fr.encode_fetch_request(fr.FetchRequest(cid, 0, 0, [fr.FetchPartition(topic, 0, offset, max_bytes)])))
        p = fr.decode_fetch_response(_recv_frame(sock, buf)).partitions[0]
        if p.error_code or not len(p.records):
            raise RuntimeError(f"fetch at {offset}: {p.error_code} {p.error_message}")
        last = None
        for pos, size in iter_batch_positions(p.records):
            last = pos
            if keep is not None:
                keep.append(bytes(p.records[pos:pos + size]))
        assert last is not None
        offset = parse_header(p.records, last).next_offset
        total += len(p.records)
    elapsed = time.perf_counter() - started
    sock.close()
    return elapsed, total


_SENDFILE_SERVER = r"""
import os, socket, sys
files = sys.argv[1:]
ls = socket.create_server(("127.0.0.1", 0))
print(ls.getsockname()[1], flush=True)
conn, _ = ls.accept()
for path in files:
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    off = 0
    while off < size:
        off += os.sendfile(conn.fileno(), fd, off, size - off)
    os.close(fd)
conn.close()
"""


def fetch_bare_sendfile(files: list[str], chunk: int) -> tuple[float, int]:
    proc = subprocess.Popen([sys.executable, "-c", _SENDFILE_SERVER, *files], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    sock = socket.create_connection(("127.0.0.1", port))
    buf = bytearray(chunk)
    view = memoryview(buf)
    total = 0
    pos = 0
    started = time.perf_counter()
    while True:
        # Fill the buffer front to back, as the data port client fills a response frame (a
        # loop that always receives at the start of the buffer would keep the same few
        # megabytes hot in the cache, which no real consumer does).
        n = sock.recv_into(view[pos:])
        if n == 0:
            break
        total += n
        pos += n
        if pos == chunk:
            pos = 0
    elapsed = time.perf_counter() - started
    sock.close()
    proc.wait()
    return elapsed, total


def bench_fetch(args: argparse.Namespace, b: LocalBroker, out: dict[str, Any]) -> None:
    topic = "fetch-1gib"
    create_topic(b, topic, max_message_bytes=2 * MiB)
    batch = one_mib_batch()
    count = (args.fetch_gib * 1024 * MiB) // len(batch)
    produce_data_port(b, topic, batch, count, 8)
    end_offset = count * (parse_header(batch).last_offset_delta + 1)
    log_dir = pathlib.Path(b.data_dir) / f"{topic}-0"
    files = sorted(str(p) for p in log_dir.glob("*.log"))
    max_bytes = args.fetch_max_mib * MiB
    fetch_data_port(b, topic, end_offset, max_bytes)  # warm: every page in the cache
    broker_runs, bare_runs, ratios = [], [], []
    for run in range(args.runs):
        # Alternate which goes first, so neither always runs on the other's warmed caches.
        if run % 2:
            st, sbytes = fetch_bare_sendfile(files, max_bytes)
            bt, bbytes = fetch_data_port(b, topic, end_offset, max_bytes)
        else:
            bt, bbytes = fetch_data_port(b, topic, end_offset, max_bytes)
            st, sbytes = fetch_bare_sendfile(files, max_bytes)
        brate, srate = bbytes / bt / MB, sbytes / st / MB
        broker_runs.append(brate)
        bare_runs.append(srate)
        ratios.append(brate / srate)
        print(f"fetch run {run + 1}: data port {bbytes} B in {bt:.2f} s = {brate:.0f} MB/s; bare sendfile "
              f"{sbytes} B in {st:.2f} s = {srate:.0f} MB/s; ratio {brate / srate:.0%}", flush=True)
    out["fetch_data_port_MBps"] = {"median": statistics.median(broker_runs), "runs": broker_runs}
    out["fetch_bare_sendfile_MBps"] = {"median": statistics.median(bare_runs), "runs": bare_runs}
    out["fetch_ratio"] = {"median": statistics.median(ratios), "runs": ratios}
    delete_topic(b, topic)


# ---------------------------------------------------------------------- idle long-polls


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds_precise(pid: int) -> float:
    """On-CPU time of the process's live threads, from the scheduler's own accounting
    (``/proc/<pid>/task/*/schedstat``, nanoseconds), for phases too short for
    ``_cpu_seconds``' clock ticks (10 ms each; a 0.1 s phase is ~10 of them). Threads that
    ended meanwhile are not counted: for a broker's long-lived threads. Falls back to
    ``_cpu_seconds`` where the kernel has no schedstat."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return _cpu_seconds(pid)
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            continue  # the thread ended
        except (OSError, ValueError, IndexError):
            return _cpu_seconds(pid)
    return total / 1e9


class _IdlePollers:
    """``n`` sockets, each long-polling one partition; answers are read and the fetch re-sent."""

    def __init__(self, b: LocalBroker, topic: str, n: int, max_wait_ms: int) -> None:
        self.sel = selectors.DefaultSelector()
        self.answers = 0
        self.socks = []
        self.requests = []
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", b.fetch_port))
            s.setblocking(False)
            req = fr.encode_fetch_request(fr.FetchRequest(i, max_wait_ms, 1, [fr.FetchPartition(topic, i, 0, MiB)]))
            self.socks.append(s)
            self.requests.append(req)
            self.sel.register(s, selectors.EVENT_READ, (i, fr.FrameReader(min_frame_bytes=fr.RESPONSE_HEADER_SIZE)))
            s.sendall(req)
        self.stop = False

    def run(self, until: float) -> None:
        while time.monotonic() < until:
            for key, _ in self.sel.select(timeout=0.2):
                i, reader = key.data
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                if not data:
                    raise ConnectionError("broker closed an idle connection")
                reader.receive_data(data)
                while (frame := reader.next_frame()) is not None:
                    resp = fr.decode_fetch_response(frame)
                    if resp.error_code or resp.partitions[0].error_code:
                        raise RuntimeError(f"idle fetch failed: {resp}")
                    self.answers += 1
                    key.fileobj.sendall(self.requests[i])  # type: ignore[union-attr]

    def close(self) -> None:
        for s in self.socks:
            s.close()


# The floor for the idle figure: an asyncio server that does nothing but arm a 500 ms timer per
# request and then answer with a fixed, valid, empty FETCH response. Same clients, same rate.
_FLOOR_SERVER = r"""
import asyncio
from annal.protocol import framing as fr
ANSWER = fr.encode_fetch_response(fr.FetchResponse(0, 0, [fr.FetchPartitionResult("idle", 0, 0, "", 0, 0, b"")]))
class P(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t
    def data_received(self, d):
        asyncio.get_running_loop().call_later(0.5, self.t.write, ANSWER)
async def main():
    srv = await asyncio.get_running_loop().create_server(P, "127.0.0.1", 0, backlog=1024)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


class _FloorServer:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _FLOOR_SERVER], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.fetch_port = int(self.proc.stdout.readline())
        self.pid = self.proc.pid

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _measure_idle(target: Any, topic: str, clients: int, window_s: float) -> tuple[float, float]:
    pollers = _IdlePollers(target, topic, clients, 500)
    try:
        pollers.run(time.monotonic() + 2.0)  # warm-up: every client has had an answer
        cpu0, answers0, t0 = _cpu_seconds(target.pid), pollers.answers, time.monotonic()
        pollers.run(t0 + window_s)
        cpu1, answers1, t1 = _cpu_seconds(target.pid), pollers.answers, time.monotonic()
    finally:
        pollers.close()
    return (cpu1 - cpu0) / (t1 - t0) * 100, (answers1 - answers0) / (t1 - t0)


def bench_idle(args: argparse.Namespace, b: LocalBroker, out: dict[str, Any]) -> None:
    topic = "idle"
    create_topic(b, topic, partitions=args.clients)
    runs, rates, floors = [], [], []
    for run in range(args.runs):
        pct, rate = _measure_idle(b, topic, args.clients, args.window_s)
        floor = _FloorServer()
        try:
            fpct, frate = _measure_idle(floor, topic, args.clients, args.window_s)
        finally:
            floor.close()
        runs.append(pct)
        rates.append(rate)
        floors.append(fpct)
        print(f"idle run {run + 1}: {args.clients} clients, {rate:.0f} long-poll answers/s, broker CPU "
              f"{pct:.2f}% of one core; floor (asyncio timer + fixed answer) {fpct:.2f}% at {frate:.0f}/s; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
    out["idle_cpu_pct"] = {"median": statistics.median(runs), "runs": runs}
    out["idle_answers_per_s"] = {"median": statistics.median(rates), "runs": rates}
    out["idle_floor_cpu_pct"] = {"median": statistics.median(floors), "runs": floors}
    delete_topic(b, topic)


# ---------------------------------------------------------------------- long-poll under disk work


def _longpoll_latencies(b: LocalBroker, topic: str, seconds: float, stop_early: Callable[[], bool] | None = None
                        ) -> list[float]:
    """Seconds from a small acks=1 PRODUCE (one connection) to the FETCH answer it wakes (a
    long-poll at the log end on another connection), repeated for ``seconds``.

    Each FETCH asks for the offset the next PRODUCE will get, found from the answer to the one
    before (the first PRODUCE, not timed, finds the log end): the long-poll is parked before
    the timed PRODUCE is sent, so the answer must carry exactly that PRODUCE's record, and a
    sample whose answer does not is an error, not a figure. (A FETCH from an offset already
    written is answered on arrival, before the PRODUCE: its "latency" would only be the read
    of an answer already waiting.)"""
    prod = socket.create_connection(("127.0.0.1", b.fetch_port))
    cons = socket.create_connection(("127.0.0.1", b.fetch_port))
    for s_ in (prod, cons):
        s_.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    small = encode_batch([(0, None, b"x" * 100, None)])
    buf = bytearray(1 << 20)
    out: list[float] = []

    def produce(cid: int) -> None:
        send_parts(prod, fr.produce_request_parts(fr.ProduceRequest(cid, 1, 30000, [fr.ProducePartition(topic, 0, small)])))

    def produced_offset() -> int:
        r = fr.decode_produce_response(_recv_frame(prod, buf)).partitions[0]
        if r.error_code:
            raise RuntimeError(f"produce failed: {r}")
        return r.base_offset

    produce(0)
    offset = produced_offset() + 1  # the log end: the next PRODUCE's offset
    cid = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and not (stop_early and stop_early()):
            cid += 1
            cons.sendall(fr.encode_fetch_request(fr.FetchRequest(cid, 2000, 1, [fr.FetchPartition(topic, 0, offset, 1 << 20)])))
            time.sleep(0.002)  # the fetch is parked as a long-poll
            started = time.perf_counter()
            produce(cid)
            p = fr.decode_fetch_response(_recv_frame(cons, buf)).partitions[0]
            elapsed = time.perf_counter() - started
            base = produced_offset()
            if p.error_code:
                raise RuntimeError(f"fetch failed: {p}")
            if base != offset or not p.records or parse_header(p.records).base_offset != base:
                raise RuntimeError(f"the long-poll at offset {offset} was not answered with the record produced "
                                   f"at {base}: the sample would not time a wake-up")
            out.append(elapsed)
            offset = base + 1
    finally:
        prod.close()
        cons.close()
    return out


def _p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.99 * len(xs)))]


def _read_cold(fetch_port: int, topic: str, end_offset: int, max_bytes: int, result: Any) -> None:
    """``firstread``'s reader, in its own process: the whole partition, MB/s into ``result``."""
    elapsed, total = fetch_data_port(_Port(fetch_port), topic, end_offset, max_bytes)
    result.value = total / elapsed / MB


def _drop_page_cache() -> bool:
    """Write back and drop the page cache (root only): True when dropped."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def bench_firstread(args: argparse.Namespace, b: LocalBroker, out: dict[str, Any]) -> None:
    """p99 of long-poll wake-ups while a consumer reads 1 GiB of segments written before a
    restart (their first reads since start-up: a CRC check of every batch, from disk when the
    page cache was dropped), against the idle p99 right before."""
    idle_p99, read_p99, read_max, ratios, rates = [], [], [], [], []
    batch = one_mib_batch()
    ctx = multiprocessing.get_context("spawn")
    for run in range(args.runs):
        cold = f"firstread-cold-{run}"
        lp = f"firstread-lp-{run}"
        create_topic(b, cold, segment_bytes=64 * MiB, max_message_bytes=2 * MiB)
        create_topic(b, lp)
        produce_data_port(b, cold, batch, 1024, args.window)
        end_offset = 1024 * (parse_header(batch).last_offset_delta + 1)
        b.stop()
        dropped = args.drop_page_cache and _drop_page_cache()
        b.start()
        idle = _longpoll_latencies(b, lp, args.window_s / 2)
        result = ctx.Value("d", 0.0)
        reader = ctx.Process(target=_read_cold, args=(b.fetch_port, cold, end_offset, args.fetch_max_mib * MiB, result),
                             daemon=True)
        reader.start()
        time.sleep(0.2)  # the reader's interpreter starts
        busy = _longpoll_latencies(b, lp, 120.0, stop_early=lambda: not reader.is_alive())
        reader.join(120)
        if reader.exitcode != 0:
            raise RuntimeError(f"the reader process failed (exit {reader.exitcode})")
        for name in (cold, lp):
            delete_topic(b, name)
        i99, r99 = _p99(idle), _p99(busy)
        idle_p99.append(i99 * 1000)
        read_p99.append(r99 * 1000)
        read_max.append(max(busy) * 1000)
        ratios.append(r99 / i99)
        rates.append(result.value)
        print(f"firstread run {run + 1}: idle p99 {i99 * 1000:.2f} ms ({len(idle)} wake-ups); while 1 GiB is read "
              f"{'cold' if dropped else 'from the page cache'} at {result.value:.0f} MB/s: "
              f"p99 {r99 * 1000:.2f} ms, max {max(busy) * 1000:.2f} ms ({len(busy)}), ratio {r99 / i99:.2f}; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
    out["firstread_idle_p99_ms"] = {"median": statistics.median(idle_p99), "runs": idle_p99}
    out["firstread_read_p99_ms"] = {"median": statistics.median(read_p99), "runs": read_p99}
    out["firstread_read_max_ms"] = {"median": statistics.median(read_max), "runs": read_max}
    out["firstread_p99_ratio"] = {"median": statistics.median(ratios), "runs": ratios}
    out["firstread_cold_read_MBps"] = {"median": statistics.median(rates), "runs": rates}


def _produce_load(fetch_port: int, topic: str, window: int, rate_mbps: float, producing: Any, done: Any,
                  produced: Any) -> None:
    """The long-poll benchmark's load, in its own process: ~1 MiB batches until ``done``
    (``producing`` is set once the first are appended; ``produced`` counts the bytes appended).
    ``rate_mbps`` 0: as fast as the broker takes them, ``window`` requests in flight; otherwise
    one request at a time, each sent when the rate says it is due."""
    batch = one_mib_batch()
    if not rate_mbps:
        while not done.is_set():
            produce_data_port(_Port(fetch_port), topic, batch, 64, window)
            produced.value += 64 * len(batch)
            producing.set()
        return
    sock = socket.create_connection(("127.0.0.1", fetch_port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(4096)
    interval = len(batch) / (rate_mbps * MB)
    due = time.perf_counter()
    cid = 0
    try:
        while not done.is_set():
            cid += 1
            send_parts(sock, fr.produce_request_parts(fr.ProduceRequest(cid, 1, 30000, [fr.ProducePartition(topic, 0, batch)])))
            resp = fr.decode_produce_response(_recv_frame(sock, buf))
            if resp.error_code or resp.partitions[0].error_code:
                raise RuntimeError(f"produce failed: {resp}")
            produced.value += len(batch)
            producing.set()
            due += interval
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
    finally:
        sock.close()


def bench_longpoll(args: argparse.Namespace, b: LocalBroker, out: dict[str, Any]) -> None:
    """p99 of long-poll wake-ups, idle and while (a) another process produces ~1 MiB batches
    into a topic with 16 MiB segments (a roll every 16 requests) and (b) retention deletes a
    1 GiB segment (a topic of one 1 GiB segment plus one batch, retention_bytes 1 MiB: the
    maintenance timer deletes the big segment within its interval)."""
    idle_p99, load_p99, ratios, rates = [], [], [], []
    batch = one_mib_batch()
    for run in range(args.runs):
        lp = f"longpoll-{run}"
        create_topic(b, lp)
        idle = _longpoll_latencies(b, lp, args.window_s / 2)
        big = f"longpoll-big-{run}"
        create_topic(b, big, segment_bytes=1 << 30, retention_bytes=1 << 20, max_message_bytes=2 * MiB)
        produce_data_port(b, big, batch, 1024, args.window)  # 1 GiB in one segment (not deleted yet)
        load = f"longpoll-load-{run}"
        create_topic(b, load, segment_bytes=16 * MiB, max_message_bytes=2 * MiB)
        # The load comes from another process: in this one its thread would share the GIL
        # with the latency client, and the p99 would measure this process, not the broker.
        ctx = multiprocessing.get_context("spawn")
        done, producing, produced = ctx.Event(), ctx.Event(), ctx.Value("d", 0.0)
        loader = ctx.Process(target=_produce_load, args=(b.fetch_port, load, args.window, args.load_mbps, producing,
                                                         done, produced), daemon=True)
        loader.start()
        if not producing.wait(60):
            raise RuntimeError("the load process did not start producing")
        produce_data_port(b, big, batch, 2, 1)  # rolls the 1 GiB segment: retention deletes it now
        before, t0 = produced.value, time.perf_counter()
        busy = _longpoll_latencies(b, lp, args.window_s / 2)
        rate = (produced.value - before) / (time.perf_counter() - t0) / MB
        done.set()
        loader.join(60)
        if loader.exitcode != 0:
            raise RuntimeError(f"the load process failed (exit {loader.exitcode})")
        for name in (lp, big, load):
            delete_topic(b, name)
        i99, l99 = _p99(idle), _p99(busy)
        idle_p99.append(i99 * 1000)
        load_p99.append(l99 * 1000)
        ratios.append(l99 / i99)
        rates.append(rate)
        print(f"longpoll run {run + 1}: idle p99 {i99 * 1000:.2f} ms ({len(idle)} wake-ups), under rolls + a 1 GiB "
              f"segment deletion p99 {l99 * 1000:.2f} ms ({len(busy)}; load {rate:.0f} MB/s), ratio {l99 / i99:.2f}; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
    out["longpoll_idle_p99_ms"] = {"median": statistics.median(idle_p99), "runs": idle_p99}
    out["longpoll_load_p99_ms"] = {"median": statistics.median(load_p99), "runs": load_p99}
    out["longpoll_p99_ratio"] = {"median": statistics.median(ratios), "runs": ratios}
    out["longpoll_load_MBps"] = {"median": statistics.median(rates), "runs": rates, "asked": args.load_mbps}


# ---------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m annal.bench.broker", description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["all", "produce", "fetch", "idle", "longpoll", "firstread"], nargs="?",
                   default="all")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--produce-mib", type=int, default=1024, help="MiB produced per run and path")
    p.add_argument("--window", type=int, default=4, help="produce requests in flight")
    p.add_argument("--load-mbps", type=float, default=0.0,
                   help="longpoll: the produce load's rate in MB/s, one request at a time (0: as fast as the broker "
                        "takes --window requests in flight)")
    p.add_argument("--no-warm-memory", dest="warm_memory", action="store_false",
                   help="produce: skip writing and freeing a run's worth of page cache before each timed run "
                        "(see warm_free_memory)")
    p.add_argument("--paths", default=None, help="produce: comma-separated subset of grpc_unary,grpc_stream,data_port")
    p.add_argument("--fetch-gib", type=int, default=1)
    p.add_argument("--fetch-max-mib", type=int, default=64, help="max_bytes of each fetch")
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--window-s", type=float, default=10.0)
    p.add_argument("--keep-page-cache", dest="drop_page_cache", action="store_false",
                   help="firstread: do not drop the page cache before reading (it is dropped only as root anyway)")
    p.add_argument("--data-dir", default=None, help="broker data dir (default: a temporary one, removed)")
    p.add_argument("--json", default=None, help="also write the summary here")
    add_broker_pythonpath_option(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tmp = None
    if args.data_dir is None:
        tmp = tempfile.mkdtemp(prefix="annal-bench-broker-")
        data_dir = pathlib.Path(tmp) / "data"
    else:
        data_dir = pathlib.Path(args.data_dir)
    use_broker_pythonpath(args.broker_pythonpath)
    # The figures here are the data port's: no Kafka listener (a base broker given by
    # --broker-pythonpath may predate it and its flag).
    b = LocalBroker(data_dir=str(data_dir), extra_args=["--log-level", "WARNING", "--metrics-port", "-1"],
                    kafka_port=None if args.broker_pythonpath else -1)
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "nproc": os.cpu_count()}
    try:
        b.start()
        if args.what in ("all", "produce"):
            bench_produce(args, b, out)
        if args.what in ("all", "fetch"):
            bench_fetch(args, b, out)
        if args.what in ("all", "idle"):
            bench_idle(args, b, out)
        if args.what in ("all", "longpoll"):
            bench_longpoll(args, b, out)
        if args.what in ("all", "firstread"):
            bench_firstread(args, b, out)
    finally:
        rc = b.stop()
        if rc != 0:
            print(f"broker exited with {rc}:\n{b.log_tail()}", file=sys.stderr)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=1))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
