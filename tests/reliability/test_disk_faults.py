"""Disk faults injected into a stopped broker's data directory, then a restart.

Each test fills a partition (acks="all", small segments so there are several), stops the broker
(cleanly, or with SIGKILL), damages the files, and starts it again. What must hold:

* recovery keeps exactly the valid prefix: the records that were there before the fault, up to
  the first damaged batch (every record when only an index or checkpoint was damaged);
* the broker log says what recovery dropped or rebuilt;
* nothing corrupt is served: ``fetch_all`` reads the whole partition and checks every batch's
  CRC-32C and that offsets are contiguous;
* the log takes appends again from where it now ends, and every segment file scans whole.

The position of a cut and the segment whose index is damaged are drawn from a seeded RNG
(``ANNAL_FAULT_SEED`` replays one run).
"""

from __future__ import annotations

import pathlib
import re
import uuid
import pytest

from annal.client import Admin, NewTopic, Producer
from harness.zookeeper import wait_until
from harness.faults import (
    batch_positions,
    cut_file,
    fetch_all,
    fill_with_garbage,
    flip_byte,
    scan_data_dir,
    seeded_rng,
    segment_logs,
)

RECORDS = 3000
SEGMENT_BYTES = 64 << 10


def _fill(broker) -> tuple[str, list[tuple[int, bytes | None]]]:
    topic = "disk-" + uuid.uuid4().hex[:8]
    with Admin(broker.bootstrap) as admin:
        admin.create_topics([NewTopic(topic, 1, {"segment_bytes": SEGMENT_BYTES})])
    # Requests of at most 16 KiB: a produce request is appended whole, so it must not be
    # larger than a segment for the log to have several.
    with Producer(broker.bootstrap, acks="all", linger_ms=1, batch_size=2048, max_request_size=16384) as p:
        futs = [p.send(topic, b"record-%06d-" % i + b"x" * 80, partition=0) for i in range(RECORDS)]
        p.flush(timeout=60)
    assert all(f.succeeded() for f in futs)
    before = fetch_all(broker.fetch_address, topic)
    assert len(before.records) == RECORDS
    return topic, before.records


def _layout(partition_dir: pathlib.Path) -> list[tuple[pathlib.Path, int, list[tuple[int, int, int]]]]:
    """``(log path, base offset, [(position, size, next_offset)])`` of every segment."""
    from annal.record import parse_header

    out = []
    for path in segment_logs(partition_dir):
        data = path.read_bytes()
        batches = [(pos, size, parse_header(data, pos).next_offset) for pos, size in batch_positions(data)]
        out.append((path, int(path.name.split(".")[0]), batches))
    return out


# Each fault takes (partition dir, data dir, rng), damages files and returns (the offset the log
# must now end at, a regex the broker log must show).


def segment_cut_at_random_byte(pdir, data_dir, rng):
    layout = _layout(pdir)
    i = rng.randrange(len(layout))
    path, base, batches = layout[i]
    size = batches[-1][0] + batches[-1][1]
    at = rng.randrange(1, size)  # somewhere inside the file, never its exact end
    cut_file(path, at)
    end = base
    for pos, bsize, nxt in batches:
        if pos + bsize <= at:
            end = nxt
    if i < len(layout) - 1:
        # A flushed segment below the recovery point (the checkpoint or the clean shutdown says
        # so): recovery never cuts it nor drops the segments after it; the cut-off offsets are
        # a damaged range that fetches are refused for.
        next_base = layout[i + 1][1]
        print(f"cut flushed {path.name} at byte {at} of {size}: offsets [{end}, {next_base}) must be reported "
              f"damaged, every other record kept")
        return layout[-1][2][-1][2], r"loaded log .*damaged offset ranges", (end, next_base)
    print(f"cut {path.name} at byte {at} of {size}: the log must end at offset {end}")
    return end, r"loaded log .*truncated \d+ bytes"


