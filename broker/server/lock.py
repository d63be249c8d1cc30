"""The data dir lock: ``DATA_DIR/.lock``, held with ``fcntl.flock`` for the broker's lifetime.

Two brokers appending to the same segment files would corrupt them, so a broker takes an
exclusive, non-blocking flock on ``.lock`` before it opens any log and refuses to start when
another process holds it. The file holds the owner's pid (for the error message only; the
flock is what counts, and the kernel drops it when the process dies, so a crash never leaves a
stale lock). Not thread-safe; one per broker.
"""

from __future__ import annotations

import fcntl
import os
import pathlib

from annal.errors import StorageError

__all__ = ["DataDirLock", "DataDirLockedError", "LOCK_FILE_NAME"]

LOCK_FILE_NAME = ".lock"


class DataDirLockedError(StorageError):
    """Another live process holds the data dir's lock."""

    retriable = False


class DataDirLock:
    def __init__(self, data_dir: pathlib.Path | str) -> None:
        self.path = pathlib.Path(data_dir) / LOCK_FILE_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``DataDirLockedError`` naming the holder's pid."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise DataDirLockedError(
                f"data dir {self.path.parent} is in use by another broker (pid {holder}); "
                f"stop it first or use another --data-dir",
                path=str(self.path),
                pid=holder,
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock. Idempotent. The file stays (removing it would race a new owner)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "DataDirLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
