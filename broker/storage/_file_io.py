"""The file operations the storage engine writes through (``FileIO``).

Every call that changes a segment's or an index's bytes on disk, or makes them durable, goes
through a ``FileIO``: ``open``/``close``, ``pwrite``, ``ftruncate``/``truncate``,
``posix_fallocate``, ``fsync``/``fdatasync``, ``rename``/``unlink``. Index entries are written
into shared memory mappings of the index files (``_index.py``), which no layer can see; their
durability points (the ``fsync`` of an index file, its ``truncate`` on roll and close) do go
through here, which is what a simulated disk needs to model them (see
``tests/harness/sim_disk.py`` and docs/reliability.md).

``OS_FILE_IO`` is the default: its attributes *are* the ``os`` functions (no wrapper, so no
cost on the append path beyond one attribute lookup). Tests pass another implementation to
``PartitionLog.open(file_io=...)``, for example a simulated disk that loses what was not
fsynced at a crash point. Reads (``mmap``, ``sendfile``) use the descriptors this layer opened.

Thread-safe as the ``os`` functions are; other implementations say so themselves.
"""

from __future__ import annotations

import os
from typing import Protocol

__all__ = ["FileIO", "OsFileIO", "OS_FILE_IO"]


class FileIO(Protocol):
    """The file operations of the storage engine (signatures of the ``os`` functions)."""

    def open(self, path: str, flags: int, mode: int = 0o777) -> int: ...
    def close(self, fd: int) -> None: ...
    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, offset: int) -> int: ...
    def ftruncate(self, fd: int, length: int) -> None: ...
    def truncate(self, path: str, length: int) -> None: ...
    def posix_fallocate(self, fd: int, offset: int, length: int) -> None: ...
    def fsync(self, fd: int) -> None: ...
    def fdatasync(self, fd: int) -> None: ...
    def rename(self, src: str, dst: str) -> None: ...
    def unlink(self, path: str) -> None: ...


class OsFileIO:
    """The real calls: each attribute is the ``os`` function itself."""

    open = staticmethod(os.open)
    close = staticmethod(os.close)
    pwrite = staticmethod(os.pwrite)
    ftruncate = staticmethod(os.ftruncate)
    truncate = staticmethod(os.truncate)
    posix_fallocate = staticmethod(os.posix_fallocate)
    fsync = staticmethod(os.fsync)
    fdatasync = staticmethod(os.fdatasync)
    rename = staticmethod(os.rename)
    unlink = staticmethod(os.unlink)


OS_FILE_IO: FileIO = OsFileIO()
