"""The dense offset index: one-slice batch writes, O(1) lookups, galloping search, preallocation
and trimming, reopening."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from annal.broker.storage._index import OffsetIndex

pytestmark = pytest.mark.timeout(30)


def test_append_batch_writes_one_entry_per_offset(tmp_path):
    p = str(tmp_path / "00000000000000000100.index")
    idx = OffsetIndex(p, 100, 4096, writable=True)
    assert os.path.getsize(p) == 4096 and idx.max_entries == 1024  # preallocated
    idx.append_batch(0, 3, 0)
    idx.append_batch(3, 1, 250)
    idx.append_batch(4, 5, 400)
    assert idx.entries == 9
    assert [idx.lookup(i) for i in range(9)] == [0, 0, 0, 250, 400, 400, 400, 400, 400]
    with pytest.raises(IndexError):
        idx.lookup(9)
    with pytest.raises(IndexError):
        idx.lookup(-1)
    with pytest.raises(ValueError):
        idx.append_batch(5, 1, 500)  # not dense
    with pytest.raises(ValueError):
        idx.append_batch(9, 2000, 500)  # does not fit
    with pytest.raises(ValueError):
        idx.append_batch(9, 1, 1 << 32)
    idx.trim_to_valid_size()
    idx.close()
    assert os.path.getsize(p) == 36
    with open(p, "rb") as f:
        assert f.read() == (0).to_bytes(4, "big") * 3 + (250).to_bytes(4, "big") + (400).to_bytes(4, "big") * 5
    ro = OffsetIndex(p, 100, 4096, writable=False)
    assert ro.entries == 9 and ro.lookup(3) == 250
    ro.sanity_check()
    ro.close()


def test_lookup_touches_one_entry_whatever_the_size(tmp_path):
    small = OffsetIndex(str(tmp_path / "a.index"), 0, 64, writable=True)
    big = OffsetIndex(str(tmp_path / "b.index"), 0, 4 * 2_000_000, writable=True)
    small.append_batch(0, 10, 0)
    for i in range(1000):
        big.append_batch(i * 1000, 1000, i * 5000)
    for idx, off in ((small, 9), (big, 0), (big, 999_999), (big, 123_456)):
        before = idx.entries_read
        idx.lookup(off)
        assert idx.entries_read - before == 1
    small.close()
    big.close()


def test_last_position_at_most_gallops_near_the_start(tmp_path):
    idx = OffsetIndex(str(tmp_path / "a.index"), 0, 4 * 1_000_000, writable=True)
    for i in range(100_000):  # batches of 10 offsets, 100 bytes each
        idx.append_batch(i * 10, 10, i * 100)
    before = idx.entries_read
    r, pos = idx.last_position_at_most(0, idx.entries, 350)
    assert pos == 300 and 30 <= r < 40
    assert idx.entries_read - before < 20  # log2 of the distance, not of the index
    assert idx.last_position_at_most(500_000, idx.entries, 10**9)[1] == 9_999_900
    assert idx.last_position_at_most(7, 8, 0)[0] == 7
    idx.close()


def test_reset_and_truncate(tmp_path):
    idx = OffsetIndex(str(tmp_path / "a.index"), 0, 64, writable=True)
    idx.append_batch(0, 4, 0)
    idx.truncate_to_entries(2)
    assert idx.entries == 2
    idx.append_batch(2, 1, 77)
    assert idx.lookup(2) == 77
    idx.reset()
    assert idx.entries == 0
    assert idx.is_full(17) and not idx.is_full(16)
    idx.delete()
    assert not os.path.exists(tmp_path / "a.index")


def _mapping_of(path: str) -> dict[str, str]:
    """The /proc/self/smaps fields of this process's mapping of ``path``."""
    fields: dict[str, str] = {}
    found = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:  # a mapping's first line
                if found:
                    break
                found = len(head) >= 6 and head[5] == path
            elif found:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
    assert found, f"{path} is not mapped"
    return fields


def _cached_bytes(path: str) -> int:
    """Bytes of ``path`` in the page cache (util-linux ``fincore``)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", path],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps") or shutil.which("fincore") is None,
                    reason="needs Linux /proc/<pid>/smaps and util-linux fincore")
def test_index_maps_fault_in_one_page_not_a_read_around_window(tmp_path):
    """The first store into a new segment's index brings one page into memory. Without
    ``MADV_RANDOM`` the kernel reads around the faulting page: 8 MiB of page cache for a
    16 MiB sparse index, allocated and zeroed while the appending thread holds the GIL
    (milliseconds at every segment roll)."""
    p = str(tmp_path / "00000000000000000000.index")
    idx = OffsetIndex(p, 0, 16 << 20, writable=True)
    try:
        idx.append_batch(0, 1000, 0)  # 4,000 bytes: one page
        assert "rr" in _mapping_of(p)["VmFlags"].split()  # MADV_RANDOM
        assert _cached_bytes(p) <= 64 << 10
    finally:
        idx.trim_to_valid_size()
        idx.close()
    # An inactive segment's index has no holes and is read in order by a consumer of old
    # data: its read-only map keeps the kernel's read-around.
    ro = OffsetIndex(p, 0, 16 << 20, writable=False)
    try:
        assert "rr" not in _mapping_of(p)["VmFlags"].split()
    finally:
        ro.close()
