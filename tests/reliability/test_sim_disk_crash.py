"""Seeded power-loss crashes of a partition log on a simulated disk (tests/harness/sim_disk.py).

Each crash: a log on a ``SimDisk`` gets a random run of appends (some acknowledged as acks=all
does it: ``flush()`` returned, so fsynced), rolls and flushes; at a seeded point the process
"loses power" (the log is abandoned and the disk keeps only what a power loss could leave:
fsynced bytes, plus a random, possibly reordered subset of the unsynced writes, the last one
torn at a 512-byte boundary; index pages written back at random). The log is then opened
again, with the recovery point of the last completed flush (as a checkpoint written after it
would say) or none, and checked:

1. every acknowledged record is there, with its bytes;
2. the log is a valid prefix of what was written: batches back to back, each valid (CRC
   included), each the batch written at that offset;
3. the indexes agree with the log: a read at every offset returns the batch holding it;
4. recovery is bounded: it scans only from the segment holding the recovery point (no
   trusted segment is scanned, cut or deleted).

Then the same log takes more appends and crashes again (several crashes per seed). A failure
names its seed; replay it with ``ANNAL_SIM_SEED=<seed> pytest tests/reliability/test_sim_disk_crash.py
-k replay``. The default suite runs a short run; ``-m slow`` runs the long one whose figures
docs/reliability.md quotes (``ANNAL_SIM_CRASHES`` overrides the count).
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field

import pytest
from harness.sim_disk import SimDisk

from annal.broker.storage import PartitionLog
from annal.record import encode_batch, iter_records, validate_batch

CFG = dict(segment_bytes=1500, segment_index_bytes=256, retention_ms=-1)


@dataclass
class Totals:
    crashes: int = 0
    acked_records: int = 0
    acked_lost: int = 0
    invalid_logs: int = 0
    records_written: int = 0
    unacked_survived: int = 0
    torn_writes: int = 0
    reordered: int = 0
    segments_scanned: int = 0
    failures: list[str] = field(default_factory=list)


def _batch(rng: random.Random, base_tag: int) -> tuple[bytes, list[bytes]]:
    n = rng.randint(1, 6)
    values = [b"%d-%d-" % (base_tag, i) + bytes([65 + rng.randrange(26)]) * rng.randint(0, 300) for i in range(n)]
    return encode_batch([(1_000 + i, None, v, None) for i, v in enumerate(values)]), values


def _check(lg: PartitionLog, written: dict[int, bytes], acked_end: int, rp: int | None,
           seg_bases_before: list[int]) -> list[str]:
    """The checks of the module docstring; returns what failed."""
    try:
        return _checks(lg, written, acked_end, rp, seg_bases_before)
    except Exception as e:  # noqa: BLE001 - a read that fails is a finding too
        return [f"reading the recovered log failed: {e!r}"]


def _checks(lg: PartitionLog, written: dict[int, bytes], acked_end: int, rp: int | None,
            seg_bases_before: list[int]) -> list[str]:
    problems: list[str] = []
    leo = lg.log_end_offset
    if leo < acked_end:
        problems.append(f"acknowledged records lost: log ends at {leo}, {acked_end} were acknowledged")
    # 2. valid prefix, record by record against what was written
    if leo > lg.log_start_offset:
        with lg.read(lg.log_start_offset, 1 << 30) as r:
            data = r.tobytes()
        pos, expect = 0, lg.log_start_offset
        while pos < len(data):
            try:
                hd = validate_batch(data, pos)
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                problems.append(f"invalid batch at offset {expect}: {e!r}")
                break
            if hd.base_offset != expect:
                problems.append(f"batch at {hd.base_offset} where {expect} was expected")
                break
            expect = hd.next_offset
            pos += hd.batch_length + 12
        if expect != leo:
            problems.append(f"batches end at {expect}, log end offset is {leo}")
        for rec in iter_records(data):
            if written.get(rec.offset) != rec.value:
                problems.append(f"offset {rec.offset}: {rec.value[:20]!r} is not what was written there")
                break
    # 3. indexes agree with the log: every offset of the segments recovery may have rebuilt
    #    (from the one before the recovery point's on), and a sample of the others
    tail_from = seg_bases_before[-3] if len(seg_bases_before) >= 3 else 0
    sample = list(range(max(lg.log_start_offset, tail_from), leo))
    sample += random.Random(leo).sample(range(lg.log_start_offset, leo), min(20, leo - lg.log_start_offset))
    for off in sample:
        with lg.read(off, 1) as r:
            recs = list(iter_records(r.tobytes()))
        if not recs or not recs[0].offset <= off <= recs[-1].offset:
            problems.append(f"a read at offset {off} returned offsets {[x.offset for x in recs]}")
            break
    # 4. bounded recovery: nothing below the recovery point's segment scanned or removed
    rep = lg.report
    if rp is not None:
        trusted = [b for b in seg_bases_before if b <= rp]
        # The segment holding the recovery point and every later one; plus the one before it
        # when it rolled after the last flush (that flush synced it as the active segment:
        # its .log, not its index).
        start = max(len(trusted) - 2, 0)
        may_scan = len(seg_bases_before) - start
        if rep.segments_scanned > may_scan:
            problems.append(f"recovery scanned {rep.segments_scanned} segments, only {may_scan} are past the "
                            f"recovery point {rp}")
        if rep.damaged:
            problems.append(f"trusted segments reported damaged: {rep.damaged}")
    return problems


def run_seed(seed: int, workdir: str, crashes: int, totals: Totals) -> None:
    rng = random.Random(seed)
    path = os.path.join(workdir, f"seed-{seed}")
    shutil.rmtree(path, ignore_errors=True)
    disk = SimDisk(keep_p=rng.choice((0.2, 0.5, 0.8)), reorder_p=0.3)
    written: dict[int, bytes] = {}
    acked_end = 0
    rp: int | None = None
    lg = PartitionLog.open(path, file_io=disk, **CFG)
    for _ in range(crashes):
        for _op in range(rng.randint(1, 40)):
            r = rng.random()
            if r < 0.7:
                data, values = _batch(rng, lg.log_end_offset)
                base = lg.append(data)
                for i, v in enumerate(values):
                    written[base + i] = v
                totals.records_written += len(values)
                if rng.random() < 0.3:  # acks=all: acknowledged once the flush returns
                    lg.flush()
                    acked_end, rp = lg.log_end_offset, lg.recovery_point
            elif r < 0.85:
                lg.flush()
                acked_end, rp = lg.log_end_offset, lg.recovery_point
            else:
                lg.roll()
        # Power loss.
        bases = [s.base_offset for s in lg.segments]
        lg.abandon()
        stats = disk.crash(rng)
        totals.crashes += 1
        totals.torn_writes += stats.torn
        totals.reordered += stats.reordered
        use_rp = rp if rng.random() < 0.8 else None  # sometimes no checkpoint at all
        lg = PartitionLog.open(path, file_io=disk, recovery_point=use_rp, **CFG)
        totals.segments_scanned += lg.report.segments_scanned
        problems = _check(lg, written, acked_end, use_rp, bases)
        totals.acked_records += acked_end
        if lg.log_end_offset < acked_end:
            totals.acked_lost += acked_end - lg.log_end_offset
        if problems:
            totals.invalid_logs += 1
            totals.failures.append(f"seed {seed}, crash {totals.crashes}: {'; '.join(problems)}")
            break
        totals.unacked_survived += lg.log_end_offset - acked_end
        # What survived is what the log now holds; later offsets will be written anew.
        for off in [o for o in written if o >= lg.log_end_offset]:
            del written[off]
        rp = lg.recovery_point  # what open() made durable (it flushes what recovery kept)
    lg.close()
    shutil.rmtree(path, ignore_errors=True)


def run_seed_reported(seed: int, workdir: str, crashes: int, totals: Totals) -> None:
    """``run_seed``, with an exception (an append or a read the recovered log refused) counted
    as an invalid log of that seed."""
    try:
        run_seed(seed, workdir, crashes, totals)
    except Exception as e:  # noqa: BLE001
        totals.invalid_logs += 1
        totals.failures.append(f"seed {seed}, after crash {totals.crashes}: {e!r}")


def run(first_seed: int, seeds: int, crashes_per_seed: int, workdir: str) -> Totals:
    totals = Totals()
    # Memory-backed when there is one: the folder fsyncs the log does itself (new segments)
    # cost nothing there, and the simulated disk decides durability anyway.
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else workdir
    with tempfile.TemporaryDirectory(dir=base, prefix="annal-simdisk-") as d:
        for seed in range(first_seed, first_seed + seeds):
            run_seed_reported(seed, d, crashes_per_seed, totals)
    return totals


def _report(t: Totals) -> str:
    return (f"{t.crashes} crashes simulated, {t.records_written} records written, acknowledged records lost = "
            f"{t.acked_lost}, invalid logs = {t.invalid_logs}, torn writes = {t.torn_writes}, reordered "
            f"write sets = {t.reordered}, segments scanned by recovery = {t.segments_scanned}")


def _assert_ok(t: Totals) -> None:
    print(_report(t))
    replay = "; replay one with ANNAL_SIM_SEED=<seed> pytest tests/reliability/test_sim_disk_crash.py -k replay"
    assert not t.failures, "\n".join(t.failures[:10]) + replay
    assert t.acked_lost == 0 and t.invalid_logs == 0


@pytest.mark.timeout(300)
def test_sim_disk_crashes_short_run(tmp_path):
    """The default suite: 30 seeds x 10 crashes."""
    _assert_ok(run(1, 30, 10, str(tmp_path)))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_sim_disk_crashes_long_run(tmp_path):
    """docs/reliability.md: thousands of crashes (ANNAL_SIM_CRASHES, default 5,000)."""
    crashes = int(os.environ.get("ANNAL_SIM_CRASHES", "5000"))
    _assert_ok(run(1000, crashes // 10, 10, str(tmp_path)))


@pytest.mark.timeout(300)
def test_replay(tmp_path):
    """Replays one seed: ANNAL_SIM_SEED=<seed> (skipped without it)."""
    seed = os.environ.get("ANNAL_SIM_SEED")
    if seed is None:
        pytest.skip("set ANNAL_SIM_SEED to replay a seed")
    _assert_ok(run(int(seed), 1, int(os.environ.get("ANNAL_SIM_CRASHES_PER_SEED", "10")), str(tmp_path)))
