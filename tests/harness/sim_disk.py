"""A simulated disk for crash tests (after TigerBeetle's ``src/testing/storage.zig``).

``SimDisk`` is a ``FileIO`` (``annal.broker.storage._file_io``) that performs every call on the
real files and remembers, per file, what a power loss could take away:

* ``durable``: the file's bytes as of its last ``fsync``/``fdatasync`` through the layer
  (a file that existed before the disk first saw it counts as durable as it was then);
* ``pending``: the ``pwrite``s and ``(f)truncate``s since that sync, in order.

``crash(rng)`` then rewrites each file the way a machine that lost power at this instant
could find it after a reboot:

* written through ``pwrite`` (``.log``): the durable bytes, plus a random subset of the
  pending operations, applied in program order or, with probability ``reorder_p``, shuffled
  (the disk's write cache reorders); the last one applied is **torn** at a random 512-byte
  boundary of the file (a sector either made it or did not);
* written through a shared memory mapping (``.index``, ``.timeindex``: no ``pwrite`` reaches
  the layer): the durable bytes, where each 4 KiB page that differs from the current content
  takes the current page or keeps the durable one at random (dirty pages are written back in
  any order), and the length is the durable or the current one at random.

Namespace operations (create, ``rename``, ``unlink``) are modelled as durable at once, as on a
journaling file system; only contents are lost. After ``crash`` the rewritten files are the
new durable state (what the next boot finds). ``crash`` must be called with no descriptor
open through the layer (the log abandoned). Not thread-safe: tests drive it from one thread.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

from annal.broker.storage import OsFileIO

__all__ = ["SimDisk", "CrashStats"]

SECTOR = 512
PAGE = 4096
_MMAP_SUFFIXES = (".index", ".timeindex")


@dataclass
class _File:
    durable: bytes
    pending: list[tuple] = field(default_factory=list)  # ("w", pos, bytes) | ("t", length)


@dataclass
class CrashStats:
    files: int = 0
    ops_pending: int = 0
    ops_applied: int = 0
    torn: int = 0
    reordered: int = 0
    pages_mixed: int = 0


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


class SimDisk(OsFileIO):
    """See the module docstring. ``keep_p``: chance a pending operation reaches the disk."""

    def __init__(self, keep_p: float = 0.5, reorder_p: float = 0.3) -> None:
        self.keep_p = keep_p
        self.reorder_p = reorder_p
        self.files: dict[str, _File] = {}
        self.fd_paths: dict[int, str] = {}
        self.syncs = 0

    def _file(self, path: str) -> _File:
        f = self.files.get(path)
        if f is None:
            f = self.files[path] = _File(_read(path))
        return f

    # -- FileIO

    def open(self, path: str, flags: int, mode: int = 0o777) -> int:  # type: ignore[override]
        path = os.path.abspath(path)
        existed = os.path.exists(path)
        fd = os.open(path, flags, mode)
        if path not in self.files:
            self.files[path] = _File(_read(path) if existed else b"")
        self.fd_paths[fd] = path
        return fd

    def close(self, fd: int) -> None:  # type: ignore[override]
        self.fd_paths.pop(fd, None)
        os.close(fd)

    def pwrite(self, fd: int, data, offset: int) -> int:  # type: ignore[override]
        n = os.pwrite(fd, data, offset)
        self._file(self.fd_paths[fd]).pending.append(("w", offset, bytes(memoryview(data)[:n])))
        return n

    def ftruncate(self, fd: int, length: int) -> None:  # type: ignore[override]
        os.ftruncate(fd, length)
        self._file(self.fd_paths[fd]).pending.append(("t", length))

    def truncate(self, path: str, length: int) -> None:  # type: ignore[override]
        os.truncate(path, length)
        self._file(os.path.abspath(path)).pending.append(("t", length))

    # No real fsync: durability is what this layer records (and a real one costs milliseconds,
    # thousands of times per run).
    def fsync(self, fd: int) -> None:  # type: ignore[override]
        self._synced(self.fd_paths[fd])

    def fdatasync(self, fd: int) -> None:  # type: ignore[override]
        self._synced(self.fd_paths[fd])

    def _synced(self, path: str) -> None:
        f = self._file(path)
        f.durable = _read(path)  # mmap'd writes included: the mapping shares the page cache
        f.pending.clear()
        self.syncs += 1

    def rename(self, src: str, dst: str) -> None:  # type: ignore[override]
        os.rename(src, dst)
        src, dst = os.path.abspath(src), os.path.abspath(dst)
        f = self.files.pop(src, None)
        if f is not None:
            self.files[dst] = f

    def unlink(self, path: str) -> None:  # type: ignore[override]
        os.unlink(path)
        self.files.pop(os.path.abspath(path), None)

    # -- the crash

    def crash(self, rng: random.Random) -> CrashStats:
        """Rewrite every known file as a power loss now could leave it (module docstring)."""
        assert not self.fd_paths, f"descriptors still open through the layer: {sorted(self.fd_paths.values())}"
        stats = CrashStats()
        for path, f in list(self.files.items()):
            if not os.path.exists(path):
                del self.files[path]
                continue
            stats.files += 1
            if path.endswith(_MMAP_SUFFIXES):
                image = self._mixed_pages(f.durable, _read(path), rng, stats)
            else:
                image = self._replay(f, rng, stats)
            with open(path, "wb") as out:
                out.write(image)
            f.durable = image
            f.pending.clear()
        return stats

    def _replay(self, f: _File, rng: random.Random, stats: CrashStats) -> bytes:
        stats.ops_pending += len(f.pending)
        kept = [op for op in f.pending if rng.random() < self.keep_p]
        if len(kept) > 1 and rng.random() < self.reorder_p:
            rng.shuffle(kept)
            stats.reordered += 1
        buf = bytearray(f.durable)
        for i, op in enumerate(kept):
            if op[0] == "t":
                length = op[1]
                del buf[length:]
                buf.extend(bytes(max(0, length - len(buf))))
                continue
            _, pos, data = op
            if i == len(kept) - 1 and data:
                # Torn: only the sectors before a random 512-byte boundary inside the write.
                first = (pos // SECTOR + 1) * SECTOR
                cuts = list(range(first, pos + len(data), SECTOR))
                if cuts or rng.random() < 0.5:
                    cut = rng.choice([pos] + cuts)
                    data = data[: cut - pos]
                    stats.torn += 1
            if len(buf) < pos:
                buf.extend(bytes(pos - len(buf)))
            buf[pos : pos + len(data)] = data
            stats.ops_applied += 1
        return bytes(buf)

    @staticmethod
    def _mixed_pages(durable: bytes, current: bytes, rng: random.Random, stats: CrashStats) -> bytes:
        if durable == current:
            return current
        length = rng.choice((len(durable), len(current)))
        out = bytearray(durable[:length].ljust(length, b"\0"))
        for page in range(0, length, PAGE):
            new = current[page : page + PAGE].ljust(min(PAGE, length - page), b"\0")[: length - page]
            if bytes(out[page : page + PAGE]) != new and rng.random() < 0.5:
                out[page : page + len(new)] = new
                stats.pages_mixed += 1
        return bytes(out)
