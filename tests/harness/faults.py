"""Fault injection and after-the-fact checking for the reliability suite (tests/reliability/).

Faults are real: a broker process is killed with SIGKILL (``BrokerProcess.kill``), files of a
stopped broker's data directory are cut, flipped or overwritten here, a small tmpfs or ext4 image
is mounted to run out of space, and the ZooKeeper server is stopped by ``harness.zookeeper``. Randomness
comes from one seeded ``random.Random`` per test (``seeded_rng``): the seed is printed, and
``ANNAL_FAULT_SEED=<seed>`` replays a run.

What survived is checked from the outside, without trusting the broker's own bookkeeping:

* ``fetch_all`` reads a partition over the data port from its log start to its end, checks the
  CRC-32C and the offsets of every batch (``validate_batch``), and returns the records;
* ``scan_partition_dir`` / ``scan_data_dir`` read a stopped broker's segment files read-only and
  check that every segment is a chain of valid batches (offsets following on from the file name
  and across segments, only zeros after the last batch of a preallocated file);
* ``ProcessSampler`` samples a process's resident memory (``VmRSS`` in ``/proc/<pid>/status``)
  and open descriptors (``/proc/<pid>/fd``) from a background thread.

Nothing here is thread-safe unless its docstring says so.
"""

from __future__ import annotations

import os
import pathlib
import random
import subprocess
import threading
import time
from dataclasses import dataclass, field
import pytest

from annal.errors import AnnalError
from annal.broker.storage import offset_from_file_name, parse_partition_dir_name
from annal.record import LOG_OVERHEAD, iter_records, validate_batch, validate_records
from harness.data_port import DataPortClient

__all__ = [
    "seeded_rng",
    "ProcessSampler",
    "ResourceSummary",
    "PartitionScan",
    "scan_partition_dir",
    "scan_data_dir",
    "segment_logs",
    "batch_positions",
    "cut_file",
    "flip_byte",
    "fill_with_garbage",
    "fetch_all",
    "FetchedLog",
    "SizeLimitedMount",
    "fill_filesystem",
]


# ---------------------------------------------------------------------------------- randomness


def seeded_rng(name: str) -> tuple[random.Random, int]:
    """A ``random.Random`` for one test and its seed: ``ANNAL_FAULT_SEED`` if set, else a fresh
    one. The seed is printed (pytest shows it for a failed test; ``-s`` shows it always)."""
    env = os.environ.get("ANNAL_FAULT_SEED")
    seed = int(env) if env else random.SystemRandom().randrange(1 << 32)
    print(f"[{name}] seed={seed} (replay with ANNAL_FAULT_SEED={seed})")
    return random.Random(seed), seed


# ---------------------------------------------------------------------------------- process sampling


@dataclass(frozen=True, slots=True)
class ResourceSummary:
    """Min / max / last of the samples of one process (RSS in KiB, open descriptors)."""

    samples: int
    rss_kib_min: int
    rss_kib_max: int
    rss_kib_final: int
    fds_min: int
    fds_max: int
    fds_final: int

    def line(self) -> str:
        return (f"{self.samples} samples: RSS min {self.rss_kib_min / 1024:.1f} MiB, max "
                f"{self.rss_kib_max / 1024:.1f} MiB, final {self.rss_kib_final / 1024:.1f} MiB; "
                f"fds min {self.fds_min}, max {self.fds_max}, final {self.fds_final}")


