"""The broker-wide bound on request memory (``queued_max_request_bytes``, Kafka's
``queued.max.request.bytes``): 200 connections each send the start of a large PRODUCE frame and
stop. The broker reads until the bound, then stops reading from sockets (the rest waits in the
kernel's socket buffers, not in the broker), and its RSS stays under the bound plus the stated
overhead. Once the connections go, the memory is free again and a normal produce is served.
"""

from __future__ import annotations

import socket
import struct
import time
import urllib.request
import uuid

import pytest

from annal.client import Admin, NewTopic
from harness.batches import make_batch
from harness.broker import BrokerProcess, attach_logs
from harness.data_port import DataPortClient

BOUND = 64 << 20
FRAME = 50 << 20  # what each connection announces
SENT = 2 << 20  # what each connection sends of it
CONNECTIONS = 200
# DataPortServer's stated overhead: the one allocation that crosses the bound (<= max(4 MiB,
# a frame / 2)) plus a 4 KiB hold buffer per muted connection, plus per connection its 64 KiB
# scratch buffer and the Python objects of a connection (~20 KiB, measured below as slack).
OVERHEAD = max(4 << 20, FRAME // 2) + CONNECTIONS * (4096 + 65536 + 20 * 1024)


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _metric(b: BrokerProcess, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{b.metrics_port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name}")


@pytest.mark.timeout(180)
def test_200_large_partial_frames_stay_under_the_bound(tmp_path, request):
    b = BrokerProcess(tmp_path / "data", metrics_port=0,
                      config={"queued_max_request_bytes": BOUND, "max_request_bytes": 60 << 20,
                              "request_timeout_ms": 120_000})
    attach_logs(request, b)
    socks: list[socket.socket] = []
    try:
        b.start()
        topic = "mem-" + uuid.uuid4().hex[:8]
        with Admin(b.bootstrap) as admin:
            admin.create_topics([NewTopic(topic, 1)])
        baseline = _rss(b.proc.pid)
        chunk = b"\0" * (256 << 10)
        for _ in range(CONNECTIONS):
            s = socket.create_connection(("127.0.0.1", b.fetch_port))
            s.setblocking(False)
            socks.append(s)
        unsent = {s: SENT for s in socks}
        unsent_prefix = {s: struct.pack(">i", FRAME) for s in socks}
        # Push what the kernel takes, round-robin, until nothing moves for a while: the broker
        # has read all it will (muted connections' bytes sit in socket buffers).
        idle_rounds = 0
        deadline = time.monotonic() + 120
        while idle_rounds < 20 and time.monotonic() < deadline:
            moved = 0
            for s in socks:
                try:
                    if unsent_prefix[s]:
                        n = s.send(unsent_prefix[s])
                        unsent_prefix[s] = unsent_prefix[s][n:]
                        moved += n
                    if not unsent_prefix[s] and unsent[s]:
                        n = s.send(chunk[: min(len(chunk), unsent[s])])
                        unsent[s] -= n
                        moved += n
                except BlockingIOError:
                    pass
            idle_rounds = idle_rounds + 1 if moved == 0 else 0
            if moved == 0:
                time.sleep(0.05)  # the broker drains socket buffers meanwhile
        offered = CONNECTIONS * SENT - sum(unsent.values())
        queued = _metric(b, "annal_data_port_queued_request_bytes")
        muted = _metric(b, "annal_data_port_muted_connections")
        grown = _rss(b.proc.pid) - baseline
        print(f"offered {offered >> 20} MiB over {CONNECTIONS} connections; broker queued {int(queued) >> 20} MiB, "
              f"muted {int(muted)} connections, RSS +{grown >> 20} MiB (bound {BOUND >> 20} MiB + overhead "
              f"{OVERHEAD >> 20} MiB)")
        assert offered > 2 * BOUND, "the test did not offer more than the bound"
        assert muted > 0
        assert queued <= BOUND + max(4 << 20, FRAME // 2)
        assert grown <= BOUND + OVERHEAD
        for s in socks:
            s.close()
        socks.clear()
        # Memory comes back and the port still serves.
        deadline = time.monotonic() + 30
        while _metric(b, "annal_data_port_queued_request_bytes") > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _metric(b, "annal_data_port_queued_request_bytes") == 0
        with DataPortClient(*b.fetch_address) as c:
            assert c.produce([(topic, 0, make_batch(3))]).partitions[0].error_code == 0
    finally:
        for s in socks:
            s.close()
        b.stop()
