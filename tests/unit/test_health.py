"""annal.broker.server.health against an in-process gRPC server that plays the broker's Metadata."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from annal.protocol import annal_pb2, annal_pb2_grpc
from annal.broker.server import health

pytestmark = pytest.mark.timeout(30)


class _FakeBroker(annal_pb2_grpc.AnnalServicer):
    def __init__(self) -> None:
        self.broker_ids = [1, 2, 3]
        self.fail_with: grpc.StatusCode | None = None

    def Metadata(self, request, context):  # noqa: N802 - gRPC's name
        if self.fail_with is not None:
            context.abort(self.fail_with, "broker is shutting down")
        return annal_pb2.MetadataResponse(
            brokers=[
                annal_pb2.BrokerInfo(broker_id=b, host="127.0.0.1", port=9000 + b, fetch_port=9100 + b)
                for b in self.broker_ids
            ],
            topics=[annal_pb2.TopicMetadata(name="a"), annal_pb2.TopicMetadata(name="b")],
            controller_id=2,
            cluster_id="c-1",
        )


@pytest.fixture()
def fake() -> Iterator[tuple[_FakeBroker, str]]:
    servicer = _FakeBroker()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    annal_pb2_grpc.add_AnnalServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_healthy_report(fake: tuple[_FakeBroker, str]) -> None:
    _, address = fake
    report = health.check(address, broker_id=2)
    assert report.broker_ids == (1, 2, 3)
    assert report.controller_id == 2
    assert report.cluster_id == "c-1"
    assert report.topic_count == 2
    assert report.line() == f"ok: {address} cluster=c-1 controller=2 brokers=1,2,3 topics=2"


def test_broker_not_listed_is_unhealthy(fake: tuple[_FakeBroker, str]) -> None:
    servicer, address = fake
    servicer.broker_ids = [1, 3]
    with pytest.raises(health.UnhealthyError, match="broker 2 is not among the live brokers"):
        health.check(address, broker_id=2)
    # Without --broker-id the same answer is healthy.
    assert health.check(address).broker_ids == (1, 3)


def test_error_status_is_unhealthy(fake: tuple[_FakeBroker, str]) -> None:
    servicer, address = fake
    servicer.fail_with = grpc.StatusCode.UNAVAILABLE
    with pytest.raises(health.UnhealthyError, match="UNAVAILABLE: broker is shutting down"):
        health.check(address)


def test_unreachable_is_unhealthy() -> None:
    with pytest.raises(health.UnhealthyError, match="Metadata failed"):
        health.check(f"127.0.0.1:{_closed_port()}", timeout_ms=2000)


def test_main_exit_codes(fake: tuple[_FakeBroker, str], capsys: pytest.CaptureFixture[str]) -> None:
    _, address = fake
    assert health.main(["--bootstrap-server", address, "--broker-id", "3"]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {address} ")
    assert health.main(["--bootstrap-server", address, "--broker-id", "7"]) == 1
    assert "unhealthy:" in capsys.readouterr().err
    assert health.main(["--bootstrap-server", address, "--timeout-ms", "0"]) == 2
