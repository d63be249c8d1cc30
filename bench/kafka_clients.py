"""Kafka clients against the Kafka listener, and the listener against the data port.

    .venv/bin/python -m annal.bench.kafka_clients [--runs 3] [--records 1000000]
        [--python-records 200000] [--fetch-mib 512] [--fetch-gap-ms 0]
        [--markdown docs/benchmarks/kafka.md]

Each run starts a fresh standalone broker (``LocalBroker``) and measures, with 100-byte values,
one partition, acks=1:

- confluent-kafka (librdkafka): a ``produce()`` + ``poll(0)`` loop then ``flush()``; a consumer
  reading the topic back with ``consume(num_messages=10000)`` and ``fetch.queue.backoff.ms=1``
  (the issue's Kafka 4.1 figures were taken the same way);
- kafka-python: ``send()`` in a loop then ``flush()``; a consumer iterating over the topic;
- Annal's SDK over the data port, the same numbers of records (the baseline for broker CPU),
  and the SDK reading confluent-kafka's records back over the data port: the same batches, so
  the same records per fetch, as the confluent-kafka consumer got through the listener;
- broker CPU-seconds per million records of each of those (the on-CPU time of the broker's
  threads from ``/proc/<pid>/task/*/schedstat``, nanoseconds, around each phase, so client CPU
  is not counted);
- large fetches: a page-cached partition of ~1 MiB batches read from offset 0 to its end with
  64 MiB fetches, three times alternately through the Kafka listener (Fetch v12, raw socket,
  Annal's codec) and through the data port (raw socket), the two clients doing the same work
  per answer (each port's figure: the median of its three reads);
- the same client work through both ports (``same_client_phases``): raw sockets producing the
  same ~64 KiB batches and fetching the same records back 1 MiB at a time, broker CPU per
  million records of each: the listener's own cost, apart from how each client library
  batches and fetches (librdkafka's batches, fetches and socket reads differ from the SDK's);
  with ``--fetch-gap-ms G``, the same reads again with G ms between an answer and the next
  request: a broker that sleeps between requests spends more on each, on either port, so this
  compares the ports at a slow consumer's pace;
- confluent-kafka's own workload replayed through both ports (``client_workload_phases``): the
  batches librdkafka wrote (read back from the log), one produce request each at the pace it
  sent them, and its records read back with its 1 MiB fetches at the pace it read them; the
  1.2x CPU ratio on the same workload, confluent-kafka through the listener against the data
  port, and the raw replay through both ports. librdkafka's requests are smaller (produce) and
  further apart (consume) than the SDK's, and each costs the broker more on either port, so
  confluent-kafka against the SDK compares two workloads as well as two ports;
- this machine's wake-up price (``wake_penalty``): the thread CPU of the same burst of
  interpreter work after an 8 ms sleep against back to back, no I/O, measured in the bench
  process before each run: what a broker pays on every request of a client that fetches a few
  ms apart, on either port.

Prints one line per figure and run, then the medians; ``--markdown`` writes the fragment
(docs/benchmarks/kafka.md) with the command, the date and the load average.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import socket
import statistics
import sys
import time
from typing import Any, Callable

from annal.bench._local_broker import LocalBroker, add_broker_pythonpath_option, use_broker_pythonpath
from annal.bench._report import machine_info
from annal.bench.broker import (_cpu_seconds_precise, _recv_frame, create_topic, fetch_data_port, one_mib_batch, pace_reads,
                                pipelined, produce_data_port, replay_data_port)
from annal.kafka import ApiKey
from annal.kafka.header import decode_response, encode_request
from annal.record import encode_batch, iter_batch_positions, parse_header

__all__ = ["main"]

MiB = 1 << 20
VALUE = b"x" * 100


class _Cpu:
    """Broker CPU seconds spent inside the ``with`` block (the scheduler's nanosecond
    accounting of the broker's threads, ``_cpu_seconds_precise``)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = 0.0

    def __enter__(self) -> "_Cpu":
        self.before = _cpu_seconds_precise(self.pid)
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = _cpu_seconds_precise(self.pid) - self.before


def confluent_produce(bootstrap: str, topic: str, n: int) -> float:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": 1, "enable.idempotence": False, "linger.ms": 5,
                  "queue.buffering.max.messages": 1_000_000})
    produce, poll = p.produce, p.poll
    started = time.perf_counter()
    for _ in range(n):
        while True:
            try:
                produce(topic, VALUE, partition=0)
                break
            except BufferError:
                poll(0.01)
        poll(0)
    if p.flush(120):
        raise RuntimeError("confluent-kafka: records left unsent")
    return time.perf_counter() - started


