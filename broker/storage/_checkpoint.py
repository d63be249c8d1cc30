"""Offset checkpoint files of a data directory (Kafka's ``OffsetCheckpointFile``):
``recovery-point-offset-checkpoint`` (per partition, the offset below which everything is known to
be fdatasync'ed, so recovery scans only from there) and ``log-start-offset-checkpoint`` (per
partition, the first offset retention or truncation kept).

Format, versioned text (Kafka's layout plus a checksum line)::

    1                       <- format version
    2                       <- number of entries
    orders 0 1234           <- topic, partition, offset (topic names hold no spaces)
    my-topic 3 0
    crc32c 5f1e2d3c         <- CRC-32C, 8 hex digits, of every byte above this line

A file is written to ``<name>.tmp``, fsync'ed, renamed over ``<name>``, then the directory is
fsync'ed, so a reader sees the old or the new file, never a mix. A file that does not parse or
whose checksum is wrong is reported (logged) and treated as absent: the logs then recover in full.

Thread-safety: ``write`` calls on one file must be serialised by the caller (``LogManager``).
"""

from __future__ import annotations

import logging
import os

from crc32c import crc32c

from annal.broker.storage._file_names import TMP_SUFFIX

__all__ = [
    "OffsetCheckpointFile",
    "CheckpointCorruptError",
    "RECOVERY_POINT_CHECKPOINT",
    "LOG_START_OFFSET_CHECKPOINT",
    "fsync_dir",
]

log = logging.getLogger(__name__)

RECOVERY_POINT_CHECKPOINT = "recovery-point-offset-checkpoint"
LOG_START_OFFSET_CHECKPOINT = "log-start-offset-checkpoint"
VERSION = 1


class CheckpointCorruptError(ValueError):
    """The checkpoint file does not parse or fails its checksum."""


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OffsetCheckpointFile:
    """One checkpoint file: ``write({(topic, partition): offset})`` and ``read()``."""

    def __init__(self, path: str) -> None:
        self.path = path

    @staticmethod
    def encode(offsets: dict[tuple[str, int], int]) -> bytes:
        lines = [str(VERSION), str(len(offsets))]
        for (topic, partition), offset in sorted(offsets.items()):
            if not topic or any(c.isspace() for c in topic):
                raise ValueError(f"topic name {topic!r} cannot go in a checkpoint")
            lines.append(f"{topic} {int(partition)} {int(offset)}")
        body = ("\n".join(lines) + "\n").encode()
        return body + f"crc32c {crc32c(body):08x}\n".encode()

    @staticmethod
    def decode(data: bytes) -> dict[tuple[str, int], int]:
        """Parse a checkpoint; ``CheckpointCorruptError`` if anything is off."""
        cut = data.rfind(b"crc32c ")
        if cut < 0 or (cut > 0 and data[cut - 1 : cut] != b"\n"):
            raise CheckpointCorruptError("no checksum line")
        body, trailer = data[:cut], data[cut:]
        try:
            stored = int(trailer[len(b"crc32c ") :].strip(), 16)
        except ValueError as e:
            raise CheckpointCorruptError("unreadable checksum") from e
        if not trailer.endswith(b"\n") or crc32c(body) != stored:
            raise CheckpointCorruptError("checksum mismatch")
        try:
            lines = body.decode().split("\n")
            if lines[-1] != "":
                raise CheckpointCorruptError("missing final newline")
            lines.pop()
            if int(lines[0]) != VERSION:
                raise CheckpointCorruptError(f"unknown version {lines[0]!r}")
            count = int(lines[1])
            entries = lines[2:]
            if count != len(entries):
                raise CheckpointCorruptError(f"header says {count} entries, file has {len(entries)}")
            out: dict[tuple[str, int], int] = {}
            for line in entries:
                topic, partition, offset = line.split(" ")
                p, o = int(partition), int(offset)
                if p < 0 or o < 0:
                    raise CheckpointCorruptError(f"negative value in {line!r}")
                out[(topic, p)] = o
            return out
        except (ValueError, IndexError, UnicodeDecodeError) as e:
            if isinstance(e, CheckpointCorruptError):
                raise
            raise CheckpointCorruptError(f"malformed checkpoint: {e}") from e

    def write(self, offsets: dict[tuple[str, int], int]) -> None:
        data = self.encode(offsets)
        tmp = self.path + TMP_SUFFIX
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        fsync_dir(os.path.dirname(os.path.abspath(self.path)))

    def read(self) -> dict[tuple[str, int], int] | None:
        """The offsets, or None if the file is absent or corrupt (corruption is logged)."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        try:
            return self.decode(data)
        except CheckpointCorruptError as e:
            log.warning("checkpoint %s is corrupt (%s); treating it as absent: full recovery", self.path, e)
            return None
