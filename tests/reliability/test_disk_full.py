"""A full disk: appends into a small filesystem (a tmpfs, or a loop-mounted ext4 image, mounted by
the test) until ENOSPC.

What must hold: the produce fails with a clear StorageError (KAFKA_STORAGE_ERROR, code 56) on
the data port and on gRPC, the broker stays up, everything appended before stays readable and CRC-valid, and appends resume
once space is freed (a filler file deleted). Mounting needs root or CAP_SYS_ADMIN; without
them the tests skip and say why.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap
import uuid

import grpc
import pytest

from annal.errors import StorageError
from annal.protocol import annal_pb2, annal_pb2_grpc
from annal.client import Admin, NewTopic
from harness.batches import make_batch
from harness.broker import BrokerProcess, attach_logs
from harness.data_port import DataPortClient
from harness.faults import SizeLimitedMount, fetch_all, fill_filesystem, scan_data_dir

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

# Runs in a child process: a SIGBUS there kills the child, not the test run.
_INDEX_PAGE_SCRIPT = textwrap.dedent("""
    import os, sys
    from annal.errors import StorageError
    from annal.broker.storage import PartitionLog
    from annal.record import encode_batch

    mnt = sys.argv[1]
    batch = encode_batch([(0, None, b"", None)] * 1024)  # 1024 offsets: one 4 KiB index page
    for free_pages in range(0, 6):
        d = os.path.join(mnt, f"p{free_pages}")
        lg = PartitionLog.open(os.path.join(d, "t-0"), segment_bytes=1 << 30)
        lg.append(batch)
        filler = os.path.join(mnt, "filler")
        fd = os.open(filler, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
        try:
            while True:
                os.write(fd, b"\\1" * 4096)
        except OSError:
            pass
        os.close(fd)
        os.truncate(filler, os.path.getsize(filler) - 4096 * free_pages)
        outcomes = []
        for _ in range(4):
            try:
                lg.append(batch)
                outcomes.append("ok")
            except StorageError as e:
                outcomes.append("StorageError")
        os.unlink(filler)
        lg.append(batch)  # space is back
        n = lg.log_end_offset
        lg.close()
        again = PartitionLog.open(os.path.join(d, "t-0"))
        assert again.log_end_offset == n and not again.report.lost_data, again.report.summary()
        again.close()
        print(free_pages, ",".join(outcomes), n, flush=True)
""")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fstype", ["tmpfs", "ext4"])
def test_index_page_that_cannot_be_allocated_fails_the_append_instead_of_killing_the_process(tmp_path, fstype):
    """The active segment's index is a sparse file mapped shared; storing an entry into a page
    the full filesystem cannot back is SIGBUS. With 0..5 free pages (the batch needs 3 for its
    ``.log`` bytes and 1 for its index page) every append either succeeds or raises
    StorageError, and the log reopens whole."""
    with SizeLimitedMount(tmp_path / "mnt", 4 << 20, fstype) as mnt:
        r = subprocess.run([sys.executable, "-c", _INDEX_PAGE_SCRIPT, str(mnt.path)], capture_output=True,
                           text=True, timeout=50, cwd=REPO_ROOT)
    assert r.returncode == 0, f"exit status {r.returncode} (-7 is SIGBUS)\n{r.stdout}\n{r.stderr}"
    lines = [ln.split() for ln in r.stdout.splitlines()]
    assert [int(ln[0]) for ln in lines] == list(range(6))
    assert any("StorageError" in ln[1] for ln in lines)
    assert any(ln[1].startswith("ok") for ln in lines)


def _produce(c: DataPortClient, topic: str, batch: bytes, acks: int = -1):
    return c.produce([(topic, 0, batch)], acks=acks).partitions[0]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fstype", ["tmpfs", "ext4"])
def test_broker_answers_enospc_with_storage_error_stays_up_and_resumes(tmp_path, request, fstype):
    mnt = SizeLimitedMount(tmp_path / "mnt", 24 << 20, fstype).mount()
    # The data dir lives on the tmpfs; the broker's log and config file stay outside it.
    b = BrokerProcess(mnt.path / "data", log_path=tmp_path / "full.broker.log",
                      config={"topic_defaults": {"segment_bytes": 1 << 20}})
    attach_logs(request, b)
    try:
        b.start()
        topic = "full-" + uuid.uuid4().hex[:8]
        with Admin(b.bootstrap) as admin:
            admin.create_topics([NewTopic(topic, 1)])
        batch = make_batch(count=16, value_size=1000)  # ~16 KiB
        acked = 0
        with DataPortClient(*b.fetch_address) as c:
            for _ in range(50):
                r = _produce(c, topic, batch)
                assert r.error_code == 0, r
                acked += 16
            filler = mnt.path / "filler"
            fill_filesystem(filler, leave_bytes=256 << 10)
            errors = []
            for _ in range(200):  # 256 KiB of room, 16 KiB per batch: ENOSPC well before 200
                r = _produce(c, topic, batch)
                if r.error_code:
                    errors.append(r)
                    break
                acked += 16
            assert errors, "the tmpfs never filled up"
            err = errors[0]
            assert err.error_code == StorageError.code, err
            assert "No space left on device" in err.error_message, err.error_message
            # The connection stays usable and the broker stays up; every retry fails the same way.
            assert _produce(c, topic, batch).error_code == StorageError.code
            # gRPC Produce answers the same error.
            with grpc.insecure_channel(b.bootstrap) as channel:
                resp = annal_pb2_grpc.AnnalStub(channel).Produce(annal_pb2.ProduceRequest(
                    acks=-1, timeout_ms=10_000,
                    partitions=[annal_pb2.ProducePartition(topic=topic, partition=0, batches=[batch])]), timeout=30)
            assert resp.results[0].error_code == StorageError.code, resp
            assert b.running
            got = fetch_all(b.fetch_address, topic)
            assert len(got.records) == acked and got.high_watermark == acked
            # Space back: appends resume where the log ended, with no gap.
            filler.unlink()
            for _ in range(5):
                r = _produce(c, topic, batch)
                assert r.error_code == 0, r
                assert r.base_offset == acked
                acked += 16
        got = fetch_all(b.fetch_address, topic)
        assert [o for o, _ in got.records] == list(range(acked))
        print(f"disk full ({fstype}): ENOSPC answered as {err.error_code} after {acked - 80} records; "
              f"{acked} records readable after space was freed")
        b.stop()
        scans = scan_data_dir(b.data_dir)
        assert scans[f"{topic}-0"].ok, scans[f"{topic}-0"].problems
        assert scans[f"{topic}-0"].next_offset == acked
    finally:
        b.stop()
        mnt.unmount()


def _metric(b: BrokerProcess, name: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{b.metrics_port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name} in\n{text}")


@pytest.mark.timeout(120)
def test_disk_full_is_one_warning_a_metric_and_a_clean_stop(tmp_path, request):
    """Many refused produces and maintenance passes on a full disk: one WARNING, no traceback,
    ``annal_disk_full`` 1 then 0 once space is back, and SIGTERM while the disk is full exits 0
    (no ``broker failed to start: [Errno 28]``)."""
    mnt = SizeLimitedMount(tmp_path / "mnt", 16 << 20, "tmpfs").mount()
    b = BrokerProcess(mnt.path / "data", log_path=tmp_path / "full.broker.log", metrics_port=0,
                      config={"topic_defaults": {"segment_bytes": 1 << 20}, "maintenance_interval_ms": 50})
    attach_logs(request, b)
    try:
        b.start()
        topic = "full-" + uuid.uuid4().hex[:8]
        with Admin(b.bootstrap) as admin:
            admin.create_topics([NewTopic(topic, 1)])
        batch = make_batch(count=16, value_size=1000)
        with DataPortClient(*b.fetch_address) as c:
            assert _produce(c, topic, batch).error_code == 0
            assert _metric(b, "annal_disk_full") == 0
            filler = mnt.path / "filler"
            fill_filesystem(filler, leave_bytes=0)
            refused = 0
            for _ in range(40):
                if _produce(c, topic, batch, acks=1).error_code == StorageError.code:
                    refused += 1
            assert refused >= 30, refused
            assert _metric(b, "annal_disk_full") == 1
            assert _metric(b, 'annal_storage_errors_total') >= refused
            log_text = b.log_text()
            assert log_text.count("disk full:") == 1, log_text[-3000:]
            assert "Traceback" not in log_text and " refused: " not in log_text, log_text[-3000:]
            rc = b.stop()  # SIGTERM with the disk still full
            log_text = b.log_text()
            assert rc == 0, log_text[-3000:]
            assert "failed to start" not in log_text and "Traceback" not in log_text, log_text[-3000:]
            filler.unlink()
        b.start()
        with DataPortClient(*b.fetch_address) as c:
            assert _produce(c, topic, batch).error_code == 0
        assert _metric(b, "annal_disk_full") == 0
        got = fetch_all(b.fetch_address, topic)
        assert [o for o, _ in got.records] == list(range(len(got.records))) and len(got.records) >= 32
    finally:
        b.stop()
        mnt.unmount()