def confluent_consume(bootstrap: str, topic: str, n: int) -> float:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False,
                  "fetch.queue.backoff.ms": 1})
    c.assign([TopicPartition(topic, 0, 0)])
    got = 0
    started = time.perf_counter()
    while got < n:
        msgs = c.consume(num_messages=10000, timeout=5)
        if not msgs:
            raise RuntimeError(f"confluent-kafka: consumed {got} of {n}, then nothing for 5 s")
        got += len(msgs)
    elapsed = time.perf_counter() - started
    c.close()
    return elapsed


def _timed_sends(p: Any, topic: str, n: int) -> float:
    """Seconds for ``n`` sends of VALUE to partition 0 and the flush, by a kafka-python style
    producer (kafka-python's and Annal's SDK have the same send/flush/close)."""
    send = p.send
    started = time.perf_counter()
    for _ in range(n):
        send(topic, VALUE, partition=0)
    p.flush(300)
    elapsed = time.perf_counter() - started
    p.close()
    return elapsed


def kafka_python_produce(bootstrap: str, topic: str, n: int) -> float:
    from kafka import KafkaProducer

    return _timed_sends(KafkaProducer(bootstrap_servers=bootstrap, acks=1, enable_idempotence=False, linger_ms=5),
                        topic, n)


def kafka_python_consume(bootstrap: str, topic: str, n: int) -> float:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    c.assign([TopicPartition(topic, 0)])
    c.seek(TopicPartition(topic, 0), 0)
    got = 0
    started = time.perf_counter()
    while got < n:
        batch = c.poll(1000, max_records=100_000)
        got += sum(len(v) for v in batch.values())
    elapsed = time.perf_counter() - started
    c.close()
    return elapsed


def sdk_produce(bootstrap: str, topic: str, n: int) -> float:
    from annal.client.producer import Producer

    return _timed_sends(Producer(bootstrap_servers=bootstrap, acks=1, linger_ms=5), topic, n)


def sdk_consume(bootstrap: str, topic: str, n: int) -> float:
    from annal.client.consumer import Consumer
    from annal.client.structs import TopicPartition

    c = Consumer(bootstrap_servers=bootstrap)
    c.assign([TopicPartition(topic, 0)])
    c.seek(TopicPartition(topic, 0), 0)
    got = 0
    started = time.perf_counter()
    while got < n:
        batch = c.poll(1000, max_records=100_000)
        got += sum(len(v) for v in batch.values())
    elapsed = time.perf_counter() - started
    c.close()
    return elapsed


def fetch_kafka(port: int, topic: str, end_offset: int, max_bytes: int, version: int = 12,
                gap_s: float = 0.0, rate_bps: float = 0.0) -> tuple[float, int]:
    """Read ``topic``-0 from offset 0 to ``end_offset`` with Fetch ``version`` (12: the flexible
    version librdkafka 2.x and aiokafka use against Annal), one request in flight, paced by
    ``gap_s`` or ``rate_bps`` (``bench.broker.pace_reads``)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(max_bytes + 2 * MiB)
    offset = total = cid = 0
    started = time.perf_counter()
    while offset < end_offset:
        cid += 1
        pace_reads(started, total, gap_s, rate_bps)
        sock.sendall(encode_request(ApiKey.FETCH, version, cid, "bench", {
            "max_wait_ms": 0, "min_bytes": 0, "max_bytes": max_bytes, "topics": [
                {"topic": topic, "partitions": [{"partition": 0, "fetch_offset": offset,
                                                 "partition_max_bytes": max_bytes}]}]}))
        _, resp = decode_response(ApiKey.FETCH, version, _recv_frame(sock, buf))
        p = resp["responses"][0]["partitions"][0]
        records = p["records"]
        if p["error_code"] or not records:
            raise RuntimeError(f"kafka fetch at {offset}: error {p['error_code']}")
        last = None
        for pos, _size in iter_batch_positions(records):
            last = pos
        assert last is not None
        offset = parse_header(records, last).next_offset
        total += len(records)
    elapsed = time.perf_counter() - started
    sock.close()
    return elapsed, total


def produce_kafka(port: int, topic: str, batch: bytes, count: int, window: int) -> float:
    """``count`` Produce v9 requests (acks=1) of ``batch`` over a raw socket, ``window`` in
    flight: the Kafka listener's counterpart of ``produce_data_port``."""
    return replay_kafka(port, topic, [batch] * count, window)


