"""``annal health``: ask a broker whether it serves, for container health checks and scripts.

One gRPC ``Metadata`` call (the same call every client makes first) with a deadline. The broker
is healthy when it answers in time and, when ``--broker-id`` is given, lists itself among the
live brokers: in cluster mode a broker is listed only once its ZooKeeper registration exists, so
a broker that serves gRPC but lost its session reports unhealthy.

Exit status: 0 healthy, 1 unhealthy (the reason on stderr), 2 bad usage. One line on stdout
when healthy, e.g. ``ok: 127.0.0.1:9092 cluster=... controller=1 brokers=1,2,3 topics=4``.

Runs as ``annal health ...`` (what docker/Dockerfile's HEALTHCHECK uses) and as
``python -m annal.broker.server.health ...``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

__all__ = ["HealthReport", "check", "configure_parser", "run", "main"]


@dataclass(frozen=True, slots=True)
class HealthReport:
    """What one Metadata call said about the cluster, as seen from ``address``."""

    address: str
    cluster_id: str
    controller_id: int
    broker_ids: tuple[int, ...]
    topic_count: int

    def line(self) -> str:
        brokers = ",".join(str(b) for b in self.broker_ids) or "-"
        return (
            f"ok: {self.address} cluster={self.cluster_id or '-'} controller={self.controller_id} "
            f"brokers={brokers} topics={self.topic_count}"
        )


class UnhealthyError(Exception):
    """The broker did not answer, answered with an error, or does not list itself."""


def check(address: str, *, broker_id: int | None = None, timeout_ms: int = 3000) -> HealthReport:
    """Call Metadata on ``address`` (HOST:PORT) and return what it said.

    Raises ``UnhealthyError`` when the call fails or times out, or when ``broker_id`` is given
    and is not among the brokers the answer lists.
    """
    import grpc

    from annal.protocol import annal_pb2, annal_pb2_grpc

    channel = grpc.insecure_channel(address)
    try:
        stub = annal_pb2_grpc.AnnalStub(channel)
        try:
            response = stub.Metadata(annal_pb2.MetadataRequest(), timeout=timeout_ms / 1000.0)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            name = code.name if code is not None else "UNKNOWN"
            raise UnhealthyError(f"{address}: Metadata failed: {name}: {details}") from None
    finally:
        channel.close()
    broker_ids = tuple(sorted(b.broker_id for b in response.brokers))
    report = HealthReport(
        address=address,
        cluster_id=response.cluster_id,
        controller_id=response.controller_id,
        broker_ids=broker_ids,
        topic_count=len(response.topics),
    )
    if broker_id is not None and broker_id not in broker_ids:
        raise UnhealthyError(
            f"{address}: broker {broker_id} is not among the live brokers {list(broker_ids)} "
            "(not registered in the cluster yet, or its session expired)"
        )
    return report


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-server",
        default="127.0.0.1:9092",
        metavar="HOST:PORT",
        help="the broker's gRPC address (default: %(default)s)",
    )
    parser.add_argument(
        "--broker-id",
        type=int,
        default=None,
        help="also require this broker id among the live brokers the answer lists",
    )
    parser.add_argument(
        "--timeout-ms",
        type=int,
        default=3000,
        help="deadline of the Metadata call in ms (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    if args.timeout_ms <= 0:
        print("error: --timeout-ms must be > 0", file=sys.stderr)
        return 2
    try:
        report = check(args.bootstrap_server, broker_id=args.broker_id, timeout_ms=args.timeout_ms)
    except UnhealthyError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    print(report.line())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="annal health", description="Ask a broker whether it serves (exit 0 when healthy)."
    )
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
