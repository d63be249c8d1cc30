"""LogManager: opening a data directory, clean and unclean restarts, checkpoints, topic
deletion, path safety, periodic maintenance, the shared handle cache."""

from __future__ import annotations

import logging
import os

import pytest

from annal.errors import InvalidTopicError, LocalUsageError
from annal.broker.storage import (
    LOG_START_OFFSET_CHECKPOINT,
    RECOVERY_POINT_CHECKPOINT,
    LogConfig,
    LogManager,
    OffsetCheckpointFile,
)
from annal.record import encode_batch, iter_records
from annal.broker.storage._segment import LOG_GROWTH_MIN

pytestmark = pytest.mark.timeout(60)

CFG = dict(segment_bytes=1024, segment_index_bytes=4096, retention_ms=-1)


def batch(n: int = 2, tag: bytes = b"m") -> bytes:
    return encode_batch([(5_000 + i, b"k", tag + b"%d" % i + b"." * 100, None) for i in range(n)])


def values(lg, offset: int = 0) -> list[int]:
    with lg.read(offset, 1 << 30) as r:
        return [rec.offset for rec in iter_records(r.tobytes())]


def crash(lm: LogManager) -> None:
    for lg in lm.all_logs().values():
        lg.abandon()
    lm.handle_cache.close()


def test_create_append_clean_restart(tmp_path):
    d = str(tmp_path / "data")
    lm = LogManager(d, CFG)
    for p in range(3):
        lg = lm.get_or_create("orders", p)
        for _ in range(10):
            lg.append(batch())
    lm.get_or_create("my-topic-1", 2).append(batch(3))
    assert lm.topics() == {"my-topic-1": [2], "orders": [0, 1, 2]}
    lm.close_all()
    assert os.path.exists(os.path.join(d, ".annal_cleanshutdown"))
    rps = OffsetCheckpointFile(os.path.join(d, RECOVERY_POINT_CHECKPOINT)).read()
    assert rps == {("orders", 0): 20, ("orders", 1): 20, ("orders", 2): 20, ("my-topic-1", 2): 3}
    assert OffsetCheckpointFile(os.path.join(d, LOG_START_OFFSET_CHECKPOINT)).read() == {k: 0 for k in rps}

    lm = LogManager(d, CFG)
    try:
        assert not os.path.exists(os.path.join(d, ".annal_cleanshutdown"))
        assert sorted(lm.all_logs()) == sorted(rps)
        for tp, lg in lm.all_logs().items():
            assert lg.report.clean and lg.report.segments_scanned == 0
            assert values(lg) == list(range(rps[tp]))
        assert lm.get("orders", 7) is None
    finally:
        lm.close_all()


def test_unclean_restart_scans_from_recovery_point(tmp_path, caplog):
    d = str(tmp_path / "data")
    lm = LogManager(d, CFG)
    lg = lm.get_or_create("t", 0)
    for _ in range(30):
        lg.append(batch())
    lm.flush_all()  # checkpoint: recovery point 60
    for _ in range(3):
        lg.append(batch())
    path = lg.active_segment.log_path
    size = lg.active_segment.size
    crash(lm)
    os.truncate(path, size - 10)  # the last batch is torn
    with caplog.at_level(logging.WARNING):
        lm = LogManager(d, CFG)
    try:
        lg = lm.get("t", 0)
        assert lg is not None
        assert lg.log_end_offset == 64
        assert lg.report.segments_scanned <= 2 and lg.report.bytes_truncated > 0
        assert values(lg) == list(range(64))
        assert "truncated" in caplog.text
    finally:
        lm.close_all()


def test_corrupt_checkpoint_means_full_recovery(tmp_path, caplog):
    d = str(tmp_path / "data")
    lm = LogManager(d, CFG)
    lg = lm.get_or_create("t", 0)
    for _ in range(20):
        lg.append(batch())
    n_segments = len(lg.segments)
    lm.close_all()
    with open(os.path.join(d, RECOVERY_POINT_CHECKPOINT), "r+b") as f:
        f.seek(3)
        f.write(b"9")
    with caplog.at_level(logging.WARNING):
        lm = LogManager(d, CFG)
    try:
        lg = lm.get("t", 0)
        assert lg.report.segments_scanned == n_segments > 1
        assert "corrupt" in caplog.text
        assert values(lg) == list(range(40))
    finally:
        lm.close_all()


def test_checkpoint_format_roundtrip_and_rejects():
    data = OffsetCheckpointFile.encode({("a-b", 0): 5, ("c", 12): 0})
    assert data.startswith(b"1\n2\na-b 0 5\nc 12 0\ncrc32c ")
    assert OffsetCheckpointFile.decode(data) == {("a-b", 0): 5, ("c", 12): 0}
    from annal.broker.storage import CheckpointCorruptError

    for bad in (b"", data[:-3], data.replace(b"a-b 0 5", b"a-b 0 6"), b"1\n1\nx 0 1\n"):
        with pytest.raises(CheckpointCorruptError):
            OffsetCheckpointFile.decode(bad)


