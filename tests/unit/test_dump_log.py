"""annal dump-log: batch lines, --records, torn tails, index and time index files."""

from __future__ import annotations

import os

import pytest

from annal.broker.cli import main
from annal.broker.storage import PartitionLog
from annal.record import CODEC_LZ4, encode_batch

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def seg(tmp_path):
    lg = PartitionLog.open(str(tmp_path / "t-0"), segment_index_bytes=4096)
    lg.append(encode_batch([(1000, b"k", b"hello", [("h", b"1")]), (1001, None, b"world", None)]))
    lg.append(encode_batch([(2000, None, b"lz" * 20, None)] * 3, CODEC_LZ4))
    lg.close()
    return str(tmp_path / "t-0" / "00000000000000000000")


def test_log_batches_and_records(seg, capsys):
    assert main(["dump-log", seg + ".log", "--records"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"Dumping {seg}.log"
    assert out[1] == "Log starting offset: 0"
    assert out[2] == ("baseOffset: 0 lastOffset: 1 count: 2 position: 0 size: 90 maxTimestamp: 1001 "
                      "codec: none crcValid: true")
    assert out[3] == "| offset: 0 timestamp: 1000 key: k value: hello headers: [h=1]"
    assert out[4] == "| offset: 1 timestamp: 1001 key: null value: world headers: []"
    assert out[5].startswith("baseOffset: 2 lastOffset: 4 count: 3 position: 90 ") and "codec: lz4 crcValid: true" in out[5]
    assert out[6] == "| offset: 2 timestamp: 2000 key: null value: " + "lz" * 20 + " headers: []"
    assert out[-1].startswith("2 batches, ")


def test_corrupt_batch_and_torn_tail(seg, capsys):
    size = os.path.getsize(seg + ".log")
    with open(seg + ".log", "r+b") as f:
        f.seek(50)
        b = f.read(1)
        f.seek(50)
        f.write(bytes([b[0] ^ 1]))
    os.truncate(seg + ".log", size - 4)
    assert main(["dump-log", seg + ".log"]) == 0
    out = capsys.readouterr().out
    assert "position: 0 size: 90" in out and "crcValid: false error: CRC-32C mismatch" in out
    assert f"{size - 4 - 90} bytes at position 90 do not form a whole batch" in out


def test_index_and_timeindex(seg, capsys):
    assert main(["dump-log", seg + ".index", seg + ".timeindex"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "Offset index: 5 entries (offsets 0..4)" in out
    assert "offset: 0..1 position: 0" in out and "offset: 2..4 position: 90" in out
    assert "Index sanity check passed" in out
    assert "timestamp: 1001 offset: 0" in out and "timestamp: 2000 offset: 2" in out
    assert "Time index sanity check passed" in out


def test_bad_index_is_reported(seg, capsys):
    with open(seg + ".index", "r+b") as f:
        f.seek(8)
        f.write((7).to_bytes(4, "big"))
    assert main(["dump-log", seg + ".index"]) == 1
    assert "Index sanity check failed" in capsys.readouterr().out


def test_missing_file_and_wrong_kind(tmp_path, capsys):
    assert main(["dump-log", str(tmp_path / "nope.log")]) == 1
    assert main(["dump-log", str(tmp_path)]) == 1
