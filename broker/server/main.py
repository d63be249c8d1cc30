"""``annal broker start``: run one broker process.

    annal broker start --standalone --data-dir DIR [--host 127.0.0.1] [--port 9092]
        [--fetch-port 9093] [--metrics-port 9094] [--config FILE] [--log-level INFO]
    annal broker start --zookeeper HOST:PORT/chroot --broker-id N --data-dir DIR ...

Start-up order: take the data dir lock (a second broker on the same dir exits with status 2 and
a clear message), open and recover the logs, bind every port (port 0 lets the OS choose), join
the cluster through the coordinator (standalone: ``topics.json`` in the data dir; ZooKeeper:
``ZooKeeperCoordinator``), start serving, and log one line::

    annal broker 0 ready: grpc=127.0.0.1:40123 data=127.0.0.1:40124 metrics=127.0.0.1:40125 data_dir=...

SIGTERM/SIGINT: stop accepting, wake long-polls so they answer, let requests in flight finish,
flush and close every log, leave the cluster, release the lock, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import logging
import os
import signal
import sys
from typing import Any

__all__ = ["configure_parser", "run", "READY_MARKER"]

READY_MARKER = "ready:"

log = logging.getLogger("annal.main")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="broker_command", metavar="ACTION", required=True)
    start = sub.add_parser("start", help="start a broker", description="Start an Annal broker.")
    mode = start.add_mutually_exclusive_group()
    mode.add_argument("--standalone", action="store_true",
                      help="one broker, topic metadata kept in the data dir (the default without --zookeeper)")
    mode.add_argument("--zookeeper", metavar="HOST:PORT[/chroot]", default=None,
                      help="join the cluster whose state lives in this ZooKeeper ensemble")
    start.add_argument("--data-dir", default=None, help="directory of the partition logs (required)")
    start.add_argument("--config", default=None, metavar="FILE", help="TOML file of broker settings")
    start.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    start.add_argument("--advertised-host", default=None,
                       help="host name given to clients (default: --host, or 127.0.0.1 for 0.0.0.0)")
    start.add_argument("--port", type=int, default=None, help="gRPC port (default 9092; 0 picks a free one)")
    start.add_argument("--fetch-port", type=int, default=None, help="data port (default 9093; 0 picks one)")
    start.add_argument("--metrics-port", type=int, default=None,
                       help="Prometheus metrics port (default 9094; 0 picks one; -1 disables)")
    start.add_argument("--kafka-port", type=int, default=None,
                       help="Apache Kafka protocol listener (default 19092; 0 picks one; -1 disables)")
    start.add_argument("--broker-id", type=int, default=None, help="this broker's id (default 0)")
    start.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                       type=str.upper, help="log level (default INFO)")
    start.add_argument("--request-timeout-ms", type=int, default=None,
                       help="disconnect a peer that stalls mid-request after this long (default 30000)")
    start.add_argument("--zookeeper-session-timeout-ms", type=int, default=None,
                       help="ZooKeeper session timeout (default 6000)")
    start.add_argument("--zookeeper-connect-timeout-ms", type=int, default=None,
                       help="give up when ZooKeeper does not answer at start-up within this long "
                            "(default 0: wait and retry until it answers)")


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kazoo and grpc are chatty at INFO; keep their warnings.
    logging.getLogger("kazoo").setLevel(max(logging.WARNING, root.level))


def run(args: argparse.Namespace) -> int:
    from annal.errors import AnnalError
    from annal.broker.server.config import load_config

    if args.broker_command != "start":
        raise SystemExit(f"unknown broker action {args.broker_command!r}")
    overrides: dict[str, Any] = {
        "data_dir": args.data_dir,
        "host": args.host,
        "advertised_host": args.advertised_host,
        "port": args.port,
        "fetch_port": args.fetch_port,
        "metrics_port": args.metrics_port,
        "kafka_port": args.kafka_port,
        "broker_id": args.broker_id,
        "log_level": args.log_level,
        "zookeeper": args.zookeeper,
        "request_timeout_ms": args.request_timeout_ms,
        "zookeeper_session_timeout_ms": args.zookeeper_session_timeout_ms,
        "zookeeper_connect_timeout_ms": args.zookeeper_connect_timeout_ms,
    }
    try:
        config = load_config(args.config, overrides)
    except AnnalError as err:
        print(f"annal broker: configuration error: {err.message}", file=sys.stderr)
        return 2
    _setup_logging(config.log_level)
    try:
        return asyncio.run(_serve(config))
    except AnnalError as err:
        log.error("broker failed to start: %s", err.message)
        return 2
    except OSError as err:
        log.error("broker failed to start: %s", err)
        return 2


def _make_coordinator(config: Any) -> Any:
    if config.zookeeper:
        from annal.broker.coordination.zookeeper import ZooKeeperCoordinator

        return ZooKeeperCoordinator(
            config.zookeeper,
            session_timeout_ms=config.zookeeper_session_timeout_ms,
            connect_timeout_ms=config.zookeeper_connect_timeout_ms,
        )
    from annal.broker.coordination.standalone import StandaloneCoordinator

    return StandaloneCoordinator(config.data_dir)


async def _serve(config: Any) -> int:
    import grpc

    from annal.broker.coordination.base import BrokerInfo
    from annal.protocol import annal_pb2_grpc
    from annal.broker.server.broker import Broker
    from annal.broker.server.data_port import DataPortServer
    from annal.broker.server.grpc_service import AnnalServicer
    from annal.broker.server.lock import DataDirLock

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    lock = DataDirLock(config.data_dir)
    lock.acquire()  # raises DataDirLockedError (exit 2) before anything is opened
    # acks=all produces wait on these threads for the followers (docs/replication.md).
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="annal-io")
    loop.set_default_executor(executor)
    broker = Broker(config, _make_coordinator(config))
    grpc_server = None
    data_port = None
    kafka = None
    try:
        broker.open()
        data_port = DataPortServer(
            broker, config.host, config.fetch_port,
            request_timeout_ms=config.request_timeout_ms, max_request_bytes=config.max_request_bytes,
            queued_max_request_bytes=config.queued_max_request_bytes,
            num_io_threads=config.num_io_threads, queued_max_requests=config.queued_max_requests,
        )
        fetch_port = data_port.bind()
        kafka_port = -1
        if config.kafka_port >= 0:
            from annal.broker.server.kafka import make_listener

            kafka = make_listener(broker, config, pool=data_port.handlers, memory=data_port.memory)
            kafka_port = kafka.bind()
        grpc_server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(max_workers=config.grpc_workers, thread_name_prefix="annal-grpc"),
            options=[
                ("grpc.max_receive_message_length", config.max_request_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),
            ],
        )
        annal_pb2_grpc.add_AnnalServicer_to_server(AnnalServicer(broker), grpc_server)
        try:
            grpc_port = grpc_server.add_insecure_port(f"{config.host}:{config.port}")
        except RuntimeError:  # grpcio's way of saying the bind failed
            grpc_port = 0
        if not grpc_port:
            raise OSError(f"cannot listen on {config.host}:{config.port} for gRPC (address in use?)")
        metrics_port = -1
        if config.metrics_port >= 0:
            metrics_port = broker.metrics.serve(config.host, config.metrics_port)
        me = BrokerInfo(config.broker_id, config.public_host, grpc_port, fetch_port, kafka_port)
        if not await _join(loop, broker, me, stop):
            log.info("stopped before joining the cluster")
            return 0
        grpc_server.start()
        await data_port.start()
        if kafka is not None:
            await kafka.start()
        # Everything allocated so far (modules, gRPC and protobuf tables, open logs) lives as
        # long as the process: keep it out of the cyclic GC's full collections, which would
        # otherwise walk it again and again under a steady request load.
        gc.freeze()
        mode = f"zookeeper={config.zookeeper}" if config.zookeeper else "standalone"
        _always(
            "annal broker %d %s grpc=%s:%d data=%s:%d metrics=%s data_dir=%s mode=%s pid=%d kafka=%s",
            config.broker_id, READY_MARKER, config.host, grpc_port, config.host, fetch_port,
            f"{config.host}:{metrics_port}" if metrics_port >= 0 else "off",
            config.data_dir, mode, os.getpid(), f"{config.host}:{kafka_port}" if kafka is not None else "off",
        )
        await stop.wait()
        log.info("shutting down: no new requests; finishing those in flight")
    finally:
        try:
            # Controlled shutdown: other in-sync replicas take over the partitions led here
            # while this broker still answers, so producers see only NOT_LEADER and move on.
            moved = await loop.run_in_executor(None, broker.controlled_shutdown)
            if moved:
                log.info("controlled shutdown: leadership of %d partition(s) moved to other replicas", moved)
        except Exception:
            log.exception("controlled shutdown failed; stopping anyway")
        broker.begin_shutdown()
        grace = config.shutdown_timeout_ms / 1000
        stopped = grpc_server.stop(grace) if grpc_server is not None else None
        if kafka is not None:
            await kafka.close(timeout=grace)
        if data_port is not None:
            await data_port.close(timeout=grace)
        if stopped is not None:
            await loop.run_in_executor(None, stopped.wait, grace)
        broker.close()
        broker.metrics.close()
        executor.shutdown(wait=False)
        lock.release()
    _always("annal broker %d stopped cleanly", config.broker_id)
    return 0


async def _join(loop: asyncio.AbstractEventLoop, broker: Any, me: Any, stop: asyncio.Event) -> bool:
    """``broker.start(me)`` (join the cluster) on a worker thread, so that SIGTERM still stops a
    broker that is waiting for ZooKeeper. False when stopped first; start()'s errors propagate."""
    joining = loop.run_in_executor(None, broker.start, me)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({joining, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not stopping.done():
        stopping.cancel()
        joining.result()
        return True
    broker.coordinator.stop()  # a start() waiting for ZooKeeper gives up
    try:
        await joining
    except Exception as exc:  # what start() raised on being stopped
        log.debug("start() ended by stop: %r", exc)
    return False


def _always(msg: str, *args: Any) -> None:
    """Log at INFO, or print the line when the level hides INFO: tools wait for these lines."""
    if log.isEnabledFor(logging.INFO):
        log.info(msg, *args)
    else:
        print(msg % args, file=sys.stderr, flush=True)