def test_delete_topic(tmp_path):
    d = str(tmp_path / "data")
    lm = LogManager(d, CFG)
    try:
        for p in range(2):
            lm.get_or_create("gone", p).append(batch())
        lm.get_or_create("gone-too", 0).append(batch())
        held = lm.get("gone", 0).read(0, 100)
        assert lm.delete_topic("gone") == 2
        assert lm.get("gone", 0) is None and lm.get("gone-too", 0) is not None
        assert sorted(n for n in os.listdir(d) if not n.startswith(("recovery", "log-start"))) == ["gone-too-0"]
        assert list(iter_records(held.tobytes()))[0].offset == 0  # still readable
        held.release()
        assert OffsetCheckpointFile(os.path.join(d, RECOVERY_POINT_CHECKPOINT)).read() == {("gone-too", 0): 0}
        assert lm.get_or_create("gone", 0).log_end_offset == 0  # recreated empty
    finally:
        lm.close_all()


@pytest.mark.parametrize("topic", ["..", "../evil", "a/b", "", "x\0y"])
def test_topic_names_cannot_leave_data_dir(tmp_path, topic):
    lm = LogManager(str(tmp_path / "data"), CFG)
    try:
        with pytest.raises(InvalidTopicError):
            lm.get_or_create(topic, 0)
        assert os.listdir(tmp_path) == ["data"]
    finally:
        lm.close_all()


def test_run_maintenance_retention_roll_flush(tmp_path):
    d = str(tmp_path / "data")
    lm = LogManager(d, dict(CFG, retention_bytes=3000, segment_ms=60_000, flush_ms=1000))
    try:
        lg = lm.get_or_create("t", 0)
        for _ in range(40):
            lg.append(batch())
        now = lg.active_segment.created_ms + 61_000
        done = lm.run_maintenance(now)
        assert done["segments_deleted"] > 0 and done["segments_rolled"] == 1 and done["logs_flushed"] == 1
        assert lg.log_start_offset > 0 and lg.recovery_point == lg.log_end_offset
        lsos = OffsetCheckpointFile(os.path.join(d, LOG_START_OFFSET_CHECKPOINT)).read()
        assert lsos == {("t", 0): lg.log_start_offset}
    finally:
        lm.close_all()
    lm = LogManager(d, CFG)
    try:
        assert lm.get("t", 0).log_start_offset == lsos[("t", 0)]
    finally:
        lm.close_all()


def test_per_log_config_and_closed_manager(tmp_path):
    lm = LogManager(str(tmp_path / "data"), LogConfig(segment_bytes=1 << 20))
    lg = lm.get_or_create("t", 0, {"segment_bytes": 2048})
    assert lg.config.segment_bytes == 2048
    assert lm.get_or_create("u", 0).config.segment_bytes == 1 << 20
    lm.close_all()
    with pytest.raises(LocalUsageError):
        lm.get_or_create("v", 0)


def test_foreign_folders_are_ignored(tmp_path):
    d = tmp_path / "data"
    (d / "lost+found").mkdir(parents=True)
    (d / "notapartition").mkdir()
    (d / "x-1.deleting").mkdir()
    lm = LogManager(str(d), CFG)
    try:
        assert lm.all_logs() == {}
        assert not (d / "x-1.deleting").exists()
    finally:
        lm.close_all()


def test_shared_handle_cache_bounds_descriptors(tmp_path):
    lm = LogManager(str(tmp_path / "data"), CFG, max_open_fds=12)
    try:
        lg = lm.get_or_create("t", 0)
        for _ in range(60):
            lg.append(batch())
        assert len(lg.segments) > 10
        for seg in lg.segments:
            assert values(lg, seg.base_offset)[0] == seg.base_offset
            assert lm.handle_cache.fd_count <= 12
        assert lm.handle_cache.evicted > 0
    finally:
        lm.close_all()


def _apparent_bytes(root: str) -> int:
    """What ``du --apparent-size`` adds up: the length of every file."""
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(root) for n in names)


def test_data_dir_after_clean_shutdown_is_about_its_data(tmp_path):
    """No preallocation by default, and the indexes are trimmed on close: three empty
    partitions and one with 1 MB of batches add up to the batches plus a few percent
    (the dense index: 4 bytes per offset), not gigabytes of holes."""
    root = str(tmp_path / "data")
    appended = 0
    with LogManager(root, dict(retention_ms=-1)) as lm:
        for p in range(3):
            lm.get_or_create("empty", p)
        lg = lm.get_or_create("full", 0)
        while appended < 1_000_000:
            b = encode_batch([(5_000 + i, None, b"x" * 1000, None) for i in range(10)])
            lg.append(b)
            appended += len(b)
        # While running, the active .log grows in steps: a hole of at most the larger of
        # its data and LOG_GROWTH_MIN past the data (not a whole segment).
        assert appended <= os.path.getsize(lg.active_segment.log_path) <= max(2 * appended, LOG_GROWTH_MIN)
    total = _apparent_bytes(root)
    assert appended <= total <= appended * 1.03 + 4096
