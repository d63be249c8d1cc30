"""``annal cluster up``: a local ZooKeeper and N brokers in the foreground, for development.

    annal cluster up [--brokers 3] [--data-dir DIR] [--zookeeper HOST:PORT[/chroot]] [--zookeeper-port N] [--base-port P]

Starts the Debian ZooKeeper server on a free loopback port, or on ``--zookeeper-port`` (unless ``--zookeeper`` names an
ensemble), then brokers 1..N as child processes (``python -m annal.broker broker start
--zookeeper ... --broker-id i``), waits until each logs its ready line, and prints
machine-parsable lines::

    zookeeper=127.0.0.1:38211/annal
    bootstrap_servers=127.0.0.1:9092,127.0.0.1:9095,127.0.0.1:9098
    broker.1 grpc=127.0.0.1:9092 data=127.0.0.1:9093 metrics=127.0.0.1:9094 pid=4242 log=DIR/broker-1.log
    cluster ready: 3 broker(s); Ctrl-C or SIGTERM stops everything

On disk, under ``--data-dir`` (a fresh temporary directory, removed at exit, when not given)::

    zookeeper/            the server's zoo.cfg, data/ and zookeeper.log
    broker-<id>/          each broker's partition logs
    broker-<id>.log       each broker's stdout+stderr

Ctrl-C (SIGINT to the whole foreground process group) or SIGTERM to this process stops the
brokers (SIGTERM, then SIGKILL after a grace period), then ZooKeeper; every child also gets
PR_SET_PDEATHSIG, so none outlives this process even if it is SIGKILLed.

With ``--base-port P`` broker i listens on P+3(i-1) (gRPC), +1 (data port), +2 (metrics);
without it the brokers bind free ports and report them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from annal.zookeeper import paths
from annal.broker.coordination.zk_server import ZooKeeperNotInstalledError, ZooKeeperServer, die_with_parent

__all__ = ["configure_parser", "run", "LocalCluster"]

_READY = re.compile(
    r"annal broker (?P<id>\d+) ready: grpc=(?P<host>\S+):(?P<port>\d+) data=\S+:(?P<fetch>\d+) "
    r"metrics=(?:\S+:(?P<metrics>\d+)|off)"
)
_KAFKA = re.compile(r"annal broker \d+ ready: .* kafka=(?P<kafka>\S+)")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    up = sub.add_parser(
        "up",
        help="start ZooKeeper and N brokers in the foreground",
        description="Start a local ZooKeeper (unless --zookeeper is given) and N brokers; "
        "print bootstrap_servers= and zookeeper= lines; Ctrl-C stops everything.",
    )
    up.add_argument("--brokers", type=int, default=3, help="number of brokers (default 3)")
    up.add_argument("--data-dir", default=None, help="directory for ZooKeeper and broker data (default: a temporary one, removed at exit)")
    up.add_argument("--zookeeper", default=None, metavar="HOST:PORT[/chroot]",
                    help="use this ZooKeeper instead of starting one (chroot defaults to /annal)")
    up.add_argument("--zookeeper-port", type=int, default=0,
                    help="port of the ZooKeeper this starts (default: a free port); not with --zookeeper")
    up.add_argument("--base-port", type=int, default=0,
                    help="broker i uses ports P+3(i-1) (gRPC), +1 (data), +2 (metrics); 0: free ports (default)")
    up.add_argument("--session-timeout-ms", type=int, default=6000, help="brokers' ZooKeeper session timeout (default 6000)")
    up.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper,
                    help="brokers' log level (default INFO)")
    up.add_argument("--start-timeout-s", type=float, default=60.0, help="how long to wait for each broker to be ready")


@dataclass
class _Broker:
    broker_id: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    grpc: str = ""
    data: str = ""
    metrics: str = ""
    kafka: str = "off"


@dataclass
class LocalCluster:
    """ZooKeeper (optional) plus N broker processes. Not thread-safe: one thread drives it."""

    brokers: int
    data_dir: Path
    zookeeper: str | None = None
    zookeeper_port: int = 0
    base_port: int = 0
    session_timeout_ms: int = 6000
    log_level: str = "INFO"
    start_timeout_s: float = 60.0
    zk_server: ZooKeeperServer | None = None
    running: list[_Broker] = field(default_factory=list)
    _zk_was_running: bool = True

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(b.grpc for b in self.running)

    def start(self) -> None:
        """Start ZooKeeper and the brokers; raises RuntimeError (after stopping what started)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.zookeeper is None:
            self.zk_server = ZooKeeperServer(self.data_dir / "zookeeper", port=self.zookeeper_port, tick_time_ms=500)
            self.zk_server.start()
            self.zookeeper = paths.with_default_chroot(self.zk_server.address)
        else:
            self.zookeeper = paths.with_default_chroot(self.zookeeper)
        for i in range(1, self.brokers + 1):
            self.running.append(self._spawn(i))
        for b in self.running:
            self._wait_ready(b)

    def _spawn(self, broker_id: int) -> _Broker:
        assert self.zookeeper is not None
        if self.base_port:
            grpc, data, metrics = (self.base_port + 3 * (broker_id - 1) + k for k in range(3))
            # Kafka listeners side by side, 10000 above: 19092, 19093, 19094 for base 9092.
            kafka = self.base_port + 10000 + (broker_id - 1)
        else:
            grpc = data = metrics = kafka = 0
        log_path = self.data_dir / f"broker-{broker_id}.log"
        cmd = [
            sys.executable, "-m", "annal.broker", "broker", "start",
            "--zookeeper", self.zookeeper,
            "--broker-id", str(broker_id),
            "--data-dir", str(self.data_dir / f"broker-{broker_id}"),
            "--host", "127.0.0.1",
            "--port", str(grpc), "--fetch-port", str(data), "--metrics-port", str(metrics),
            "--kafka-port", str(kafka),
            "--zookeeper-session-timeout-ms", str(self.session_timeout_ms),
            "--log-level", self.log_level,
        ]
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                env=env, preexec_fn=die_with_parent,
            )
        return _Broker(broker_id, proc, log_path)

    def _wait_ready(self, b: _Broker) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            text = b.log_path.read_text(errors="replace") if b.log_path.exists() else ""
            m = _READY.search(text)
            if m:
                b.grpc = f"{m['host']}:{m['port']}"
                b.data = f"{m['host']}:{m['fetch']}"
                b.metrics = f"{m['host']}:{m['metrics']}" if m["metrics"] else "off"
                k = _KAFKA.search(text)
                b.kafka = k["kafka"] if k else "off"
                return
            rc = b.proc.poll()
            if rc is not None or time.monotonic() > deadline:
                tail = "\n".join(text.splitlines()[-30:])
                why = f"exited with status {rc}" if rc is not None else f"was not ready after {self.start_timeout_s:.0f} s"
                raise RuntimeError(f"broker {b.broker_id} {why}; log {b.log_path}:\n{tail}")
            time.sleep(0.05)

    def print_summary(self, out: IO[str]) -> None:
        print(f"zookeeper={self.zookeeper}", file=out)
        print(f"bootstrap_servers={self.bootstrap_servers}", file=out)
        print(f"kafka_bootstrap_servers={','.join(b.kafka for b in self.running if b.kafka != 'off')}", file=out)
        for b in self.running:
            print(
                f"broker.{b.broker_id} grpc={b.grpc} data={b.data} metrics={b.metrics} kafka={b.kafka} "
                f"pid={b.proc.pid} log={b.log_path}",
                file=out,
            )
        if self.zk_server is not None:
            print(f"zookeeper.pid={self.zk_server.pid} log={self.zk_server.log_path}", file=out)
        print(f"cluster ready: {len(self.running)} broker(s); Ctrl-C or SIGTERM stops everything", file=out, flush=True)

    def check(self, out: IO[str]) -> None:
        """Report children that exited on their own (once each)."""
        for b in list(self.running):
            rc = b.proc.poll()
            if rc is not None:
                print(f"broker.{b.broker_id} exited with status {rc}; see {b.log_path}", file=out, flush=True)
                self.running.remove(b)
        if self.zk_server is not None and self._zk_was_running and not self.zk_server.running:
            print(f"zookeeper exited; see {self.zk_server.log_path}", file=out, flush=True)
            self._zk_was_running = False

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM every broker, SIGKILL the ones still alive after ``grace_s``, then stop
        ZooKeeper. Idempotent."""
        for b in self.running:
            if b.proc.poll() is None:
                try:
                    b.proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace_s
        for b in self.running:
            try:
                b.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                b.proc.kill()
                b.proc.wait()
        self.running.clear()
        if self.zk_server is not None:
            self.zk_server.stop()


def run(args: argparse.Namespace) -> int:
    if args.cluster_command != "up":
        raise SystemExit(f"unknown cluster action {args.cluster_command!r}")
    if args.brokers < 1:
        print("error: --brokers must be >= 1", file=sys.stderr)
        return 2
    if args.zookeeper_port and args.zookeeper:
        print("error: --zookeeper-port is for the ZooKeeper this starts; not with --zookeeper", file=sys.stderr)
        return 2
    temp_dir = None
    if args.data_dir:
        data_dir = Path(args.data_dir)
    else:
        temp_dir = tempfile.mkdtemp(prefix="annal-cluster-")
        data_dir = Path(temp_dir)
    cluster = LocalCluster(
        brokers=args.brokers,
        data_dir=data_dir,
        zookeeper=args.zookeeper,
        zookeeper_port=args.zookeeper_port,
        base_port=args.base_port,
        session_timeout_ms=args.session_timeout_ms,
        log_level=args.log_level,
        start_timeout_s=args.start_timeout_s,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        try:
            cluster.start()
        except ZooKeeperNotInstalledError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except (RuntimeError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if stop.is_set():
            return 130
        cluster.print_summary(sys.stdout)
        while not stop.wait(0.5):
            cluster.check(sys.stderr)
        print("stopping the cluster", file=sys.stderr, flush=True)
    finally:
        # Ignore further Ctrl-C while children are shut down: a second one must not leave
        # processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cluster.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
    return 0

