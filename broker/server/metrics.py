"""Prometheus metrics of one broker, served on ``--metrics-port`` (``GET /metrics``).

Counters and histograms are updated on the request paths; per-partition gauges (log end
offset, log start offset, size) are read from the logs at scrape time by a custom collector, so
an idle partition costs nothing between scrapes. Each broker has its own ``CollectorRegistry``
(two brokers in one process do not mix). prometheus-client's metric objects are thread-safe,
so this class is too.

Names (Kafka's JMX names, Prometheus style)::

    annal_bytes_in_total{topic}              record bytes appended
    annal_bytes_out_total{topic}             record bytes sent to consumers
    annal_records_in_total{topic}            records appended
    annal_requests_total{api,transport,error}  requests by API, transport (grpc, data) and outcome
    annal_request_latency_seconds{api,transport}
    annal_partition_log_end_offset{topic,partition}
    annal_partition_log_start_offset{topic,partition}
    annal_partition_size_bytes{topic,partition}
    annal_long_polls_waiting                 fetches waiting for data right now
    annal_data_port_connections              open data port connections
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
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


class BrokerMetrics:
    def __init__(self, partition_stats: Callable[[], Iterable[PartitionStat]] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.bytes_in = Counter("annal_bytes_in", "Record bytes appended", ["topic"], registry=r)
        self.bytes_out = Counter("annal_bytes_out", "Record bytes sent to consumers", ["topic"], registry=r)
        self.records_in = Counter("annal_records_in", "Records appended", ["topic"], registry=r)
        self.requests = Counter(
            "annal_requests", "Requests handled", ["api", "transport", "error"], registry=r
        )
        self.latency = Histogram(
            "annal_request_latency_seconds", "Request latency (long-poll waits included)",
            ["api", "transport"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        # Read at scrape time from counters the request paths keep as plain ints: a Gauge
        # inc()/dec() pair costs more than the rest of an idle long-poll's bookkeeping.
        self.long_poll_sources: list[Callable[[], int]] = []
        self.connection_sources: list[Callable[[], int]] = []
        self.long_polls = Gauge("annal_long_polls_waiting", "Fetches waiting for data", registry=r)
        self.long_polls.set_function(lambda: sum(f() for f in list(self.long_poll_sources)))
        self.connections = Gauge("annal_data_port_connections", "Open data port connections", registry=r)
        self.connections.set_function(lambda: sum(f() for f in list(self.connection_sources)))
        if partition_stats is not None:
            r.register(_PartitionCollector(partition_stats))
        self._server: Any = None
        self._thread: Any = None
        self.port: int | None = None

    def observe_request(self, api: str, transport: str, error: str, seconds: float) -> None:
        self.requests.labels(api, transport, error).inc()
        self.latency.labels(api, transport).observe(seconds)

    def request_observer(self, api: str, transport: str) -> Callable[[str, float], None]:
        """``observe(error, seconds)`` for one API and transport, with the labelled children
        looked up once (the hot paths call it per request)."""
        latency = self.latency.labels(api, transport)
        counters: dict[str, Any] = {}

        def observe(error: str, seconds: float) -> None:
            c = counters.get(error)
            if c is None:
                c = counters[error] = self.requests.labels(api, transport, error)
            c.inc()
            latency.observe(seconds)

        return observe

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
