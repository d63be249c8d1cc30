"""``annal-bench ceiling``: what this machine can do at best, measured in the same run.

Every throughput figure Annal reports means little without the machine's own limits next to
it. This tool measures, with nothing but the standard library:

- ``write_buffered_gb_s``: sequential 1 MiB ``os.write`` calls into a new file in the data
  directory, no sync (the page cache's speed: what an ``acks=1`` append pays).
- ``write_fdatasync_gb_s``: the same, with one ``fdatasync`` at the end included in the time
  (what the device sustains for large sequential writes).
- ``fdatasync_us``: median time of one ``fdatasync`` after a 4 KiB append (what an
  ``acks=all`` produce pays at least once per request).
- ``sendfile_gb_s``: ``os.sendfile`` of a file in the data directory over a loopback TCP
  connection to a receiver process doing ``recv_into`` into a 4 MiB buffer (the ceiling of the
  fetch port).
- ``socket_send_gb_s``: ``socket.sendall`` of a 1 MiB buffer over loopback (the ceiling of any
  copy through user space).
- ``python_records_per_s``: the pure-Python floor of building 100-byte length-prefixed records
  (``struct.pack`` of the length plus ``b"".join``), i.e. the most records/s any Python client
  could frame before doing anything else.

GB is 10^9 bytes. Each figure is measured ``--runs`` times (default 3) and the median is
reported; the JSON holds every run. Temporary files go in ``--data-dir`` (default: the system
temporary directory) and are removed.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from annal.bench._report import build_summary, write_json

__all__ = [
    "build_parser",
    "main",
    "measure_write",
    "measure_fdatasync_us",
    "measure_sendfile",
    "measure_socket_send",
    "measure_record_build",
]

MIB = 1024 * 1024
GB = 1e9


def measure_write(data_dir: str, total_bytes: int, *, sync: bool, chunk_bytes: int = MIB) -> float:
    """GB/s of sequential ``os.write`` of ``total_bytes`` (with a final fdatasync when ``sync``)."""
    buf = os.urandom(chunk_bytes)
    fd, path = tempfile.mkstemp(prefix="ceiling-write-", dir=data_dir)
    try:
        written = 0
        t0 = time.perf_counter()
        while written < total_bytes:
            written += os.write(fd, buf)
        if sync:
            os.fdatasync(fd)
        elapsed = time.perf_counter() - t0
    finally:
        os.close(fd)
        os.unlink(path)
    return written / elapsed / GB


def measure_fdatasync_us(data_dir: str, iterations: int = 200, append_bytes: int = 4096) -> float:
    """Median microseconds of one fdatasync after appending ``append_bytes``."""
    buf = os.urandom(append_bytes)
    fd, path = tempfile.mkstemp(prefix="ceiling-sync-", dir=data_dir)
    samples: list[float] = []
    try:
        for _ in range(iterations):
            os.write(fd, buf)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            samples.append((time.perf_counter() - t0) * 1e6)
    finally:
        os.close(fd)
        os.unlink(path)
    return statistics.median(samples)


def _drain_receiver(port: int, total_bytes: int, pipe: Any) -> None:
    """Child process: connect, say ready, receive ``total_bytes`` with ``recv_into``, report."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    view = memoryview(bytearray(4 * MIB))
    pipe.send("ready")
    n = 0
    while n < total_bytes:
        got = sock.recv_into(view)
        if not got:
            break
        n += got
    pipe.send(n)
    sock.close()


