"""Options and plumbing shared by ``annal-bench produce``, ``consume`` and ``e2e``.

- ``add_connection_args`` / ``connection``: ``--bootstrap-server`` or ``--zookeeper``; with
  neither, ``connection`` starts a ``LocalBroker`` (a standalone broker on a temporary data
  directory) for the duration of the run and removes it afterwards.
- ``ensure_topic``: create the topic with ``--partitions`` if it does not exist (Admin).
- ``Progress``: a tqdm bar on stderr when stderr is a terminal, nothing otherwise (the tools
  print plain progress lines every few seconds either way).
- ``finish``: write ``--json`` and ``--plot``.

Used from the bench's main thread only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from annal.bench._local_broker import LocalBroker
from annal.bench._report import build_summary, write_json

__all__ = [
    "add_connection_args",
    "add_output_args",
    "connection",
    "ensure_topic",
    "describe_partitions",
    "Progress",
    "finish",
    "command_line",
    "log",
    "terminate_as_interrupt",
]


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt for the duration of a run, so ``kill`` unwinds
    like Ctrl-C: workers are stopped and the local broker and its directories are removed."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def add_connection_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--bootstrap-server", dest="bootstrap_servers", default=None, metavar="HOST:PORT[,HOST:PORT]",
                   help="brokers' gRPC addresses (default: start a standalone broker on a temporary dir)")
    g.add_argument("--zookeeper", default=None, metavar="CONNECT",
                   help="ZooKeeper connect string of a cluster, e.g. 127.0.0.1:2181/annal")
    p.add_argument("--broker-arg", dest="broker_args", action="append", default=[], metavar="ARG",
                   help="extra argument for the local broker (repeatable; only without --bootstrap-server/--zookeeper)")


def add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", dest="json_path", default=None, metavar="FILE", help="write the summary as JSON")
    p.add_argument("--plot", dest="plot_path", default=None, metavar="FILE.png",
                   help="draw throughput over time and the latency distribution (needs matplotlib)")


@contextlib.contextmanager
def connection(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """Yield {"bootstrap_servers": ...} or {"zookeeper": ...}; a local broker if neither given."""
    if args.zookeeper:
        # Producers and consumers find the brokers in ZooKeeper; the Admin client (gRPC) is
        # given the brokers read from there too (see _admin).
        yield {"zookeeper": args.zookeeper, "bootstrap_servers": None, "local_broker": False}
        return
    if args.bootstrap_servers:
        yield {"bootstrap_servers": args.bootstrap_servers, "zookeeper": None, "local_broker": False}
        return
    broker = LocalBroker(extra_args=list(args.broker_args))
    broker.start()
    log(f"started a standalone broker on {broker.bootstrap_servers} (data dir {broker.data_dir})")
    try:
        yield {"bootstrap_servers": broker.bootstrap_servers, "zookeeper": None, "local_broker": True}
    finally:
        alive = broker.alive()
        tail = broker.log_tail() if not alive else ""
        broker.stop()
        if not alive:
            log(f"the local broker had exited during the run; last log lines:\n{tail}")


def _bootstrap_from_zookeeper(zookeeper: str) -> str:
    """The live brokers' gRPC addresses, read from ZooKeeper (the Admin client speaks gRPC)."""
    from annal.client._zk import ZooKeeperMetadataSource

    source = ZooKeeperMetadataSource(zookeeper)
    try:
        brokers = source.snapshot().brokers
    finally:
        source.close()
    if not brokers:
        raise RuntimeError(f"no live broker registered in ZooKeeper {zookeeper}")
    return ",".join(f"{b.host}:{b.port}" for b in brokers.values())


def _admin(conn: dict[str, Any]) -> Any:
    from annal.client import Admin

    if not conn.get("bootstrap_servers") and conn.get("zookeeper"):
        conn["bootstrap_servers"] = _bootstrap_from_zookeeper(conn["zookeeper"])
    return Admin(bootstrap_servers=conn["bootstrap_servers"])


def ensure_topic(conn: dict[str, Any], topic: str, partitions: int, timeout_s: float = 30.0) -> int:
    """Create ``topic`` with ``partitions`` partitions unless it exists; return its partition count."""
    from annal.errors import TopicAlreadyExistsError
    from annal.client.structs import NewTopic

    admin = _admin(conn)
    try:
        try:
            admin.create_topics([NewTopic(topic, partitions)])
        except TopicAlreadyExistsError:
            pass
        deadline = time.monotonic() + timeout_s
        while True:
            parts = _describe(admin, topic)
            if parts:
                return len(parts)
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {topic!r} has no partitions {timeout_s} s after creation")
            time.sleep(0.05)
    finally:
        admin.close()


def _describe(admin: Any, topic: str) -> list[Any]:
    from annal.errors import UnknownTopicOrPartitionError

    try:
        descs = admin.describe_topics([topic])
    except UnknownTopicOrPartitionError:
        return []
    if isinstance(descs, Mapping):
        desc = descs.get(topic)
    else:
        desc = next((d for d in descs if getattr(d, "name", None) == topic), None)
    return list(desc.partitions) if desc is not None else []


def describe_partitions(conn: dict[str, Any], topic: str) -> dict[int, tuple[int, int]]:
    """{partition: (log_start_offset, log_end_offset)} of ``topic``.

    Asked through a Consumer, which asks each partition's leader: in cluster mode one broker's
    metadata knows only the offsets of the partitions it leads.
    """
    from annal.client import Consumer
    from annal.client.structs import TopicPartition

    kwargs: dict[str, Any] = {"zookeeper": conn["zookeeper"]} if conn.get("zookeeper") else {"bootstrap_servers": conn["bootstrap_servers"]}
    consumer = Consumer(**kwargs)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return {}
        start = consumer.beginning_offsets(tps)
        end = consumer.end_offsets(tps)
        return {tp.partition: (start[tp], end[tp]) for tp in tps}
    finally:
        consumer.close()


class Progress:
    """A tqdm progress bar on stderr if it is a terminal; a no-op otherwise."""

    def __init__(self, total: int, unit: str = "rec", desc: str = "") -> None:
        self._bar: Any = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit=unit, unit_scale=True, desc=desc, file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def write(self, line: str, *, stderr: bool = False) -> None:
        stream = sys.stderr if stderr else sys.stdout
        if self._bar is not None:
            self._bar.write(line, file=stream)
        else:
            print(line, file=stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def command_line(tool: str, argv: Sequence[str] | None) -> list[str]:
    if argv is None:
        return [os.path.basename(sys.argv[0]), *sys.argv[1:]]
    return ["annal-bench", tool, *argv]


def finish(
    args: argparse.Namespace,
    tool: str,
    argv: Sequence[str] | None,
    *,
    config: Mapping[str, Any],
    result: Mapping[str, Any],
    started_epoch_s: float,
    finished_epoch_s: float,
    timeseries: Sequence[Mapping[str, Any]],
    latency_distribution: Sequence[tuple[float, float]] = (),
    latency_label: str = "latency",
    latency_count: int | None = None,
    title: str = "",
) -> None:
    if args.json_path:
        write_json(
            args.json_path,
            build_summary(
                tool, config=config, result=result, started_epoch_s=started_epoch_s,
                finished_epoch_s=finished_epoch_s, timeseries=timeseries,
                command_line=command_line(tool, argv),
            ),
        )  # fmt: skip
    if args.plot_path:
        from annal.bench._plot import plot_run

        plot_run(args.plot_path, title=title or f"annal-bench {tool}", timeseries=timeseries,
                 latency_distribution=latency_distribution, latency_label=latency_label,
                 latency_count=latency_count)  # fmt: skip