def read_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def count_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class ProcessSampler:
    """Samples ``/proc/<pid>/status`` VmRSS and ``/proc/<pid>/fd`` every ``interval_s`` from a
    daemon thread until ``stop()``. ``samples`` is a list of ``(monotonic_s, rss_kib, fds)``.
    ``start``/``stop``/``summary`` are called from one thread; the sampling thread only appends."""

    def __init__(self, pid: int, interval_s: float = 0.25) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sampler-{pid}", daemon=True)

    def sample(self) -> None:
        self.samples.append((time.monotonic(), read_rss_kib(self.pid), count_fds(self.pid)))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except (OSError, RuntimeError):
                return  # the process is gone
            self._stop.wait(self.interval_s)

    def start(self) -> ProcessSampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> ResourceSummary:
        self._stop.set()
        self._thread.join()
        try:
            self.sample()
        except (OSError, RuntimeError):
            pass
        return self.summary()

    def summary(self) -> ResourceSummary:
        assert self.samples, "no samples"
        rss = [s[1] for s in self.samples]
        fds = [s[2] for s in self.samples]
        return ResourceSummary(len(self.samples), min(rss), max(rss), rss[-1], min(fds), max(fds), fds[-1])

    def window(self, since_s: float) -> ResourceSummary:
        """The summary of the samples taken at or after ``since_s`` (a monotonic time)."""
        part = [s for s in self.samples if s[0] >= since_s]
        assert part, "no samples in the window"
        rss = [s[1] for s in part]
        fds = [s[2] for s in part]
        return ResourceSummary(len(part), min(rss), max(rss), rss[-1], min(fds), max(fds), fds[-1])


# ---------------------------------------------------------------------------------- segment files


def segment_logs(partition_dir: pathlib.Path) -> list[pathlib.Path]:
    """The ``.log`` files of a partition folder in offset order."""
    return sorted(p for p in partition_dir.iterdir() if p.name.endswith(".log"))


def batch_positions(data: bytes) -> list[tuple[int, int]]:
    """``(position, size)`` of each batch that validates, from the start of ``data`` (a segment
    file), stopping at the first one that does not."""
    out = []
    pos = 0
    while pos < len(data):
        try:
            h = validate_batch(data, pos)
        except AnnalError:
            break
        out.append((pos, h.batch_length + LOG_OVERHEAD))
        pos += h.batch_length + LOG_OVERHEAD
    return out


@dataclass(slots=True)
class PartitionScan:
    """What ``scan_partition_dir`` found in one partition folder."""

    path: pathlib.Path
    segments: int = 0
    batches: int = 0
    first_offset: int | None = None
    next_offset: int | None = None
    problems: list[str] = field(default_factory=list)
    # Batches that pass validate_batch (CRC included) but not validate_records (the records
    # inside do not parse): counted only by scan_partition_dir(..., records=True).
    record_invalid_batches: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def scan_partition_dir(partition_dir: pathlib.Path, records: bool = False) -> PartitionScan:
    """Check, read-only, that every segment of a partition folder is whole: batches back to back
    from position 0, each passing ``validate_batch`` (lengths, magic, counts, CRC-32C), each
    baseOffset following the previous batch (the first one equal to the file name's offset, each
    segment following the previous segment), and nothing but zeros after the last batch (the
    preallocated tail of a segment a crash left untrimmed). With ``records`` each batch is also
    walked record by record (``validate_records``) and failures are counted in
    ``record_invalid_batches`` (the broker walks records on append, so callers assert it is 0)."""
    scan = PartitionScan(partition_dir)
    expected: int | None = None
    for log_path in segment_logs(partition_dir):
        scan.segments += 1
        base = offset_from_file_name(log_path.name)
        if expected is not None and base != expected:
            scan.problems.append(f"{log_path.name}: base offset {base}, previous segment ended at {expected}")
        if scan.first_offset is None:
            scan.first_offset = base
        expected = base
        data = log_path.read_bytes()
        pos = 0
        while pos < len(data):
            if not any(data[pos:pos + LOG_OVERHEAD]):
                if data[pos:].count(0) != len(data) - pos:
                    scan.problems.append(f"{log_path.name}: non-zero bytes after the last batch at {pos}")
                break
            try:
                h = validate_batch(data, pos)
            except AnnalError as e:
                scan.problems.append(f"{log_path.name}: invalid batch at position {pos}: {e}")
                break
            if h.base_offset != expected:
                scan.problems.append(f"{log_path.name}: batch at {pos} has baseOffset {h.base_offset}, expected {expected}")
                break
            if records:
                try:
                    validate_records(data, pos)
                except AnnalError:
                    scan.record_invalid_batches += 1
            expected = h.next_offset
            scan.batches += 1
            pos += h.batch_length + LOG_OVERHEAD
    scan.next_offset = expected
    return scan