def _timed_transfer(total_bytes: int, send: Callable[[socket.socket], None]) -> float:
    """GB/s of ``send`` pushing ``total_bytes`` to a receiver *process* that drains them.

    The receiver is a separate process (not a thread) so that sender and receiver do not take
    turns on one GIL: on a 2-core machine a thread receiver measured half the rate.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    parent_end, child_end = ctx.Pipe()
    proc = ctx.Process(target=_drain_receiver, args=(listener.getsockname()[1], total_bytes, child_end), daemon=True)
    proc.start()
    try:
        sender, _ = listener.accept()
        sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not parent_end.poll(60) or parent_end.recv() != "ready":
            raise RuntimeError("loopback receiver did not start")
        t0 = time.perf_counter()
        send(sender)
        if not parent_end.poll(120):
            raise RuntimeError("loopback receiver did not finish")
        received = int(parent_end.recv())
        elapsed = time.perf_counter() - t0
        sender.close()
    finally:
        listener.close()
        proc.join(timeout=10)
        if proc.exitcode is None:
            proc.kill()
    if received < total_bytes:
        raise RuntimeError(f"loopback receiver got {received} of {total_bytes} bytes")
    return received / elapsed / GB


def measure_sendfile(data_dir: str, file_bytes: int, total_bytes: int) -> float:
    """GB/s of ``os.sendfile`` from a ``file_bytes`` file, re-sent until ``total_bytes``."""
    fd, path = tempfile.mkstemp(prefix="ceiling-sendfile-", dir=data_dir)
    try:
        chunk = os.urandom(MIB)
        size = 0
        while size < file_bytes:
            size += os.write(fd, chunk)

        def send(sock: socket.socket) -> None:
            out = sock.fileno()
            sent = 0
            while sent < total_bytes:
                offset = 0
                while offset < size and sent < total_bytes:
                    n = os.sendfile(out, fd, offset, min(size - offset, total_bytes - sent))
                    if n == 0:
                        raise RuntimeError("sendfile returned 0")
                    offset += n
                    sent += n

        return _timed_transfer(total_bytes, send)
    finally:
        os.close(fd)
        os.unlink(path)


def measure_socket_send(total_bytes: int, chunk_bytes: int = MIB) -> float:
    """GB/s of ``sendall`` of one ``chunk_bytes`` buffer over loopback until ``total_bytes``."""
    view = memoryview(os.urandom(chunk_bytes))

    def send(sock: socket.socket) -> None:
        sent = 0
        while sent < total_bytes:
            n = min(chunk_bytes, total_bytes - sent)
            sock.sendall(view[:n])
            sent += n

    return _timed_transfer(total_bytes, send)


def measure_record_build(records: int, record_bytes: int = 100, batch_records: int = 1000) -> float:
    """Records/s of framing ``record_bytes`` values as int32-length-prefixed bytes in batches."""
    pack = struct.Struct(">i").pack
    values = [os.urandom(record_bytes) for _ in range(batch_records)]
    done = 0
    total_len = 0
    t0 = time.perf_counter()
    while done < records:
        parts: list[bytes] = []
        append = parts.append
        for v in values:
            append(pack(len(v)))
            append(v)
        total_len += len(b"".join(parts))
        done += batch_records
    elapsed = time.perf_counter() - t0
    if total_len != done * (record_bytes + 4):
        raise AssertionError("record framing produced the wrong length")
    return done / elapsed


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="annal-bench ceiling", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="directory for the write and sendfile files (default: system temp dir)")
    p.add_argument("--write-mb", type=int, default=512, help="MiB written per write measurement (default 512)")
    p.add_argument("--fsync-iterations", type=int, default=200, help="fdatasync calls timed (default 200)")
    p.add_argument("--sendfile-file-mb", type=int, default=256, help="size of the file sent with sendfile (default 256)")
    p.add_argument("--transfer-mb", type=int, default=2048, help="MiB sent per loopback measurement (default 2048)")
    p.add_argument("--records", type=int, default=2_000_000, help="records built for the Python floor (default 2e6)")
    p.add_argument("--runs", type=int, default=3, help="runs of each measurement; the median is reported (default 3)")
    p.add_argument("--json", dest="json_path", default=None, metavar="FILE", help="write the summary as JSON")
    p.add_argument("--plot", dest="plot_path", default=None, metavar="FILE.png", help="draw the figures as a bar chart")
    return p


# (key, label, unit, format)
FIGURES: tuple[tuple[str, str, str, str], ...] = (
    ("write_buffered_gb_s", "sequential write, buffered", "GB/s", "{:.2f}"),
    ("write_fdatasync_gb_s", "sequential write + fdatasync", "GB/s", "{:.2f}"),
    ("fdatasync_us", "one fdatasync after a 4 KiB append", "us", "{:.0f}"),
    ("sendfile_gb_s", "os.sendfile over loopback", "GB/s", "{:.2f}"),
    ("socket_send_gb_s", "socket send over loopback", "GB/s", "{:.2f}"),
    ("python_records_per_s", "Python floor, 100-byte length-prefixed records", "records/s", "{:,.0f}"),
)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every figure ``args.runs`` times; returns {key: {"median": x, "runs": [...]}}."""
    data_dir = args.data_dir or tempfile.gettempdir()
    os.makedirs(data_dir, exist_ok=True)
    write_bytes = args.write_mb * MIB
    transfer_bytes = args.transfer_mb * MIB
    measures: dict[str, Callable[[], float]] = {
        "write_buffered_gb_s": lambda: measure_write(data_dir, write_bytes, sync=False),
        "write_fdatasync_gb_s": lambda: measure_write(data_dir, write_bytes, sync=True),
        "fdatasync_us": lambda: measure_fdatasync_us(data_dir, args.fsync_iterations),
        "sendfile_gb_s": lambda: measure_sendfile(data_dir, args.sendfile_file_mb * MIB, transfer_bytes),
        "socket_send_gb_s": lambda: measure_socket_send(transfer_bytes),
        "python_records_per_s": lambda: measure_record_build(args.records),
    }
    runs: dict[str, list[float]] = {k: [] for k in measures}
    # Interleave the runs (all figures once, then again) so a noisy moment on a shared machine
    # hurts one run of each figure rather than every run of one figure.
    for _ in range(max(1, args.runs)):
        for key, fn in measures.items():
            runs[key].append(fn())
    return {k: {"median": statistics.median(v), "runs": v} for k, v in runs.items()}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_args(args, argv)


def run_args(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    started = time.time()
    try:
        figures = run(args)
    except OSError as e:
        print(f"annal-bench ceiling: {e}", file=sys.stderr)
        return 1
    finished = time.time()
    for key, label, unit, fmt in FIGURES:
        runs = ", ".join(fmt.format(v) for v in figures[key]["runs"])
        print(f"{label:<50} {fmt.format(figures[key]['median']):>12} {unit:<9} (runs: {runs})")
    if args.json_path:
        config = {k: v for k, v in vars(args).items() if k not in ("json_path", "plot_path")}
        config["data_dir"] = args.data_dir or tempfile.gettempdir()
        summary = build_summary(
            "ceiling", config=config, result=figures, started_epoch_s=started, finished_epoch_s=finished,
            command_line=_command_line("ceiling", argv),
        )  # fmt: skip
        write_json(args.json_path, summary)
    if args.plot_path:
        from annal.bench._plot import plot_ceiling

        plot_ceiling(args.plot_path, {k: v["median"] for k, v in figures.items()})
    return 0


def _command_line(tool: str, argv: list[str] | None) -> list[str]:
    if argv is None:
        return [os.path.basename(sys.argv[0]), *sys.argv[1:]]
    return ["annal-bench", tool, *argv]


if __name__ == "__main__":
    sys.exit(main())