def replay_kafka(port: int, topic: str, batches: list[bytes], window: int, interval_s: float = 0.0) -> float:
    """One Produce v9 request (acks=1) per batch of ``batches`` over a raw socket, ``window``
    in flight, ``interval_s`` apart when given: the listener's counterpart of
    ``bench.broker.replay_data_port``."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(4096)

    def send(i: int) -> None:
        sock.sendall(encode_request(ApiKey.PRODUCE, 9, i + 1, "bench", {
            "transactional_id": None, "acks": 1, "timeout_ms": 30000,
            "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": batches[i]}]}]}))

    def receive() -> None:
        _, resp = decode_response(ApiKey.PRODUCE, 9, _recv_frame(sock, buf))
        err = resp["responses"][0]["partition_responses"][0]["error_code"]
        if err:
            raise RuntimeError(f"kafka produce: error {err}")

    try:
        return pipelined(send, receive, len(batches), window, interval_s)
    finally:
        sock.close()


def _sdk_sized_batch(records: int = 600) -> bytes:
    """A RecordBatch of ``records`` 100-byte values (~64 KiB, the size the SDK's producer sends)."""
    now = int(time.time() * 1000)
    return encode_batch([(now, None, VALUE, None)] * records)


READS = 5  # same_client_phases: how many times each port reads the records back


PACED_READS = 3  # reads per port at a client's pace (same_client_phases with a gap, client_workload_phases)


def _alternate_reads(b: LocalBroker, pid: int, topic: str, records: int, reads: int, gap_s: float = 0.0,
                     rate_bps: float = 0.0) -> tuple[dict[str, float], dict[str, float]]:
    """Read ``topic``'s first ``records`` records ``reads`` times through each port in turn
    (1 MiB fetches, paced by ``gap_s`` or ``rate_bps``): the broker's CPU seconds and the wall
    seconds, per port."""
    fetchers = {"data port": lambda: fetch_data_port(b, topic, records, MiB, gap_s=gap_s, rate_bps=rate_bps),
                "kafka": lambda: fetch_kafka(b.kafka_port, topic, records, MiB, gap_s=gap_s, rate_bps=rate_bps)}
    cpu_s = {name: 0.0 for name in fetchers}
    wall = {name: 0.0 for name in fetchers}
    for _ in range(reads):
        for name, fetch in fetchers.items():
            with _Cpu(pid) as cpu:
                elapsed, _ = fetch()
            cpu_s[name] += cpu.seconds
            wall[name] += elapsed
    return cpu_s, wall


def _produce_per_port(b: LocalBroker, pid: int, producers: dict[str, tuple[str, Callable[[str], float]]],
                      records: int) -> dict[str, tuple[float, float]]:
    """Run each port's producer (``name: (new topic, produce into it)``) in turn: per port, the
    broker's CPU-s per million of the ``records`` it wrote and the seconds it took."""
    done: dict[str, tuple[float, float]] = {}
    for name, (topic, produce) in producers.items():
        create_topic(b, topic)
        with _Cpu(pid) as cpu:
            elapsed = produce(topic)
        done[name] = (cpu.seconds / records * 1e6, elapsed)
    return done


def same_client_phases(b: LocalBroker, pid: int, n: int, log: Callable[[str], None],
                       gap_ms: float = 0.0) -> dict[str, float]:
    """The listener against the data port with the *same* client work: raw sockets sending the
    same ~64 KiB batches (4 in flight), then reading the same records back with 1 MiB fetches.
    Broker CPU per million records of each; what differs is only the protocol the broker
    speaks, not how a client library batches, fetches or reads its socket."""
    out: dict[str, float] = {}
    batch = _sdk_sized_batch()
    per = parse_header(batch).last_offset_delta + 1
    count = max(1, n // per)
    records = count * per
    producers: dict[str, tuple[str, Callable[[str], float]]] = {
        "data port": ("same-data", lambda topic: produce_data_port(b, topic, batch, count, window=4)),
        "kafka": ("same-kafka", lambda topic: produce_kafka(b.kafka_port, topic, batch, count, 4)),
    }
    for name, (per_m, elapsed) in _produce_per_port(b, pid, producers, records).items():
        out[f"same-client produce {name} broker cpu s/M"] = per_m
        log(f"same client, produce via {name}: {records / elapsed:,.0f} records/s, broker {per_m:.3f} CPU-s per million")
    # Reading is cheap for the broker (~0.04 CPU-s per million): each port reads the records
    # READS times, alternately, so each figure spans a few hundred ms of broker CPU, not ~40 ms.
    cpu_s, wall = _alternate_reads(b, pid, "same-data", records, READS)
    for name in cpu_s:
        out[f"same-client consume {name} broker cpu s/M"] = cpu_s[name] / (READS * records) * 1e6
        log(f"same client, fetch via {name} ({READS} reads): {READS * records / wall[name]:,.0f} records/s, broker "
            f"{cpu_s[name] / (READS * records) * 1e6:.3f} CPU-s per million")
    if gap_ms > 0:
        # The same reads with ``gap_ms`` between an answer and the next request: the pace at
        # which librdkafka fetches (4-5 ms apart in the consume phase), where the broker sleeps
        # between requests and each one costs more on either port.
        paced_cpu, _ = _alternate_reads(b, pid, "same-data", records, PACED_READS, gap_s=gap_ms / 1000)
        for name in paced_cpu:
            out[f"paced consume {name} broker cpu s/M"] = paced_cpu[name] / (PACED_READS * records) * 1e6
            log(f"same client, fetch via {name} {gap_ms:g} ms apart ({PACED_READS} reads): broker "
                f"{out[f'paced consume {name} broker cpu s/M']:.3f} CPU-s per million")
        out["paced consume cpu ratio kafka/data"] = (out["paced consume kafka broker cpu s/M"]
                                                     / out["paced consume data port broker cpu s/M"])
    out["same-client produce cpu ratio kafka/data"] = (out["same-client produce kafka broker cpu s/M"]
                                                       / out["same-client produce data port broker cpu s/M"])
    out["same-client consume cpu ratio kafka/data"] = (out["same-client consume kafka broker cpu s/M"]
                                                       / out["same-client consume data port broker cpu s/M"])
    return out


def client_workload_phases(b: LocalBroker, pid: int, topic: str, n: int, produce_s: float,
                           log: Callable[[str], None]) -> dict[str, float]:
    """confluent-kafka's own workload replayed by raw sockets through both ports: the batches
    librdkafka wrote to ``topic`` (read back from the log), one produce request each, at the
    pace it sent them (``produce_s`` over the run, at most 4 in flight); then, PACED_READS
    times, confluent-kafka reads the ``n`` records through the listener and the raw clients read
    them after it with its 1 MiB fetches at the pace it just read them, through each port.

    A client's requests cost the broker more when they are smaller or further apart: librdkafka
    sends two to four times as many produce requests as the SDK for the same records, and
    fetches 3-4 times slower (its consumer fetches as fast as the application takes the
    records), and a broker that sleeps between two requests spends more on each (on either
    port). The figures here compare the listener with the data port on librdkafka's workload:
    confluent-kafka itself against the raw client through the data port, and the raw client
    through both ports."""
    out: dict[str, float] = {}
    batches: list[bytes] = []
    fetch_data_port(b, topic, n, MiB, keep=batches)
    size = sum(map(len, batches))
    interval = produce_s / len(batches)
    log(f"confluent-kafka's workload: {len(batches)} produce requests of {size / len(batches) / 1024:.0f} "
        f"KiB on average, {interval * 1000:.2f} ms apart")
    replays: dict[str, tuple[str, Callable[[str], float]]] = {
        "data port": (f"{topic}-replay-data-port", lambda t: replay_data_port(b, t, batches, 4, interval)),
        "kafka": (f"{topic}-replay-kafka", lambda t: replay_kafka(b.kafka_port, t, batches, 4, interval)),
    }
    for name, (per_m, elapsed) in _produce_per_port(b, pid, replays, n).items():
        out[f"client-workload produce {name} broker cpu s/M"] = per_m
        log(f"confluent-kafka's produce workload via {name}: {elapsed:.2f} s, broker {per_m:.3f} CPU-s per million")
    # Reading is cheap for the broker (a few tens of ms of its CPU per read) and confluent-kafka's
    # pace varies from read to read: each of its reads is followed by the raw reads at its pace.
    cpu_s = {"confluent-kafka": 0.0, "data port": 0.0, "kafka": 0.0}
    for i in range(PACED_READS):
        with _Cpu(pid) as cpu:
            elapsed = confluent_consume(f"127.0.0.1:{b.kafka_port}", topic, n)
        cpu_s["confluent-kafka"] += cpu.seconds
        rate = size / elapsed
        paced, wall = _alternate_reads(b, pid, topic, n, 1, rate_bps=rate)
        for name, seconds in paced.items():
            cpu_s[name] += seconds
        log(f"confluent-kafka's consume workload, read {i + 1}: confluent-kafka {elapsed:.2f} s "
            f"({rate / 1e6:.0f} MB/s), broker {cpu.seconds / n * 1e6:.3f} CPU-s per million; at its pace, "
            + ", ".join(f"{name} {wall[name]:.2f} s, broker {paced[name] / n * 1e6:.3f}" for name in paced))
    for name, seconds in cpu_s.items():
        out[f"client-workload consume {name} broker cpu s/M"] = seconds / (PACED_READS * n) * 1e6
    for what in ("produce", "consume"):
        data = out[f"client-workload {what} data port broker cpu s/M"]
        out[f"client-workload {what} cpu ratio kafka/data"] = out[f"client-workload {what} kafka broker cpu s/M"] / data
    out["consume cpu ratio confluent-kafka/data port, its workload"] = (
        out["client-workload consume confluent-kafka broker cpu s/M"] / out["client-workload consume data port broker cpu s/M"])
    return out


def _burst() -> int:
    """About 50 us of ordinary interpreter work (dict stores, small tuples and strings)."""
    d = {}
    for i in range(300):
        d[i] = (i, str(i))
    return sum(len(v[1]) for v in d.values())


WAKE_GAP_S = 0.008  # wake_penalty's sleep in every run: about librdkafka's time between two fetches


def wake_penalty(gap_s: float = WAKE_GAP_S, rounds: int = 30, paced: int = 10, back_to_back: int = 100) -> tuple[float, float]:
    """This machine's price for running after a sleep, apart from any socket or broker: the
    median thread CPU (microseconds) of one burst of interpreter work (``_burst``) run back to
    back, and run after ``gap_s`` of sleep each time (``rounds`` short blocks of each, alternated,
    so that a change of the machine's speed during the measurement reaches both).
    On a virtual CPU that idles between bursts, the same instructions can take much longer
    (the host runs other work on the core, or lowers its clock); a broker answering a client
    that fetches every few ms pays this on every request, whichever port it uses."""
    warm: list[int] = []
    woken: list[int] = []
    for _ in range(rounds):
        for _ in range(back_to_back):
            c0 = time.thread_time_ns()
            _burst()
            warm.append(time.thread_time_ns() - c0)
        for _ in range(paced):
            time.sleep(gap_s)
            c0 = time.thread_time_ns()
            _burst()
            woken.append(time.thread_time_ns() - c0)
    return statistics.median(warm) / 1e3, statistics.median(woken) / 1e3


def one_run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, float]:
    out: dict[str, float] = {}
    warm_us, woken_us = wake_penalty(WAKE_GAP_S)
    out["wake penalty"] = woken_us / warm_us
    log(f"this machine: {warm_us:.1f} us of CPU per burst of interpreter work back to back, {woken_us:.1f} us after "
        f"{WAKE_GAP_S * 1000:g} ms of sleep ({woken_us / warm_us:.2f}x)")
    with LocalBroker(extra_args=["--metrics-port", "-1", "--log-level", "WARNING"]) as b:
        assert b.process is not None
        pid = b.process.pid
        kafka = f"127.0.0.1:{b.kafka_port}"
        n, m = args.records, args.python_records
        for topic in ("cf", "kp", "sdk", "big"):
            create_topic(b, topic)

        phases: list[tuple[str, Callable[[], float], int]] = [
            ("confluent-kafka produce", lambda: confluent_produce(kafka, "cf", n), n),
            ("confluent-kafka consume", lambda: confluent_consume(kafka, "cf", n), n),
            ("kafka-python produce", lambda: kafka_python_produce(kafka, "kp", m), m),
            ("kafka-python consume", lambda: kafka_python_consume(kafka, "kp", m), m),
            ("annal sdk produce (data port)", lambda: sdk_produce(b.bootstrap, "sdk", n), n),
            ("annal sdk consume (data port)", lambda: sdk_consume(b.bootstrap, "sdk", n), n),
            # The records confluent-kafka wrote and read, read again by the SDK: the same batches
            # in the same fetches (a consumer's broker cost per record is set by how many
            # records each fetch carries, i.e. by the producer's batches).
            ("annal sdk consume of the confluent-kafka records (data port)",
             lambda: sdk_consume(b.bootstrap, "cf", n), n),
        ]
        for name, fn, count in phases:
            with _Cpu(pid) as cpu:
                elapsed = fn()
            out[f"{name} records/s"] = count / elapsed
            out[f"{name} broker cpu s/M"] = cpu.seconds / count * 1e6
            log(f"{name}: {count / elapsed:,.0f} records/s, broker {cpu.seconds / count * 1e6:.3f} CPU-s per million")

        batch = one_mib_batch()
        batches = max(1, args.fetch_mib * MiB // len(batch))
        produce_data_port(b, "big", batch, batches, window=4)
        end = parse_header(batch).last_offset_delta + 1
        end *= batches
        fetch_data_port(b, "big", end, 64 * MiB)  # warm the page cache
        # Three alternating reads through each port (a single pair swung 0.6-1.4x between runs
        # on this machine); each port's figure for the run is the median of its three.
        rates: dict[str, list[float]] = {"data": [], "kafka": []}
        for _ in range(3):
            t_data, bytes_data = fetch_data_port(b, "big", end, 64 * MiB)
            t_kafka, bytes_kafka = fetch_kafka(b.kafka_port, "big", end, 64 * MiB)
            rates["data"].append(bytes_data / t_data / 1e6)
            rates["kafka"].append(bytes_kafka / t_kafka / 1e6)
        out["large fetch data port MB/s"] = statistics.median(rates["data"])
        out["large fetch kafka MB/s"] = statistics.median(rates["kafka"])
        log(f"large fetch: data port {out['large fetch data port MB/s']:,.0f} MB/s "
            f"({', '.join(f'{r:,.0f}' for r in rates['data'])}), kafka {out['large fetch kafka MB/s']:,.0f} MB/s "
            f"({', '.join(f'{r:,.0f}' for r in rates['kafka'])})")
        out.update(same_client_phases(b, pid, n, log, args.fetch_gap_ms))
        out.update(client_workload_phases(b, pid, "cf", n, n / out["confluent-kafka produce records/s"], log))
    out["produce cpu ratio kafka/data"] = out["confluent-kafka produce broker cpu s/M"] / out["annal sdk produce (data port) broker cpu s/M"]
    out["consume cpu ratio kafka/data"] = out["confluent-kafka consume broker cpu s/M"] / out["annal sdk consume (data port) broker cpu s/M"]
    out["consume cpu ratio kafka/data, same records"] = (
        out["confluent-kafka consume broker cpu s/M"]
        / out["annal sdk consume of the confluent-kafka records (data port) broker cpu s/M"])
    out["large fetch ratio kafka/data"] = out["large fetch kafka MB/s"] / out["large fetch data port MB/s"]
    out["produce cpu ratio confluent-kafka/data port, its workload"] = (
        out["confluent-kafka produce broker cpu s/M"] / out["client-workload produce data port broker cpu s/M"])
    return out


ROWS = [
    ("confluent-kafka produce, records/s", "confluent-kafka produce records/s", ">= 330,000 records/s (Kafka 4.1: 330-730 k)", "{:,.0f}"),
    ("confluent-kafka consume, records/s", "confluent-kafka consume records/s", ">= 1,000,000 records/s (Kafka 4.1: 1.0-1.35 M)", "{:,.0f}"),
    ("kafka-python produce, records/s", "kafka-python produce records/s", ">= 32,000 records/s (Kafka 4.1: ~32 k)", "{:,.0f}"),
    ("kafka-python consume, records/s", "kafka-python consume records/s", ">= 52,000 records/s (Kafka 4.1: ~52 k)", "{:,.0f}"),
    ("broker CPU-s per million records produced, Kafka listener (confluent-kafka)", "confluent-kafka produce broker cpu s/M", "-", "{:.3f}"),
    ("broker CPU-s per million records produced, data port (Annal SDK)", "annal sdk produce (data port) broker cpu s/M", "-", "{:.3f}"),
    ("produce: Kafka listener / data port broker CPU per record", "produce cpu ratio kafka/data", "<= 1.2", "{:.2f}"),
    ("broker CPU-s per million records consumed, Kafka listener (confluent-kafka)", "confluent-kafka consume broker cpu s/M", "-", "{:.3f}"),
    ("broker CPU-s per million records consumed, data port (Annal SDK)", "annal sdk consume (data port) broker cpu s/M", "-", "{:.3f}"),
    ("consume: Kafka listener / data port broker CPU per record", "consume cpu ratio kafka/data", "<= 1.2", "{:.2f}"),
    ("broker CPU-s per million records consumed, data port (Annal SDK reading the confluent-kafka records)",
     "annal sdk consume of the confluent-kafka records (data port) broker cpu s/M", "-", "{:.3f}"),
    ("consume of the same records: Kafka listener (confluent-kafka) / data port (Annal SDK) broker CPU per record",
     "consume cpu ratio kafka/data, same records", "<= 1.2", "{:.2f}"),
    ("produce, confluent-kafka's workload (its batches, at its pace) replayed through the data port: broker CPU-s per million",
     "client-workload produce data port broker cpu s/M", "-", "{:.3f}"),
    ("produce: Kafka listener (confluent-kafka) / data port (its workload replayed) broker CPU per record",
     "produce cpu ratio confluent-kafka/data port, its workload", "<= 1.2", "{:.2f}"),
    ("produce, confluent-kafka's workload replayed through the Kafka listener: broker CPU-s per million",
     "client-workload produce kafka broker cpu s/M", "-", "{:.3f}"),
    ("produce, confluent-kafka's workload replayed: Kafka listener / data port broker CPU per record",
     "client-workload produce cpu ratio kafka/data", "<= 1.2", "{:.2f}"),
    ("consume, confluent-kafka's workload (its 1 MiB fetches, at its pace, after each of 3 reads by it) through the data port: "
     "broker CPU-s per million",
     "client-workload consume data port broker cpu s/M", "-", "{:.3f}"),
    ("consume, confluent-kafka's reads of that phase (Kafka listener): broker CPU-s per million",
     "client-workload consume confluent-kafka broker cpu s/M", "-", "{:.3f}"),
    ("consume: Kafka listener (confluent-kafka) / data port (its workload replayed) broker CPU per record",
     "consume cpu ratio confluent-kafka/data port, its workload", "<= 1.2", "{:.2f}"),
    ("consume, confluent-kafka's workload replayed through the Kafka listener: broker CPU-s per million",
     "client-workload consume kafka broker cpu s/M", "-", "{:.3f}"),
    ("consume, confluent-kafka's workload replayed: Kafka listener / data port broker CPU per record",
     "client-workload consume cpu ratio kafka/data", "<= 1.2", "{:.2f}"),
    ("broker CPU-s per million records, kafka-python produce", "kafka-python produce broker cpu s/M", "-", "{:.3f}"),
    ("broker CPU-s per million records, kafka-python consume", "kafka-python consume broker cpu s/M", "-", "{:.3f}"),
    ("Annal SDK produce over the data port, records/s (same runs)", "annal sdk produce (data port) records/s", "-", "{:,.0f}"),
    ("Annal SDK consume over the data port, records/s (same runs)", "annal sdk consume (data port) records/s", "-", "{:,.0f}"),
    ("large fetch (64 MiB fetches, page-cached ~1 MiB batches), Kafka listener, MB/s", "large fetch kafka MB/s", "-", "{:,.0f}"),
    ("large fetch, data port, MB/s (same runs)", "large fetch data port MB/s", "-", "{:,.0f}"),
    ("large fetch: Kafka listener / data port", "large fetch ratio kafka/data", ">= 0.8", "{:.2f}"),
    ("same client (raw sockets, ~64 KiB batches, 4 in flight): broker CPU-s per million produced, Kafka listener",
     "same-client produce kafka broker cpu s/M", "-", "{:.3f}"),
    ("same client: broker CPU-s per million produced, data port", "same-client produce data port broker cpu s/M", "-",
     "{:.3f}"),
    ("same client, produce: Kafka listener / data port broker CPU per record", "same-client produce cpu ratio kafka/data",
     "<= 1.2", "{:.2f}"),
    ("same client (raw sockets, 1 MiB fetches, same records): broker CPU-s per million consumed, Kafka listener",
     "same-client consume kafka broker cpu s/M", "-", "{:.3f}"),
    ("same client: broker CPU-s per million consumed, data port", "same-client consume data port broker cpu s/M", "-",
     "{:.3f}"),
    ("same client, consume: Kafka listener / data port broker CPU per record", "same-client consume cpu ratio kafka/data",
     "<= 1.2", "{:.2f}"),
    ("this machine: CPU per burst of interpreter work after 8 ms of sleep / back to back (no I/O, the bench process)",
     "wake penalty", "-", "{:.2f}"),
    # With --fetch-gap-ms only:
    ("same client, fetches --fetch-gap-ms apart: broker CPU-s per million consumed, Kafka listener",
     "paced consume kafka broker cpu s/M", "-", "{:.3f}"),
    ("same client, fetches --fetch-gap-ms apart: broker CPU-s per million consumed, data port",
     "paced consume data port broker cpu s/M", "-", "{:.3f}"),
    ("same client, fetches --fetch-gap-ms apart, consume: Kafka listener / data port broker CPU per record",
     "paced consume cpu ratio kafka/data", "<= 1.2", "{:.2f}"),
]


def _met(target: str, value: float) -> str:
    t = target.split("(")[0].strip()
    if t.startswith(">="):
        return "yes" if value >= float(t[2:].split()[0].replace(",", "")) else "no"
    if t.startswith("<="):
        return "yes" if value <= float(t[2:].split()[0].replace(",", "")) else "no"
    return "-"


def markdown(runs: list[dict[str, float]], command: str, started: str, loads: list[str]) -> str:
    lines = ["# Kafka listener figures", "",
             f"| figure | target | median of {len(runs)} | runs | met |", "|---|---|---|---|---|"]
    for label, key, target, fmt in ROWS:
        if any(key not in r for r in runs):
            continue  # a figure of an option not given
        values = [r[key] for r in runs]
        med = statistics.median(values)
        lines.append(f"| {label} | {target} | **{fmt.format(med)}** | {', '.join(fmt.format(v) for v in values)} | "
                     f"{_met(target, med)} |")
    lines += ["", f"Command: `{command}`  ",
              f"Date: {started} UTC; load average (1/5/15 min) before each run: {'; '.join(loads)}  ",
              f"Machine: {os.cpu_count()} CPUs ({machine_info()['cpu_model']}), Python {sys.version.split()[0]}, "
              "100-byte values, one partition, "
              "acks=1, a fresh standalone broker per run", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m annal.bench.kafka_clients", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--records", type=int, default=1_000_000, help="records for confluent-kafka and the SDK")
    p.add_argument("--python-records", type=int, default=200_000, help="records for kafka-python")
    p.add_argument("--fetch-mib", type=int, default=512, help="size of the large-fetch partition")
    p.add_argument("--fetch-gap-ms", type=float, default=0.0,
                   help="also read the same-client records with this many ms between fetches (0: not)")
    p.add_argument("--markdown", default=None, help="write the fragment here (docs/benchmarks/kafka.md)")
    add_broker_pythonpath_option(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_broker_pythonpath(args.broker_pythonpath)
    started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    runs, loads = [], []
    for i in range(args.runs):
        loads.append(" ".join(f"{x:.2f}" for x in os.getloadavg()))
        print(f"== run {i + 1} of {args.runs} (load average {loads[-1]})", flush=True)
        runs.append(one_run(args, lambda s: print("  " + s, flush=True)))
    text = markdown(runs, "python -m annal.bench.kafka_clients " + " ".join(argv if argv is not None else sys.argv[1:]),
                    started, loads)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