def scan_data_dir(data_dir: pathlib.Path, records: bool = False) -> dict[str, PartitionScan]:
    """``scan_partition_dir`` of every partition folder (``<topic>-<n>``) of a data directory."""
    out = {}
    for p in sorted(data_dir.iterdir()):
        if not p.is_dir():
            continue
        try:
            parse_partition_dir_name(p.name)
        except ValueError:
            continue
        out[p.name] = scan_partition_dir(p, records)
    return out


# ---------------------------------------------------------------------------------- file damage


def cut_file(path: pathlib.Path, size: int) -> int:
    """Truncate ``path`` to ``size`` bytes (a torn write); returns the bytes cut off."""
    before = path.stat().st_size
    os.truncate(path, size)
    return before - size


def flip_byte(path: pathlib.Path, position: int) -> None:
    """Invert every bit of the byte at ``position`` (a media error the CRC must catch)."""
    with open(path, "r+b") as f:
        f.seek(position)
        b = f.read(1)
        assert len(b) == 1, f"{path} has no byte at {position}"
        f.seek(position)
        f.write(bytes([b[0] ^ 0xFF]))


def fill_with_garbage(path: pathlib.Path, rng: random.Random, size: int | None = None) -> None:
    """Overwrite ``path`` with random bytes (same size unless ``size`` is given)."""
    n = path.stat().st_size if size is None else size
    path.write_bytes(rng.randbytes(n))


# ---------------------------------------------------------------------------------- reading back


@dataclass(slots=True)
class FetchedLog:
    """A whole partition as read over the data port: every record's ``(offset, value)`` in log
    order, the batches seen, and the partition's offsets at the time of the last fetch."""

    records: list[tuple[int, bytes | None]]
    batches: int
    log_start_offset: int
    high_watermark: int
    damaged: list[tuple[int, int]] = field(default_factory=list)  # [first, last] answered CORRUPT_MESSAGE

    @property
    def values(self) -> list[bytes | None]:
        return [v for _, v in self.records]


def fetch_all(address: tuple[str, int], topic: str, partition: int = 0, *,
              max_bytes: int = 1 << 20, timeout_s: float = 60.0, decode: bool = True,
              skip_damaged: bool = False) -> FetchedLog:
    """Fetch ``topic``/``partition`` from its log start offset to its high watermark over the
    data port and check what came back: each batch passes ``validate_batch`` (CRC-32C included),
    batches follow each other without gap or overlap, and the records' offsets are contiguous.
    Raises AssertionError on anything corrupt or out of order. ``decode=False`` checks batches
    only and returns no records (for logs that may hold batches whose records do not parse).
    ``skip_damaged=True``: a CORRUPT_MESSAGE answer for a damaged range of flushed data (the
    broker says "seek past N") is recorded in ``damaged`` and reading goes on after it."""
    host, port = address
    deadline = time.monotonic() + timeout_s
    records: list[tuple[int, bytes | None]] = []
    damaged: list[tuple[int, int]] = []
    batches = 0
    with DataPortClient(host, port, timeout=timeout_s) as c:
        first = c.fetch([(topic, partition, 0, 1)])
        part = first.partitions[0]
        # Offset 0 may be below the log start (OFFSET_OUT_OF_RANGE): the answer says where it is.
        assert part.error_code in (0, 1), f"fetch error {part.error_code}: {part.error_message}"
        start = part.log_start_offset
        hw = part.high_watermark
        offset = start
        while offset < hw:
            assert time.monotonic() < deadline, f"fetch_all did not finish in {timeout_s} s"
            resp = c.fetch([(topic, partition, offset, max_bytes)])
            p = resp.partitions[0]
            if skip_damaged and p.error_code == 2 and "seek past" in p.error_message:
                last = int(p.error_message.rsplit("seek past ", 1)[1].split()[0])
                damaged.append((offset, last))
                offset = last + 1
                continue
            assert p.error_code == 0, f"fetch at {offset}: error {p.error_code} {p.error_message}"
            data = bytes(p.records)
            assert data, f"empty fetch at offset {offset} below high watermark {hw}"
            pos = 0
            while pos < len(data):
                h = validate_batch(data, pos)  # raises on a bad CRC or a torn batch
                assert h.base_offset <= offset < h.next_offset, (
                    f"batch [{h.base_offset}, {h.next_offset}) where offset {offset} was expected")
                batches += 1
                if not decode:
                    offset = h.next_offset
                for r in iter_records(data[pos:pos + h.batch_length + LOG_OVERHEAD], offset) if decode else ():
                    assert r.offset == offset, f"record offset {r.offset}, expected {offset}"
                    records.append((r.offset, r.value))
                    offset += 1
                assert offset == h.next_offset, f"batch ended at {offset}, its header says {h.next_offset}"
                pos += h.batch_length + LOG_OVERHEAD
            hw = max(hw, p.high_watermark)
    return FetchedLog(records, batches, start, hw, damaged)


