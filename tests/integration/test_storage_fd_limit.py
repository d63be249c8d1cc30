"""One broker's LogManager holds 10,000 segments under a 1,024-descriptor limit: active segments
stay open, older ones go through the shared LRU handle cache (run in a child process whose
RLIMIT_NOFILE is lowered, so the limit is real)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import json, os, resource, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    from annal.broker.storage import LogManager
    from annal.record import encode_batch, iter_records

    data_dir, partitions, per_partition = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cfg = dict(segment_bytes=1024, segment_index_bytes=64, retention_ms=-1)
    def open_fds():
        return len(os.listdir("/proc/self/fd"))

    lm = LogManager(data_dir, cfg, max_open_fds=512)
    peak = 0
    for p in range(partitions):
        lg = lm.get_or_create("fd-test", p)
        for i in range(per_partition):
            lg.append(encode_batch([(i, None, b"%d:%d:" % (p, i) + b"x" * 700, None)]))
            lg.roll()
        peak = max(peak, open_fds())
    segments = sum(len(lg.segments) for lg in lm.all_logs().values())
    lm.close_all()

    lm = LogManager(data_dir, cfg, max_open_fds=512)  # clean restart: loads every segment
    peak = max(peak, open_fds())
    checked = 0
    for (topic, p), lg in sorted(lm.all_logs().items()):
        for seg in lg.segments:
            if seg.size == 0:
                continue
            with lg.read(seg.base_offset, 1) as r:
                rec = next(iter_records(r.tobytes()))
            assert rec.value.startswith(b"%d:%d:" % (p, seg.base_offset)), (p, seg.base_offset)
            checked += 1
            peak = max(peak, open_fds())
    print(json.dumps({"segments": segments, "checked": checked, "peak_fds": peak,
                      "cache_fds": lm.handle_cache.fd_count, "evicted": lm.handle_cache.evicted}))
    lm.close_all()
    """
)


@pytest.mark.timeout(240)
def test_ten_thousand_segments_under_1024_descriptors(tmp_path):
    partitions, per_partition = 20, 500
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "data"), str(partitions), str(per_partition)],
        capture_output=True, text=True, timeout=220,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["segments"] >= 10_000
    assert result["checked"] == partitions * per_partition
    assert result["peak_fds"] < 1024
    assert result["cache_fds"] <= 512
    assert result["evicted"] > 0
