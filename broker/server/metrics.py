"""Prometheus metrics of one broker, served on ``--metrics-port`` (``GET /metrics``).

Byte and record counters are updated on the append/fetch paths; request counts and latencies
are plain numbers updated in place (``_LoopStats``) and published at scrape time, as are the
per-partition gauges (log end offset, log start offset, size, read from the logs), so an idle
long-poll or partition costs almost nothing between scrapes. Each broker has its own
``CollectorRegistry`` (two brokers in one process do not mix). Thread-safe, except the
observers from ``request_observer``, which belong to the one thread that asked for them.

Names (Kafka's JMX names, Prometheus style)::

    annal_bytes_in_total{topic}              record bytes appended
    annal_bytes_out_total{topic}             record bytes sent to consumers
    annal_records_in_total{topic}            records appended
    annal_requests_total{api,transport,error}  requests by API, transport (grpc, data, kafka) and outcome
    annal_request_latency_seconds{api,transport}
    annal_partition_log_end_offset{topic,partition}
    annal_partition_log_start_offset{topic,partition}
    annal_partition_size_bytes{topic,partition}
    annal_long_polls_waiting                 fetches waiting for data right now
    annal_data_port_connections              open data port connections
    annal_queued_request_bytes               bytes of requests read or queued, all listeners
    annal_muted_connections                  connections not read: request memory at its bound
    annal_fetch_first_reads_total{transport} fetches whose bytes were CRC-checked for the first time
                                             since start-up, on a worker thread (data, kafka)
"""

from __future__ import annotations

import bisect
import logging
import threading
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

__all__ = ["BrokerMetrics", "PartitionStat"]

log = logging.getLogger("annal.metrics")

# (topic, partition, log_start_offset, log_end_offset, size_bytes)
PartitionStat = tuple[str, int, int, int, int]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _PartitionCollector(Collector):
    def __init__(self, stats: Callable[[], Iterable[PartitionStat]]) -> None:
        self._stats = stats

    def collect(self):  # type: ignore[override]
        leo = GaugeMetricFamily("annal_partition_log_end_offset", "Log end offset", labels=["topic", "partition"])
        lso = GaugeMetricFamily("annal_partition_log_start_offset", "Log start offset", labels=["topic", "partition"])
        size = GaugeMetricFamily("annal_partition_size_bytes", "Bytes on disk", labels=["topic", "partition"])
        try:
            for topic, partition, start, end, nbytes in self._stats():
                labels = [topic, str(partition)]
                leo.add_metric(labels, end)
                lso.add_metric(labels, start)
                size.add_metric(labels, nbytes)
        except Exception:  # a scrape must never take the broker down
            log.exception("collecting partition metrics failed")
        yield leo
        yield lso
        yield size


class _LoopStats:
    """Request counts by outcome and a latency histogram, updated from one thread."""

    __slots__ = ("counts", "buckets", "sum")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.buckets = [0] * (len(_LATENCY_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, error: str, seconds: float) -> None:
        counts = self.counts
        counts[error] = counts.get(error, 0) + 1
        self.buckets[bisect.bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds


class _LoopStatsCollector(Collector):
    def __init__(self, stats: dict[tuple[str, str], _LoopStats]) -> None:
        self._stats = stats

    def collect(self):  # type: ignore[override]
        requests = CounterMetricFamily("annal_requests", "Requests handled", labels=["api", "transport", "error"])
        latency = HistogramMetricFamily("annal_request_latency_seconds", "Request latency (long-poll waits included)",
                                        labels=["api", "transport"])
        for (api, transport), st in list(self._stats.items()):
            for error, n in list(st.counts.items()):
                requests.add_metric([api, transport, error], n)
            cumulative, acc = [], 0
            for bound, n in zip((*_LATENCY_BUCKETS, float("inf")), list(st.buckets)):
                acc += n
                cumulative.append(("+Inf" if bound == float("inf") else repr(bound), acc))
            latency.add_metric([api, transport], cumulative, st.sum)
        yield requests
        yield latency


class BrokerMetrics:
    def __init__(self, partition_stats: Callable[[], Iterable[PartitionStat]] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.bytes_in = Counter("annal_bytes_in", "Record bytes appended", ["topic"], registry=r)
        self.bytes_out = Counter("annal_bytes_out", "Record bytes sent to consumers", ["topic"], registry=r)
        self.records_in = Counter("annal_records_in", "Records appended", ["topic"], registry=r)
        self.first_reads = Counter(
            "annal_fetch_first_reads",
            "Fetches holding bytes of older segments not CRC-checked since start-up, read and checked on a worker "
            "thread instead of the event loop", ["transport"], registry=r)
        # Read at scrape time from counters the request paths keep as plain ints: a Gauge
        # inc()/dec() pair costs more than the rest of an idle long-poll's bookkeeping.
        self.long_poll_sources: list[Callable[[], int]] = []
        self.connection_sources: list[Callable[[], int]] = []
        self.long_polls = Gauge("annal_long_polls_waiting", "Fetches waiting for data", registry=r)
        self.long_polls.set_function(lambda: sum(f() for f in list(self.long_poll_sources)))
        self.connections = Gauge("annal_data_port_connections", "Open data port connections", registry=r)
        self.connections.set_function(lambda: sum(f() for f in list(self.connection_sources)))
        self._request_memories: list[Any] = []  # RequestMemory objects (request_memory.py)
        Gauge("annal_queued_request_bytes", "Bytes of requests read or queued, all listeners (queued_max_request_bytes)",
              registry=r).set_function(lambda: sum(m.queued for m in list(self._request_memories)))
        Gauge("annal_muted_connections", "Connections not read because request memory is at its bound",
              registry=r).set_function(lambda: sum(m.muted for m in list(self._request_memories)))
        if partition_stats is not None:
            r.register(_PartitionCollector(partition_stats))
        self._loop_stats: dict[tuple[str, str], _LoopStats] = {}
        self._stats_lock = threading.Lock()
        r.register(_LoopStatsCollector(self._loop_stats))
        self._server: Any = None
        self._thread: Any = None
        self.port: int | None = None

    def observe_request(self, api: str, transport: str, error: str, seconds: float) -> None:
        """Count one request and its latency; safe from any thread (the gRPC workers)."""
        with self._stats_lock:
            stats = self._loop_stats.get((api, transport))
            if stats is None:
                stats = self._loop_stats[(api, transport)] = _LoopStats()
            stats.observe(error, seconds)

    def request_observer(self, api: str, transport: str) -> Callable[[str, float], None]:
        """``observe(error, seconds)`` for one API and transport, for the data port's event loop
        thread only: plain ints and floats updated in place (a ``bisect`` and three additions),
        published as ``annal_requests_total`` / ``annal_request_latency_seconds`` at scrape
        time. prometheus-client's own objects take a lock and walk the buckets in Python on
        every observation, which an idle long-poll cannot afford."""
        with self._stats_lock:
            stats = self._loop_stats.setdefault((api, transport), _LoopStats())
        return stats.observe

    def watch_request_memory(self, memory: Any) -> None:
        """Publish a ``RequestMemory``'s figures (once, however many listeners share it)."""
        if all(m is not memory for m in self._request_memories):
            self._request_memories.append(memory)

    def record_append(self, topic: str, nbytes: int, records: int) -> None:
        self.bytes_in.labels(topic).inc(nbytes)
        self.records_in.labels(topic).inc(records)

    def record_fetch(self, topic: str, nbytes: int) -> None:
        if nbytes:
            self.bytes_out.labels(topic).inc(nbytes)

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP endpoint (its own daemon thread); returns the bound port."""
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = int(self._server.server_port)
        return self.port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