# ---------------------------------------------------------------------------------- full disks


class SizeLimitedMount:
    """A small filesystem mounted on ``path`` for the test (unmounted at exit): ``"tmpfs"``
    (``mount -t tmpfs -o size=``) or ``"ext4"`` (an image file next to ``path``, made with
    ``mkfs.ext4 -m 0`` and loop-mounted).

    Needs the right to mount (root or CAP_SYS_ADMIN, and loop devices for ext4); ``mount()``
    skips the test with the reason when it cannot. Both count only allocated blocks, so sparse
    preallocated segment and index files cost nothing until written."""

    def __init__(self, path: pathlib.Path, size_bytes: int, fstype: str = "tmpfs") -> None:
        if fstype not in ("tmpfs", "ext4"):
            raise ValueError(f"fstype must be tmpfs or ext4, not {fstype!r}")
        self.path = path
        self.size_bytes = size_bytes
        self.fstype = fstype
        self.mounted = False

    def _run(self, *args: str) -> None:
        try:
            r = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            pytest.skip(f"cannot make a size-limited {self.fstype} here ({args[0]}: {e}); "
                        "the disk-full tests need mount rights")
        if r.returncode != 0:
            pytest.skip(f"cannot make a size-limited {self.fstype} here ({args[0]}: "
                        f"{r.stderr.strip() or r.returncode}); the disk-full tests need root or CAP_SYS_ADMIN")

    def mount(self) -> SizeLimitedMount:
        self.path.mkdir(parents=True, exist_ok=True)
        if self.fstype == "tmpfs":
            self._run("mount", "-t", "tmpfs", "-o", f"size={self.size_bytes}", "tmpfs", str(self.path))
        else:
            image = self.path.with_name(self.path.name + ".img")
            with open(image, "wb") as f:
                f.truncate(self.size_bytes)
            self._run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
            self._run("mount", "-o", "loop", str(image), str(self.path))
        self.mounted = True
        return self

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.path)], capture_output=True, timeout=60)
            self.mounted = False

    def __enter__(self) -> SizeLimitedMount:
        return self.mount()

    def __exit__(self, *exc: object) -> None:
        self.unmount()


def fill_filesystem(path: pathlib.Path, leave_bytes: int = 0, chunk: int = 1 << 16) -> int:
    """Write a filler file at ``path`` until the filesystem holding it has at most
    ``leave_bytes`` free (or is full); returns the filler's size. Unbuffered writes, so the
    ENOSPC that ends the loop is not raised again at close."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    written = 0
    try:
        while True:
            st = os.statvfs(path.parent)
            free = st.f_bavail * st.f_frsize
            if free <= leave_bytes:
                break
            n = min(chunk, max(free - leave_bytes, 4096))
            try:
                written += os.write(fd, b"\xa5" * n)
            except OSError:
                break
    finally:
        os.close(fd)
    return written