def byte_flipped_in_last_batch(pdir, data_dir, rng):
    path, base, batches = _layout(pdir)[-1]
    pos, size, _ = batches[-1]
    at = pos + rng.randrange(21, size)  # anywhere the CRC covers (attributes to the end)
    flip_byte(path, at)
    end = batches[-2][2] if len(batches) > 1 else base
    print(f"flipped byte {at} of {path.name} (last batch at {pos}, {size} bytes): the log must end at {end}")
    # Most flips fail the CRC; one in a header field the batch check reads before the CRC
    # (attributes' codec, lastOffsetDelta, recordsCount) fails that check first.
    return end, (r"loaded log .*cut at position \d+ \(offset \d+\): (CorruptRecordError: CRC-32C mismatch"
                 r"|InvalidRecordError|UnsupportedCompressionTypeError)")


def index_file_deleted(pdir, data_dir, rng):
    layout = _layout(pdir)
    path = layout[rng.randrange(len(layout))][0]
    index = path.with_suffix(".index")
    index.unlink()
    print(f"deleted {index.name}")
    return layout[-1][2][-1][2], r"loaded log .*rebuilt [1-9]\d* indexes"


def index_filled_with_garbage(pdir, data_dir, rng):
    layout = _layout(pdir)
    path = layout[rng.randrange(len(layout))][0]
    index = path.with_suffix(".index")
    fill_with_garbage(index, rng)
    print(f"overwrote {index.name} ({index.stat().st_size} bytes) with random bytes")
    return layout[-1][2][-1][2], r"loaded log .*rebuilt [1-9]\d* indexes"


def checkpoint_corrupted(pdir, data_dir, rng):
    layout = _layout(pdir)
    cp = data_dir / "recovery-point-offset-checkpoint"
    data = bytearray(cp.read_bytes())
    data[rng.randrange(len(data))] ^= 0x5A
    cp.write_bytes(bytes(data))
    print(f"corrupted {cp.name}")
    return layout[-1][2][-1][2], r"recovery-point-offset-checkpoint"


FAULTS = [segment_cut_at_random_byte, byte_flipped_in_last_batch, index_file_deleted,
          index_filled_with_garbage, checkpoint_corrupted]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("stop", ["kill", "clean"])
@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__)
def test_recovery_keeps_the_valid_prefix_and_serves_nothing_corrupt(broker, fault, stop):
    rng, seed = seeded_rng(f"{fault.__name__}-{stop}")
    topic, before = _fill(broker)
    pdir = broker.data_dir / f"{topic}-0"
    assert len(segment_logs(pdir)) >= 3
    if stop == "kill":
        # Kill once the recovery point of the whole log is checkpointed (the maintenance loop
        # writes it every second), so that the checkpoint faults have a file to damage.
        cp = broker.data_dir / "recovery-point-offset-checkpoint"
        wait_until(lambda: cp.exists() and f"{topic} 0 {RECORDS}" in cp.read_text(), 30,
                   "the recovery point checkpoint")
        broker.kill()
    else:
        broker.stop()
    log_offset = len(broker.log_text())
    end, log_pattern, *damaged = fault(pdir, broker.data_dir, rng)
    broker.start()
    after = fetch_all(broker.fetch_address, topic, skip_damaged=True)  # every CRC and offset checked
    assert after.log_start_offset == 0
    assert after.high_watermark == end
    if damaged:
        first, stop_at = damaged[0]
        assert after.damaged == ([(first, stop_at - 1)] if first < stop_at else [])
        kept = [r for r in before if not first <= r[0] < stop_at]
    else:
        assert after.damaged == []
        kept = before[:end]
    assert after.records == kept
    assert re.search(log_pattern, broker.log_text()[log_offset:]), (
        f"broker log does not match {log_pattern!r}:\n{broker.log_text()[log_offset:][-3000:]}")
    # The log goes on from where recovery left it.
    with Producer(broker.bootstrap, acks="all", linger_ms=1) as p:
        f = p.send(topic, b"after-recovery", partition=0)
        p.flush(timeout=30)
    assert f.get(0).offset == end
    final = fetch_all(broker.fetch_address, topic, skip_damaged=True)
    assert final.records == kept + [(end, b"after-recovery")]
    broker.stop()
    scans = scan_data_dir(broker.data_dir)
    if damaged:
        assert not scans[f"{topic}-0"].ok  # the damaged bytes are kept on disk for inspection
    else:
        assert scans[f"{topic}-0"].ok, scans[f"{topic}-0"].problems
        assert scans[f"{topic}-0"].next_offset == end + 1
    print(f"[{fault.__name__}-{stop}] seed={seed} kept offsets [0, {end}) of {len(before)}")
